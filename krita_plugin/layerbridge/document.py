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


class Space(NamedTuple):
    model: str
    depth: str
    profile: str


def space_of(obj: object) -> Space:
    """A document's or a node's colour space."""
    return Space(obj.colorModel(), obj.colorDepth(), obj.colorProfile())


def _check_colour(space: Space) -> None:
    problem = pixels.colour_problem(space.model, space.depth)
    if problem:
        raise DocumentError("unsupported_document", problem)


def convert(data: object, width: int, height: int, src: Space, dst: Space) -> bytes:
    """Krita's pixelData bytes of a width × height area, from one colour space to another, through Krita's
    colour management. The work happens in a document of its own, never shown and closed at once, so the
    user's document gets no copy, no conversion and no undo entry."""
    from krita import Krita

    size = pixels.pixel_size(dst.model, dst.depth)
    scratch = Krita.instance().createDocument(width, height, "LayerBridge conversion", src.model, src.depth,
                                              src.profile, 72.0)
    if scratch is None:
        raise DocumentError("unsupported_document", pixels.conversion_problem(*src))
    try:
        scratch.setBatchmode(True)
        node = scratch.rootNode().childNodes()[0]
        node.setPixelData(data, 0, 0, width, height)
        if (src.model, src.profile) == (dst.model, dst.profile):
            # a change of depth only: Krita's usual (optimised) conversion keeps 8-bit values exact,
            # v ↔ v*257, where the unoptimised one below drifts by a few 16-bit steps
            node.setColorSpace(*dst)
        elif not scratch.setColorSpace(*dst):        # LCMS's most accurate transform, between profiles
            raise DocumentError("unsupported_document", pixels.conversion_problem(*dst))
        scratch.waitForDone()
        if space_of(node)[:2] != dst[:2]:
            raise DocumentError("unsupported_document", pixels.conversion_problem(*dst))
        out = bytes(node.pixelData(0, 0, width, height))
    finally:
        scratch.close()
    if size is None or len(out) != width * height * size:
        raise DocumentError("unsupported_document", pixels.conversion_problem(*dst))
    return out


def _to_rgba(data: object, region: Region, space: Space) -> bytes:
    """The protocol's 8-bit RGBA (see pixels.wire_space) from Krita's pixelData in `space`."""
    size = pixels.pixel_size(space.model, space.depth)
    if len(data) != region.width * region.height * size:
        raise DocumentError("document", "Krita returned %d bytes for a %dx%d area." % (len(data), region.width, region.height))
    if pixels.needs_conversion(space.model, space.depth):
        data = convert(data, region.width, region.height, space, Space(*pixels.wire_space(*space)))
    return pixels.bgra_to_rgba(bytes(data))


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
        space = space_of(node)
        _check_colour(space)
        rect = node.bounds()
        region = Region(rect.x(), rect.y(), rect.width(), rect.height())
        if region.width <= 0 or region.height <= 0:
            raise DocumentError("document", "The layer “%s” is empty." % node.name())
        doc.waitForDone()
        if node.type() == "paintlayer":
            data = node.pixelData(*region)
        else:
            data = node.projectionPixelData(*region)
        parent = node.parentNode() or doc.rootNode()
        return Source(node.name() or "Layer", region, _to_rgba(data, region, space), parent, node.uniqueId())

    space = space_of(doc)
    _check_colour(space)
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
    rgba = _to_rgba(doc.pixelData(*region), region, space)
    root = doc.rootNode()
    top = root.childNodes()
    return Source(name, region, rgba, root, top[-1].uniqueId() if top else None)


def find_node(parent: object, unique_id: object) -> Optional[object]:
    for child in parent.childNodes():
        if child.uniqueId() == unique_id:
            return child
    return None


def insert(doc: object, source: Source, result: dict, layers: Dict[int, bytes]) -> object:
    """Builds the whole group off the document, then adds it in one step (one undo entry:
    Node.addChildNode runs a single undoable command). If anything fails, the document is
    left as it was. The layers come in the 8-bit space the source was sent in and land in the document's own."""
    placements = pixels.plan(result, source.region)
    space = space_of(doc)
    _check_colour(space)
    deep = pixels.needs_conversion(space.model, space.depth)
    group = doc.createGroupLayer(pixels.group_name(result, source.name))
    children = []
    for p in placements:
        node = doc.createNode(p.name, "paintlayer")
        if p.width * p.height > 0:
            data = layers[p.index]
            if len(data) != p.width * p.height * 4:
                raise DocumentError("bad_response", "layer %d has %d bytes for %dx%d" % (p.index, len(data), p.width, p.height))
            data = pixels.rgba_to_bgra(data)
            if deep:
                data = convert(data, p.width, p.height, Space(*pixels.wire_space(*space)), space)
            node.setPixelData(data, p.x, p.y, p.width, p.height)
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
