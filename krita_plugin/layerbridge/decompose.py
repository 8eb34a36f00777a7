"""One decomposition from start to end: capture, job, insertion. The docker and the tests drive it."""

import time
import traceback
from typing import Dict, Iterator, List, Optional

from . import document, pixels, protocol, settings
from .client import Api, Job
from .qt import QtCore


# documents made for results whose document was closed: a Document from createDocument closes its
# document when Python collects it
RESCUED: List[object] = []


class Decomposition(QtCore.QObject):
    """`progress(text, fraction or None)`, then `finished(group)` or `failed(code, title, details)`.
    After `finished`, `note` says where the group went when not into the source document."""

    progress = QtCore.pyqtSignal(str, object)
    finished = QtCore.pyqtSignal(object)
    failed = QtCore.pyqtSignal(str, str, str)

    def __init__(self, doc: object, mode: str, values: Dict[str, object], url: str, token: str,
                 parent: Optional[QtCore.QObject] = None, node: Optional[object] = None,
                 limits: Optional[dict] = None) -> None:
        """`values`: the settings, already through settings.normalize. `limits`: the server's, from an earlier
        hello, to refuse a too large area before reading it."""
        super().__init__(parent)
        self.limits = dict(limits or {})
        self.doc = doc
        self.doc_name = document.document_name(doc) if doc is not None else ""
        self.mode = mode
        self.node = node
        self.values = values           # normalised once by whoever read them (settings.normalize)
        self.api = Api(url, token, self)
        self.job: Optional[Job] = None
        self.source: Optional[document.Source] = None
        self.group = None
        self.result: dict = {}
        self.layers: Dict[int, bytes] = {}
        self.done = False
        self.cancelled = False
        self.note = ""
        self.notes: List[str] = []      # what the insertion could not do, for the user
        self.target: Optional[object] = None         # the document the layers are going into
        self._steps: Optional[Iterator[float]] = None
        self._attached = False          # the group is in the document: too late to cancel
        self.started = time.monotonic()

    @staticmethod
    def is_open(doc: object) -> bool:
        from krita import Krita
        return doc is not None and any(d == doc for d in Krita.instance().documents())

    def start(self) -> None:
        try:
            self.source = document.capture(self.doc, "layer" if self.mode == "split" else self.mode, self.node,
                                           self.limits)
        except document.DocumentError as e:
            return self._failed(e.code, e.message)
        src = self.source
        problem = pixels.size_problem(src.region, None)
        if problem:
            return self._failed("document", problem)
        if self.mode == "split":         # the split task (docs/elements.md): the layer's elements, no model
            params = protocol.split_params(src.name, bool(self.values.get("text_layers")))
            path, needs = "/v1/split", "split_elements"
        else:
            params = settings.job_params(self.values, src.name)
            path, needs = "/v1/jobs", ""
        params.update({"width": src.region.width, "height": src.region.height})
        self.job = Job(self.api, self)
        self.job.progress.connect(self._progress)
        self.job.finished.connect(self._job_done)
        self.job.failed.connect(self._failed)
        self.job.uploading.connect(self._release_pixels)
        self.progress.emit("Connecting…", None)
        data, src = src.data, None
        self.job.start(params, data, self._check_limits, path=path, needs=needs)

    def _check_limits(self, limits: dict) -> Optional[tuple]:
        src = self.source
        problem = pixels.size_problem(src.region, limits)
        if problem:
            return "image_too_large", problem
        upload = limits.get("max_upload_bytes")
        if upload and len(src.data) + 4096 > int(upload):
            return "payload_too_large", "The image is %.0f MB; the server accepts %.0f MB." % (len(src.data) / 1e6, int(upload) / 1e6)
        self.progress.emit("Uploading %d × %d…" % (src.region.width, src.region.height), None)
        return None

    def _release_pixels(self) -> None:
        if self.source is not None:
            self.source = self.source._replace(data=b"")

    def cancel(self) -> None:
        if self.done or self.cancelled or self._attached:
            return
        self.cancelled = True
        self.progress.emit("Cancelling…", None)
        if self._steps is not None:
            return          # adding layers: the next step stops and drops the unattached group
        if self.job is not None:
            self.job.cancel()

    def _progress(self, state: dict) -> None:
        if not self.done:
            text = state.get("message") if state.get("state") == "done" else None
            self.progress.emit(text or protocol.describe_progress(state), protocol.progress_fraction(state))

    def _job_done(self, result: dict, layers: Dict[int, bytes]) -> None:
        self.result, self.layers = result, layers
        if self.cancelled:
            return self._failed("cancelled", "")
        if self.mode == "split" and len(result.get("layers") or ()) <= 1:
            self.done = True            # one element: the layer stays as it is
            self.note = "“%s” holds one element: nothing to split." % self.source.name
            self.finished.emit(None)
            return
        self._begin_insert()

    def _begin_insert(self) -> None:
        """Into the source document, or, once it is closed, into a new one like it: the user keeps the result."""
        try:
            if self.is_open(self.doc):
                self.target = self.doc
            else:
                self.target = document.new_document(self.source)
                RESCUED.append(self.target)
                self.note = ("“%s” was closed during the decomposition, so the layers are in a new document, “%s”."
                             % (self.source.document, self.target.name()))
            self.notes = []
            self._steps = document.insert_steps(self.target, self.source, self.result, self.layers,
                                                bool(self.values.get("text_layers")), self.notes)
        except document.DocumentError as e:
            return self._failed(e.code, e.message)
        except Exception:
            return self._failed("internal_plugin", traceback.format_exc())
        self.progress.emit("Adding layers…", 0.0)
        QtCore.QTimer.singleShot(0, self._step)

    def _step(self) -> None:
        """One band of pixels per turn of the event loop: Krita repaints and takes clicks in between."""
        if self.done or self._steps is None:
            return
        if self.cancelled:
            self._steps.close()
            return self._failed("cancelled", "")
        if self.target is self.doc and not self.is_open(self.doc):
            self._steps.close()         # closed while the layers were being added: start again in a new document
            self._attached = False
            return self._begin_insert()
        try:
            fraction = next(self._steps)
        except StopIteration as end:
            self.group = end.value
            self._steps = None
            self.done = True
            self._show(self.target)
            self.finished.emit(self.group)
            return
        except document.DocumentError as e:
            return self._failed(e.code, e.message)
        except Exception:
            return self._failed("internal_plugin", traceback.format_exc())
        self._attached = fraction >= 1.0
        self.progress.emit("Adding layers… %d%%" % int(100 * fraction), fraction)
        QtCore.QTimer.singleShot(0 if fraction < 1.0 else 20, self._step)

    def _show(self, doc: object) -> None:
        if doc is self.doc:
            return
        from krita import Krita
        window = Krita.instance().activeWindow()
        if window is not None:
            window.showView(window.addView(doc))

    def _failed(self, code: str, message: str) -> None:
        if self.done:
            return
        self.done = True
        self._steps = None
        if code == "internal_plugin":
            title, advice = "The plugin hit a problem while adding the layers.", "Nothing was added."
        else:
            title, advice = protocol.friendly(code, message)
        details = "%s\n%s\n\ncode: %s\nserver: %s\njob: %s\nmessage: %s" % (
            title, advice, code, self.api.url, self.job.job_id if self.job else "-", message)
        self.failed.emit(code, "%s %s" % (title, advice) if advice else title, details.strip())
