"""Pixels out of and layers into a Krita document."""

import os
from typing import Dict, NamedTuple, Optional

from . import pixels
from .pixels import Region


class DocumentError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Source(NamedTuple):
    name: str
    region: Region      # where the sent image sits in the document
    rgba: bytes         # emptied once uploaded
    parent: object      # the node the result group goes into
    above_id: object    # uniqueId of the node it goes right above (None: top of parent)


def document_name(doc: object) -> str:
    name = doc.name() or ""
    if not name and doc.fileName():
        name = os.path.splitext(os.path.basename(doc.fileName()))[0]
    return name or "Image"


def _check_colour(model: str, depth: str) -> None:
    problem = pixels.colour_problem(model, depth)
    if problem:
        raise DocumentError("unsupported_document", problem)


def capture(doc: object, mode: str, node: Optional[object] = None) -> Source:
    """What is sent: `image` (the visible image, or the selection's bounds) or `layer`
    (the active layer's own pixels, at its bounds; or `node`'s)."""
    if doc is None:
        raise DocumentError("document", "Open an image first.")
    if mode == "layer":
        node = node or doc.activeNode()
        if node is None or node.type() not in ("paintlayer", "grouplayer", "vectorlayer", "filllayer",
                                                "clonelayer", "filelayer"):
            raise DocumentError("document", "Select a layer to decompose.")
        _check_colour(node.colorModel(), node.colorDepth())
        rect = node.bounds()
        region = Region(rect.x(), rect.y(), rect.width(), rect.height())
        if region.width <= 0 or region.height <= 0:
            raise DocumentError("document", "The layer “%s” is empty." % node.name())
        doc.waitForDone()
        if node.type() == "paintlayer":
            data = bytes(node.pixelData(*region))
        else:
            data = bytes(node.projectionPixelData(*region))
        parent = node.parentNode() or doc.rootNode()
        return Source(node.name() or "Layer", region, pixels.bgra_to_rgba(data), parent, node.uniqueId())

    _check_colour(doc.colorModel(), doc.colorDepth())
    region = Region(0, 0, doc.width(), doc.height())
    selection = doc.selection()
    name = document_name(doc)
    if selection is not None and selection.width() > 0 and selection.height() > 0:
        x0, y0 = max(0, selection.x()), max(0, selection.y())
        x1 = min(doc.width(), selection.x() + selection.width())
        y1 = min(doc.height(), selection.y() + selection.height())
        if x1 > x0 and y1 > y0:
            region = Region(x0, y0, x1 - x0, y1 - y0)
            name += " (selection)"
    doc.refreshProjection()
    doc.waitForDone()
    data = bytes(doc.pixelData(*region))
    if len(data) != region.width * region.height * 4:
        raise DocumentError("document", "Krita returned %d bytes for a %dx%d area." % (len(data), region.width, region.height))
    root = doc.rootNode()
    top = root.childNodes()
    return Source(name, region, pixels.bgra_to_rgba(data), root, top[-1].uniqueId() if top else None)


def find_node(parent: object, unique_id: object) -> Optional[object]:
    for child in parent.childNodes():
        if child.uniqueId() == unique_id:
            return child
    return None


def insert(doc: object, source: Source, result: dict, layers: Dict[int, bytes]) -> object:
    """Builds the whole group off the document, then adds it in one step (one undo entry:
    Node.addChildNode runs a single undoable command). If anything fails, the document is
    left as it was."""
    placements = pixels.plan(result, source.region)
    group = doc.createGroupLayer(pixels.group_name(result, source.name))
    children = []
    for p in placements:
        node = doc.createNode(p.name, "paintlayer")
        if p.width * p.height > 0:
            data = layers[p.index]
            if len(data) != p.width * p.height * 4:
                raise DocumentError("bad_response", "layer %d has %d bytes for %dx%d" % (p.index, len(data), p.width, p.height))
            node.setPixelData(pixels.rgba_to_bgra(data), p.x, p.y, p.width, p.height)
        children.append(node)
    group.setChildNodes(children)        # bottom to top; the group is not in the document yet

    parent = source.parent
    above = find_node(parent, source.above_id) if source.above_id is not None else None
    if above is None and source.above_id is not None:
        parent = doc.rootNode()         # the source went away meanwhile: put the group on top
        tops = parent.childNodes()
        above = tops[-1] if tops else None
    try:
        if not parent.addChildNode(group, above):
            raise DocumentError("document", "Krita refused to add the layer group.")
    except Exception:
        if group.parentNode() is not None:
            group.remove()
        raise
    doc.refreshProjection()
    doc.waitForDone()
    return group
