"""One decomposition from start to end: capture, job, insertion. The docker and the tests drive it."""

import time
import traceback
from typing import Dict, Optional

from . import document, pixels, protocol, settings
from .client import Api, Job
from .qt import QtCore


class Decomposition(QtCore.QObject):
    """`progress(text, fraction or None)`, then `finished(group)` or `failed(code, title, details)`."""

    progress = QtCore.pyqtSignal(str, object)
    finished = QtCore.pyqtSignal(object)
    failed = QtCore.pyqtSignal(str, str, str)

    def __init__(self, doc: object, mode: str, values: Dict[str, object], url: str, token: str,
                 parent: Optional[QtCore.QObject] = None, node: Optional[object] = None) -> None:
        super().__init__(parent)
        self.doc = doc
        self.mode = mode
        self.node = node
        self.values = settings.normalize(values)
        self.api = Api(url, token, self)
        self.job: Optional[Job] = None
        self.source: Optional[document.Source] = None
        self.group = None
        self.result: dict = {}
        self.layers: Dict[int, bytes] = {}
        self.done = False
        self.started = time.monotonic()

    def _is_open(self) -> bool:
        try:
            from krita import Krita
            return any(d == self.doc for d in Krita.instance().documents())
        except Exception:
            return False

    def start(self) -> None:
        self.was_open = self._is_open()
        try:
            self.source = document.capture(self.doc, self.mode, self.node)
        except document.DocumentError as e:
            return self._failed(e.code, e.message)
        src = self.source
        problem = pixels.size_problem(src.region, None)
        if problem:
            return self._failed("document", problem)
        params = settings.job_params(self.values, src.name)
        params.update({"width": src.region.width, "height": src.region.height})
        self.job = Job(self.api, self)
        self.job.progress.connect(self._progress)
        self.job.finished.connect(self._job_done)
        self.job.failed.connect(self._failed)
        self.job.uploading.connect(self._release_pixels)
        self.progress.emit("Connecting…", None)
        rgba, src = src.rgba, None
        self.job.start(params, rgba, self._check_limits)

    def _check_limits(self, limits: dict) -> Optional[tuple]:
        src = self.source
        problem = pixels.size_problem(src.region, limits.get("max_pixels"))
        if problem:
            return "image_too_large", problem
        upload = limits.get("max_upload_bytes")
        if upload and len(src.rgba) + 4096 > int(upload):
            return "payload_too_large", "The image is %.0f MB; the server accepts %.0f MB." % (len(src.rgba) / 1e6, int(upload) / 1e6)
        self.progress.emit("Uploading %d × %d…" % (src.region.width, src.region.height), None)
        return None

    def _release_pixels(self) -> None:
        if self.source is not None:
            self.source = self.source._replace(rgba=b"")

    def cancel(self) -> None:
        if self.job is not None and not self.done:
            self.progress.emit("Cancelling…", None)
            self.job.cancel()

    def _progress(self, state: dict) -> None:
        if not self.done:
            text = state.get("message") if state.get("state") == "done" else None
            self.progress.emit(text or protocol.describe_progress(state), protocol.progress_fraction(state))

    def _job_done(self, result: dict, layers: Dict[int, bytes]) -> None:
        self.result, self.layers = result, layers
        self.progress.emit("Adding layers…", 1.0)
        if self.was_open and not self._is_open():
            return self._failed("document", "The document was closed during the decomposition; nothing was added.")
        try:
            self.group = document.insert(self.doc, self.source, result, layers)
        except document.DocumentError as e:
            return self._failed(e.code, e.message)
        except Exception:
            return self._failed("internal_plugin", traceback.format_exc())
        self.done = True
        self.finished.emit(self.group)

    def _failed(self, code: str, message: str) -> None:
        if self.done:
            return
        self.done = True
        if code == "internal_plugin":
            title, advice = "The plugin hit a problem while adding the layers.", "Nothing was added."
        else:
            title, advice = protocol.friendly(code, message)
        details = "%s\n%s\n\ncode: %s\nserver: %s\njob: %s\nmessage: %s" % (
            title, advice, code, self.api.url, self.job.job_id if self.job else "-", message)
        self.failed.emit(code, "%s %s" % (title, advice) if advice else title, details.strip())
