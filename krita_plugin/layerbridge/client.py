"""The HTTP side of protocol v1 through Qt's own networking; never blocks the UI."""

import json
from typing import Callable, Dict, Optional, Tuple

from . import protocol
from .qt import (CANCELED_ERROR, CONTENT_TYPE, HTTP_STATUS, NO_ERROR, QNetworkRequest, QtCore,
                 QtNetwork, exec_)

REQUEST_TIMEOUT_MS = 30000
UPLOAD_TIMEOUT_MS = 300000
STREAM_TIMEOUT_MS = 45000       # the server sends a keepalive line every 15 s
POLL_MS = 1000
RECOVER_S = 180                 # how long a lost connection is retried before giving up


class Answer:
    """A finished HTTP exchange: status (0 = no HTTP answer), body, headers, network error."""

    def __init__(self, reply: "QtNetwork.QNetworkReply") -> None:
        status = reply.attribute(HTTP_STATUS)
        self.status = int(status) if status is not None else 0
        self.body = bytes(reply.readAll()) if reply.isOpen() else b""
        self.error = reply.error()
        self.error_text = reply.errorString()
        self.headers = {bytes(k).decode("latin-1").lower(): bytes(reply.rawHeader(k)).decode("latin-1")
                        for k in reply.rawHeaderList()}

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> dict:
        obj = json.loads(self.body.decode("utf-8"))
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        return obj

    def failure(self) -> "tuple[str, str]":
        """(code, message) for an answer that is not a success."""
        if self.status:
            return protocol.error_from_body(self.status, self.body)
        if self.error == CANCELED_ERROR:
            return "timeout", self.error_text
        text = self.error_text or "no answer"
        low = text.lower()
        if "refused" in low or "host not found" in low or "unreachable" in low or "not found" in low:
            return "unreachable", text
        return ("timeout" if "timed out" in low or "timeout" in low else "unreachable"), text


def request(url: str, token: str, path: str, timeout_ms: int) -> QNetworkRequest:
    req = QNetworkRequest(QtCore.QUrl(url + path))
    if token:
        req.setRawHeader(b"Authorization", b"Bearer " + token.encode("utf-8"))
    req.setRawHeader(b"X-LayerBridge-Protocol", str(protocol.PROTOCOL).encode("ascii"))
    req.setRawHeader(b"User-Agent", protocol.CLIENT.encode("ascii"))
    if hasattr(req, "setTransferTimeout"):
        req.setTransferTimeout(timeout_ms)
    return req


