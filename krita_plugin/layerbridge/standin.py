"""A source layer hidden while the layers made from it stand in for it, shown again when they leave.

Krita 5.1's scripting hides a layer outside its undo history (Node.setVisible records nothing) and has no way to join
that to the undoable step that adds the result. So the result goes in as its one undo step, the source is hidden at
once, and a watch follows the result: when it leaves the document (Undo, or the user deletes it) the source is shown
again; when it comes back (Redo) the source is hidden again. Showing the source by hand while the result is there
ends the watch: the user has taken over."""

from typing import List, Optional

from .qt import QtCore

CHECK_MS = 250


class _Watch:
    def __init__(self, doc: object, result_id: object, source_id: object) -> None:
        self.doc = doc
        self.result_id = result_id
        self.source_id = source_id
        self.shown_again = False        # the result left and the source was shown again


WATCHES: List[_Watch] = []
_timer: Optional[QtCore.QTimer] = None


def find(parent: object, unique_id: object) -> Optional[object]:
    """The node with this uniqueId under `parent`, at any depth, or None."""
    for child in parent.childNodes():
        if child.uniqueId() == unique_id:
            return child
        found = find(child, unique_id)
        if found is not None:
            return found
    return None


def hide(doc: object, source: object, result: object) -> bool:
    """Hides `source` (a visible layer) while `result` is in `doc`; False when it was hidden already."""
    if not source.visible():
        return False
    source.setVisible(False)
    doc.refreshProjection()
    WATCHES.append(_Watch(doc, result.uniqueId(), source.uniqueId()))
    global _timer
    if _timer is None:
        _timer = QtCore.QTimer()
        _timer.timeout.connect(check)
    if not _timer.isActive():
        _timer.start(CHECK_MS)
    return True


def _open(doc: object) -> bool:
    from krita import Krita
    return any(d == doc for d in Krita.instance().documents())


def check() -> None:
    """Shows or hides each watched source as its result has left or come back."""
    for watch in list(WATCHES):
        if not _open(watch.doc):
            WATCHES.remove(watch)
            continue
        root = watch.doc.rootNode()
        source = find(root, watch.source_id)
        if source is None:
            WATCHES.remove(watch)
            continue
        present = find(root, watch.result_id) is not None
        if not present and not watch.shown_again:
            if not source.visible():
                source.setVisible(True)
                watch.doc.refreshProjection()
            watch.shown_again = True
        elif present and watch.shown_again:
            if source.visible():
                source.setVisible(False)
                watch.doc.refreshProjection()
            watch.shown_again = False
        elif present and source.visible():
            WATCHES.remove(watch)
    if not WATCHES and _timer is not None:
        _timer.stop()
