"""Pixels out of and layers into a Krita document."""

import os
import time
from typing import Dict, Generator, NamedTuple, Optional, Tuple

from . import pixels
from .pixels import Region


class DocumentError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Space(NamedTuple):
    model: str
    depth: str
    profile: str


class Source(NamedTuple):
    name: str
    region: Region      # where the sent image sits in the document
    data: bytes         # the pixels sent: bgra8 (Krita's own 8-bit order) in pixels.wire_space; emptied once uploaded
    above_id: object    # uniqueId of the layer the group goes right above, wherever it is then (None: on top)
    document: str       # the document's name, size, resolution and colour space: enough to make a new one
    canvas: Tuple[int, int, float]
    space: Space


def document_name(doc: object) -> str:
    name = doc.name() or ""
    if not name and doc.fileName():
        name = os.path.splitext(os.path.basename(doc.fileName()))[0]
    return name or "Image"


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


def _to_wire(data: object, region: Region, space: Space) -> bytes:
    """The 8-bit pixels sent (see pixels.wire_space) from Krita's pixelData in `space`. Krita's 8-bit RGBA
    keeps blue first, the protocol's `bgra8`, so they go as Krita gives them: the server reorders them."""
    size = pixels.pixel_size(space.model, space.depth)
    if len(data) != region.width * region.height * size:
        raise DocumentError("document", "Krita returned %d bytes for a %dx%d area." % (len(data), region.width, region.height))
    if pixels.needs_conversion(space.model, space.depth):
        return convert(data, region.width, region.height, space, Space(*pixels.wire_space(*space)))
    return bytes(data)


def _about(doc: object) -> dict:
    return {"document": document_name(doc), "canvas": (doc.width(), doc.height(), float(doc.resolution())),
            "space": space_of(doc)}


def _check_size(region: Region, limits: Optional[dict]) -> None:
    problem = pixels.size_problem(region, limits)
    if problem:
        raise DocumentError("image_too_large" if region.width > 0 and region.height > 0 else "document", problem)


def capture(doc: object, mode: str, node: Optional[object] = None, limits: Optional[dict] = None) -> Source:
    """What is sent: `image` (the visible image, or the selection's bounds) or `layer`
    (the active layer's own pixels, at its bounds; or `node`'s). An area the server's `limits` (GET /v1/info,
    when known) would refuse is refused before any pixel is read."""
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
        _check_size(region, limits)
        doc.waitForDone()
        if node.type() == "paintlayer":
            data = node.pixelData(*region)
        else:
            data = node.projectionPixelData(*region)
        return Source(node.name() or "Layer", region, _to_wire(data, region, space), node.uniqueId(), **_about(doc))

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
    _check_size(region, limits)
    doc.refreshProjection()
    doc.waitForDone()
    data = _to_wire(doc.pixelData(*region), region, space)
    # the whole visible image: its layers go on top of the document as it is when they arrive
    return Source(name, region, data, None, **_about(doc))


BAND_PIXELS = 1 << 21      # pixels written per step: ~50 ms, so the UI stays responsive during an insertion


def insert_steps(doc: object, source: Source, result: dict, layers: Dict[int, bytes]) -> Generator[float, None, object]:
    """Builds the result's group off the document a band of pixels at a time, yielding the fraction done
    after each, then adds it in one step (one undo entry: Node.addChildNode runs a single undoable
    command), yields 1.0 until Krita has drawn it, and returns it. Stopped or failing before that, it
    leaves the document as it was. The layers come as bgra8 in the 8-bit space the source was sent in and land in
    the document's own."""
    placements = pixels.plan(result, source.region)
    space = space_of(doc)
    _check_colour(space)
    deep = pixels.needs_conversion(space.model, space.depth)
    wire = Space(*pixels.wire_space(*space))
    group = doc.createGroupLayer(pixels.group_name(result, source.name))
    total = sum(max(1, p.width * p.height) for p in placements) or 1
    done = 0
    children = []
    for p in placements:
        node = doc.createNode(p.name, "paintlayer")
        if p.width * p.height > 0:
            data = layers[p.index]
            if len(data) != p.width * p.height * 4:
                raise DocumentError("bad_response", "layer %d has %d bytes for %dx%d" % (p.index, len(data), p.width, p.height))
            rows = max(1, BAND_PIXELS // p.width)
            for y in range(0, p.height, rows):
                h = min(rows, p.height - y)
                band = data[y * p.width * 4:(y + h) * p.width * 4]
                if deep:
                    band = convert(band, p.width, h, wire, space)
                node.setPixelData(band, p.x, p.y + y, p.width, h)
                done += p.width * h
                yield min(0.99, done / total)       # 1.0 only once the group is in the document
        else:
            done += 1
        children.append(node)
    group.setChildNodes(children)        # bottom to top; the group is not in the document yet

    parent, above = _place(doc, source)
    try:
        if not parent.addChildNode(group, above):
            raise DocumentError("document", "Krita refused to add the layer group.")
    except Exception:
        if group.parentNode() is not None:
            group.remove()
        raise
    # Krita composites the group in its own threads; wait for it without blocking (waitForDone would)
    doc.refreshProjection()
    while doc.rootNode() is not None and not doc.tryBarrierLock():
        yield 1.0
    if doc.rootNode() is not None:
        doc.unlock()
    return group


def _place(doc: object, source: Source) -> Tuple[object, Optional[object]]:
    """(parent, node to go right above): above the source layer wherever the user has moved it meanwhile,
    else on top of the document."""
    if source.above_id is not None:
        node = _find(doc.rootNode(), source.above_id)       # None once deleted (alone or with its group)
        parent = node.parentNode() if node is not None else None
        if parent is not None:
            return parent, node
    root = doc.rootNode()
    tops = root.childNodes()
    return root, (tops[-1] if tops else None)


def _find(parent: object, unique_id: object) -> Optional[object]:
    for child in parent.childNodes():
        if child.uniqueId() == unique_id:
            return child
        found = _find(child, unique_id)
        if found is not None:
            return found
    return None


def insert(doc: object, source: Source, result: dict, layers: Dict[int, bytes]) -> object:
    """insert_steps at once."""
    steps = insert_steps(doc, source, result, layers)
    while True:
        try:
            if next(steps) >= 1.0:
                time.sleep(0.005)
        except StopIteration as end:
            return end.value


def new_document(source: Source) -> object:
    """An empty document like the source's (size, resolution, colour space), for a result whose document
    was closed."""
    from krita import Krita

    w, h, res = source.canvas
    doc = Krita.instance().createDocument(w, h, "%s (layers)" % source.document, source.space.model,
                                          source.space.depth, source.space.profile, res)
    if doc is None:
        raise DocumentError("document", "Krita could not create a document for the result.")
    for node in doc.rootNode().childNodes():        # its empty background layer
        node.remove()
    return doc