class Api(QtCore.QObject):
    """Requests to one server, with its token."""

    def __init__(self, url: str, token: str, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(parent)
        self.url = url.rstrip("/")
        self.token = token
        self.nam = QtNetwork.QNetworkAccessManager(self)
        # Each reply under way with its handlers, until its `finished` handler has run. A handler refers to its
        # reply's Python wrapper and the wrapper (through its connection) to the handler: held by nothing else,
        # the pair is a cycle the garbage collector frees while the request runs, and Qt then calls freed memory.
        self._under_way: Dict[int, tuple] = {}

    def _request(self, path: str, timeout_ms: int) -> QNetworkRequest:
        return request(self.url, self.token, path, timeout_ms)

    def send(self, method: str, path: str, done: Callable[[Answer], None], body: Optional[bytes] = None,
             content_type: str = "application/json", timeout_ms: int = REQUEST_TIMEOUT_MS,
             chunk: Optional[Callable[[bytes], None]] = None) -> "QtNetwork.QNetworkReply":
        """Sends a request; `done(answer)` runs once it ends. With `chunk`, the body is handed
        over as it arrives (for the event stream) and the answer's body holds only what is left."""
        req = self._request(path, timeout_ms)
        if method == "GET":
            reply = self.nam.get(req)
        else:
            req.setHeader(CONTENT_TYPE, content_type)
            reply = self.nam.post(req, QtCore.QByteArray(body or b""))
        key = id(reply)
        arrived = None
        if chunk is not None:
            def arrived() -> None:
                chunk(bytes(reply.readAll()))

            reply.readyRead.connect(arrived)

        def finished() -> None:
            try:
                answer = Answer(reply)
                reply.deleteLater()
                done(answer)
            finally:
                self._under_way.pop(key, None)

        self._under_way[key] = (reply, finished, arrived)
        reply.finished.connect(finished)
        return reply

    def under_way(self) -> int:
        """How many requests have not finished yet."""
        return len(self._under_way)


# Jobs running on a server for this Krita, as (url, token, job id): when Krita closes, nothing will fetch
# their results, so they are cancelled. Kept out of the Job objects, which the docker's windows may take
# down with them before the application's last signal.
_RUNNING: Dict[int, Tuple[str, str, str]] = {}
# Jobs whose image is on its way: the server names their job only in the upload's answer.
_UPLOADING: Dict[int, "Job"] = {}
_hooked = False


def _hook() -> None:
    global _hooked
    app = QtCore.QCoreApplication.instance()
    if not _hooked and app is not None:
        app.aboutToQuit.connect(cancel_running_jobs)
        _hooked = True


def _track(key: int, entry: Optional[Tuple[str, str, str]]) -> None:
    if entry is None:
        _RUNNING.pop(key, None)
        return
    _RUNNING[key] = entry
    _hook()


def _wait(replies: list, ms: int) -> None:
    """Runs a local event loop until every reply has finished, for at most `ms`."""
    def pending() -> bool:
        return any(not r.isFinished() for r in replies)

    if not pending():
        return
    loop = QtCore.QEventLoop()

    def one_finished() -> None:
        if not pending():
            loop.quit()

    for r in replies:
        r.finished.connect(one_finished)
    QtCore.QTimer.singleShot(ms, loop.quit)
    exec_(loop)
    # a reply still running after the wait must not call the handler once this frame (its only holder) is gone
    for r in replies:
        try:
            r.finished.disconnect(one_finished)
        except (TypeError, RuntimeError):
            pass


def cancel_running_jobs(wait_ms: int = 3000) -> None:
    """Asks the servers to cancel every job still running, waiting up to `wait_ms` for their answers.

    An upload still under way is stopped (the server makes no job of a part of an image). One whose last
    byte has left is answered first: the answer names the job, which is then cancelled like the others."""
    clock = QtCore.QElapsedTimer()
    clock.start()
    answers = []
    for job in list(_UPLOADING.values()):
        try:
            upload, sent = job._upload, job._upload_sent
            if upload is None:
                continue
            if sent:
                answers.append(upload)
            else:
                upload.abort()
        except RuntimeError:        # the Qt side of the job or its reply is already gone
            continue
    _UPLOADING.clear()
    _wait(answers, wait_ms)         # each answer's own handler tracks its job in _RUNNING
    jobs = list(_RUNNING.values())
    _RUNNING.clear()
    if not jobs:
        return
    nam = QtNetwork.QNetworkAccessManager()
    replies = []
    left = max(500, wait_ms - clock.elapsed())
    for url, token, job_id in jobs:
        req = request(url, token, "/v1/jobs/%s/cancel" % job_id, left)
        req.setHeader(CONTENT_TYPE, "application/json")
        replies.append(nam.post(req, QtCore.QByteArray(b"")))
    _wait(replies, left)


class Job(QtCore.QObject):
    """One decomposition on the server: upload, follow, fetch the result and its layers.

    Emits `progress(state)` for each job state, then either `finished(result, layers)`
    (layers: {index: bgra8 bytes}) or `failed(code, message)`. Pixels go and come as bgra8, Krita's own order."""

    progress = QtCore.pyqtSignal(object)
    finished = QtCore.pyqtSignal(object, object)
    failed = QtCore.pyqtSignal(str, str)
    uploading = QtCore.pyqtSignal()     # the body is built: the caller may drop its copy of the pixels

    def __init__(self, api: Api, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(parent)
        self.api = api
        self.job_id = ""
        self.limits: Dict[str, object] = {}
        self.cancel_requested = False
        self.ended = False
        self.recovering_since: Optional[float] = None
        self._stream = None
        self._upload = None             # the POST of the image while it is on its way
        self._upload_sent = False       # all of its bytes have left: the server may be making the job
        self._upload_percent = -1
        self._stream_ended = False
        self._lines = protocol.LineBuffer()
        self._clock = QtCore.QElapsedTimer()
        self._clock.start()
        self._poll_timer = QtCore.QTimer(self)
        self._poll_timer.setSingleShot(True)
        self._poll_timer.timeout.connect(self._poll)
        self._result: dict = {}
        self._layers: Dict[int, bytes] = {}

    # -- steps ------------------------------------------------------------------------------------
    def start(self, params: dict, bgra: bytes, check: Optional[Callable[[dict], Optional[tuple]]] = None,
              path: str = "/v1/jobs", needs: str = "") -> None:
        """Sends `bgra` (params hold its width and height) to `path` (`/v1/jobs`, or `/v1/split` for a split job).
        `check(limits)` may refuse the job before upload with (code, message). `needs`: a capability the server
        must announce for this job. Parameters the server does not announce are left out
        (protocol.supported_params)."""
        def hello(answer: Answer) -> None:
            if self.ended:
                return
            if not answer.ok:
                return self._fail(*answer.failure())
            try:
                info = answer.json()
            except ValueError:
                return self._fail("bad_response", "GET /v1/info: " + answer.body[:200].decode("utf-8", "replace"))
            problem = protocol.check_hello(info)
            if problem:
                return self._fail(*problem)
            if needs and needs not in (info.get("capabilities") or ()):
                return self._fail("protocol_mismatch", "The server is older than this plugin (no %s): update the "
                                                       "LayerBridge server." % needs)
            self.limits = dict(info.get("limits") or {})
            problem = check(self.limits) if check else None
            if problem:
                return self._fail(*problem)
            if self.cancel_requested:
                return self._fail("cancelled", "")
            body, ctype = protocol.multipart(dict(protocol.supported_params(params, info), pixel_format="bgra8"), bgra)
            self.uploading.emit()
            self._upload = self.api.send("POST", path, submitted, body=body, content_type=ctype,
                                         timeout_ms=UPLOAD_TIMEOUT_MS)
            self._upload.uploadProgress.connect(self._uploaded)
            _UPLOADING[id(self)] = self
            _hook()

        def submitted(answer: Answer) -> None:
            self._upload = None
            _UPLOADING.pop(id(self), None)
            if self.ended:
                return
            if not answer.ok:
                return self._fail(*answer.failure())
            try:
                obj = answer.json()
                self.job_id = str(obj["job"])
            except (ValueError, KeyError):
                return self._fail("bad_response", "POST %s: " % path + answer.body[:200].decode("utf-8", "replace"))
            _track(id(self), (self.api.url, self.api.token, self.job_id))
            self.progress.emit({"job": self.job_id, "state": "queued", "stage": "queued",
                                "position": obj.get("position", 0)})
            if self.cancel_requested:
                self._send_cancel()
            self._follow()

        self.api.send("GET", "/v1/info", hello)

    def _uploaded(self, sent: int, total: int) -> None:
        self._upload_sent = total > 0 and sent >= total
        percent = 100 * sent // total if total > 0 else -1
        if percent > self._upload_percent and not self.ended:
            self._upload_percent = percent
            self.progress.emit({"state": "uploading", "stage": "uploading", "sent": sent, "bytes": total})

    def _follow(self) -> None:
        self._lines = protocol.LineBuffer()
        self._stream_ended = False
        self._stream = self.api.send("GET", "/v1/jobs/%s/events" % self.job_id, self._stream_done,
                                     timeout_ms=STREAM_TIMEOUT_MS, chunk=self._stream_chunk)

    def _stream_chunk(self, data: bytes) -> None:
        for state in self._lines.feed(data):
            self._state(state)

    def _stream_done(self, answer: Answer) -> None:
        self._stream = None
        if self.ended or self._stream_ended:
            return
        if answer.body:
            self._stream_chunk(answer.body + b"\n")
            if self.ended or self._stream_ended:
                return
        if answer.status in (401, 403, 404, 426):
            return self._fail(*answer.failure())
        # The stream stopped before the job ended: the connection dropped. Poll until it is back.
        self._lost()

    def _lost(self) -> None:
        """The server stopped answering during the job: said at once (a `reconnecting` state with the seconds
        since), then asked again every POLL_MS for up to RECOVER_S. A server started again answers for a job of
        its previous run with `server_stopped`: the job was lost, not expired."""
        now = self._clock.elapsed() / 1000.0
        if self.recovering_since is None:
            self.recovering_since = now
        if now - self.recovering_since > RECOVER_S:
            return self._fail("unreachable", "The connection to the server was lost during the job.")
        self.progress.emit({"job": self.job_id, "state": "reconnecting", "stage": "reconnecting",
                            "lost_s": now - self.recovering_since})
        self._poll_timer.start(POLL_MS)

    def _poll(self) -> None:
        def answered(answer: Answer) -> None:
            if self.ended:
                return
            if answer.status == 0:
                return self._lost()
            if not answer.ok:
                return self._fail(*answer.failure())
            self.recovering_since = None
            try:
                state = answer.json()
            except ValueError:
                return self._lost()
            self._state(state)
            if not self.ended and not self._stream_ended:
                self._poll_timer.start(POLL_MS)

        self.api.send("GET", "/v1/jobs/%s" % self.job_id, answered)

    def _state(self, state: dict) -> None:
        if self.ended or self._stream_ended:
            return
        if state.get("type") == "error" and state.get("code"):
            return self._fail(str(state["code"]), str(state.get("message") or ""))
        self.progress.emit(state)
        st = state.get("state")
        if st not in protocol.TERMINAL_STATES:
            return
        self._stream_ended = True
        _track(id(self), None)
        self._poll_timer.stop()
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.abort()
        if st == "done":
            self._fetch_result()
        elif st == "cancelled":
            self._fail("cancelled", "")
        else:
            err = state.get("error") or {}
            self._fail(str(err.get("code") or "job_failed"), str(err.get("message") or ""))

    def _fetch_result(self) -> None:
        def got(answer: Answer) -> None:
            if self.ended:
                return
            if answer.status == 0:
                return self._retry(self._fetch_result)
            if not answer.ok:
                return self._fail(*answer.failure())
            try:
                self._result = answer.json()
                pending = [int(l["index"]) for l in self._result["layers"] if protocol.has_pixels(l)]
            except (ValueError, KeyError, TypeError):
                return self._fail("bad_response", "result: " + answer.body[:200].decode("utf-8", "replace"))
            self._fetch_layers(pending)

        self.api.send("GET", "/v1/jobs/%s/result" % self.job_id, got)

    def _fetch_layers(self, pending: list) -> None:
        if not pending:
            self.ended = True
            self.finished.emit(self._result, self._layers)
            return
        index = pending[0]
        meta = next(l for l in self._result["layers"] if int(l["index"]) == index)
        count = sum(1 for l in self._result["layers"] if protocol.has_pixels(l))
        self.progress.emit({"job": self.job_id, "state": "done", "stage": "finishing",
                            "message": "Downloading layer %d of %d" % (count - len(pending) + 1, count)})

        def got(answer: Answer) -> None:
            if self.ended:
                return
            if answer.status == 0:
                return self._retry(lambda: self._fetch_layers(pending))
            if not answer.ok:
                return self._fail(*answer.failure())
            expected = int(meta["width"]) * int(meta["height"]) * 4
            if len(answer.body) != expected:
                return self._fail("bad_response", "layer %d: %d bytes, expected %d" % (index, len(answer.body), expected))
            self._layers[index] = answer.body
            self._fetch_layers(pending[1:])

        self.api.send("GET", "/v1/jobs/%s/layers/%d?format=bgra8" % (self.job_id, index), got, timeout_ms=UPLOAD_TIMEOUT_MS)

    def _retry(self, again: Callable[[], None]) -> None:
        now = self._clock.elapsed() / 1000.0
        if self.recovering_since is None:
            self.recovering_since = now
        if now - self.recovering_since > RECOVER_S:
            return self._fail("unreachable", "The connection to the server was lost while fetching the result.")
        self.progress.emit({"job": self.job_id, "state": "reconnecting", "stage": "reconnecting",
                            "lost_s": now - self.recovering_since})
        QtCore.QTimer.singleShot(POLL_MS, again)

    # -- cancel and end ---------------------------------------------------------------------------
    def cancel(self) -> None:
        """Asks the server to cancel; `failed("cancelled")` follows when it confirms (or 10 s after the
        request). Before the whole image is uploaded, the upload stops and no job is made."""
        if self.ended or self.cancel_requested:
            return
        self.cancel_requested = True
        if self.job_id:
            self._send_cancel()
        elif self._upload is None:
            self._fail("cancelled", "")             # still talking to the server: no job yet
        elif not self._upload_sent:
            upload, self._upload = self._upload, None
            self._fail("cancelled", "")
            upload.abort()                          # the server never gets the whole image: no job
        # else: the image has left; its job's id comes with the answer and the cancel goes right after it

    def _send_cancel(self) -> None:
        QtCore.QTimer.singleShot(10000, lambda: self._fail("cancelled", "") if not self.ended else None)

        def answered(answer: Answer) -> None:
            if self.ended:
                return
            if answer.ok:
                try:
                    state = answer.json()
                except ValueError:
                    return
                if state.get("state") == "done":
                    return      # finished before the cancel arrived: the result is fetched as usual
                if state.get("state") in protocol.TERMINAL_STATES:
                    self._state(state)

        self.api.send("POST", "/v1/jobs/%s/cancel" % self.job_id, answered)

    def _fail(self, code: str, message: str) -> None:
        if self.ended:
            return
        self.ended = True
        _track(id(self), None)
        _UPLOADING.pop(id(self), None)
        self._poll_timer.stop()
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.abort()
        self.failed.emit(code, message)


class StatusProbe(QtCore.QObject):
    """Checks the connection and the model state: `result(kind, text, detail)` where kind is
    not_running / unauthorized / mismatch / error / ready / busy / loading / downloading / failed."""

    result = QtCore.pyqtSignal(str, str, str)

    def __init__(self, api: Api, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(parent)
        self.api = api
        self.limits: Dict[str, object] = {}     # the server's, once it has said hello
        self.hello: Optional[dict] = None       # its hello (GET /v1/info), job options included

    def run(self) -> None:
        def info(answer: Answer) -> None:
            if not answer.ok:
                code, message = answer.failure()
                title, advice = protocol.friendly(code, message)
                kind = {"unreachable": "not_running", "timeout": "not_running"}.get(code, code)
                return self.result.emit(kind, title, "%s\n%s\n(%s: %s)" % (title, advice, code, message))
            try:
                hello = answer.json()
            except ValueError:
                return self.result.emit("error", "Not a LayerBridge server.", answer.body[:200].decode("utf-8", "replace"))
            problem = protocol.check_hello(hello)
            if problem:
                return self.result.emit("protocol_mismatch", protocol.friendly(problem[0])[0], problem[1])
            self.limits = dict(hello.get("limits") or {})
            self.hello = hello
            self.api.send("GET", "/v1/status", status)

        def status(answer: Answer) -> None:
            if not answer.ok:
                code, message = answer.failure()
                return self.result.emit("error", protocol.friendly(code, message)[0], message)
            try:
                kind, text = protocol.describe_status(answer.json())
            except ValueError:
                return self.result.emit("error", "Not a LayerBridge server.", "")
            self.result.emit(kind, text, answer.body.decode("utf-8", "replace"))

        self.api.send("GET", "/v1/info", info, timeout_ms=5000)
