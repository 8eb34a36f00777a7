"""Pixels out of and layers into a Krita document."""

import os
import time
from typing import Dict, Generator, List, NamedTuple, Optional, Tuple

from . import livetext, pixels, protocol, standin
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


class TextLayer(NamedTuple):
    """Where a vector layer with a block's text goes, once the pixel layers are built."""
    block: dict
    below: object           # its hidden pixel layer, right below it


def _write(node: object, data: bytes, region: Region, convert_to: Optional[Tuple[Space, Space]]
           ) -> Generator[int, None, None]:
    """Writes a region's bgra8 pixels into a paint layer a band at a time, yielding the pixels written each time."""
    rows = max(1, BAND_PIXELS // region.width)
    for y in range(0, region.height, rows):
        h = min(rows, region.height - y)
        band = data[y * region.width * 4:(y + h) * region.width * 4]
        if convert_to is not None:
            band = convert(band, region.width, h, *convert_to)
        node.setPixelData(band, region.x, region.y + y, region.width, h)
        yield region.width * h


def insert_steps(doc: object, source: Source, result: dict, layers: Dict[int, bytes], text_layers: bool = False,
                 notes: Optional[List[str]] = None) -> Generator[float, None, object]:
    """Builds the result's group off the document a band of pixels at a time, yielding the fraction done
    after each, then adds it in one step (one undo entry: Node.addChildNode runs a single undoable
    command), yields 1.0 until Krita has drawn it, and returns it. Stopped or failing before that, it
    leaves the document as it was. The layers come as bgra8 in the 8-bit space the source was sent in and land in
    the document's own. Group entries (docs/protocol.md, Result) become nested groups. With `text_layers`, each
    editable text block becomes a vector layer of live text over its pixels, kept hidden right below it
    (docs/krita.md, Editable text). A layer decomposed on its own (source.above_id) is hidden while its result
    stands in for it (standin.py). Sentences for the user about what could not be done go to `notes`."""
    placements = pixels.plan(result, source.region)
    space = space_of(doc)
    _check_colour(space)
    to_doc = (Space(*pixels.wire_space(*space)), space) if pixels.needs_conversion(space.model, space.depth) else None
    group = doc.createGroupLayer(pixels.group_name(result, source.name))
    members: Dict[Optional[int], list] = {None: []}     # each group's children, bottom to top (None: the result's)
    groups: Dict[int, object] = {}
    texts: List[Tuple[Optional[int], TextLayer]] = []
    total = sum(max(1, p.width * p.height) for p in placements) or 1     # text pieces add a little more: capped
    done = 0
    for p in placements:
        siblings = members.setdefault(p.parent, [])
        if p.group:
            groups[p.index] = doc.createGroupLayer(p.name)
            members.setdefault(p.index, [])
            siblings.append(groups[p.index])
            done += 1
            continue
        region = Region(p.x, p.y, p.width, p.height)
        if p.width * p.height == 0:
            siblings.append(doc.createNode(p.name, "paintlayer"))
            done += 1
            continue
        data = layers[p.index]
        if len(data) != p.width * p.height * 4:
            raise DocumentError("bad_response", "layer %d has %d bytes for %dx%d" % (p.index, len(data), p.width, p.height))
        blocks = protocol.editable_blocks({"text": list(p.text)}) if text_layers else []
        for piece in livetext.cut(data, region, blocks) if blocks else [livetext.Piece(region, data, None)]:
            name = p.name if piece.block is None else "%s (pixels)" % livetext.layer_name(piece.block)
            node = doc.createNode(name, "paintlayer")
            if piece.region.width * piece.region.height:
                for written in _write(node, piece.data, piece.region, to_doc):
                    done += written
                    yield min(0.99, done / total)       # 1.0 only once the group is in the document
            siblings.append(node)
            if piece.block is not None:
                texts.append((p.parent, TextLayer(piece.block, node)))
    live = _add_text_layers(doc, texts, members, notes if notes is not None else []) if texts else []
    for index, node in groups.items():
        node.setChildNodes(members[index])
    group.setChildNodes(members[None])        # bottom to top; the group is not in the document yet

    parent, above = _place(doc, source)
    try:
        if not parent.addChildNode(group, above):
            raise DocumentError("document", "Krita refused to add the layer group.")
    except Exception:
        if group.parentNode() is not None:
            group.remove()
        raise
    if above is not None and source.above_id is not None and above.uniqueId() == source.above_id:
        standin.hide(doc, above, group)
    for layer in live:          # filled in the scratch document: drawn again in this one
        for shape in layer.shapes():
            shape.update()
    # Krita composites the group in its own threads; wait for it without blocking (waitForDone would)
    doc.refreshProjection()
    while doc.rootNode() is not None and not doc.tryBarrierLock():
        yield 1.0
    if doc.rootNode() is not None:
        doc.unlock()
    return group


def _add_text_layers(doc: object, texts: List[Tuple[Optional[int], "TextLayer"]], members: Dict[Optional[int], list],
                     notes: List[str]) -> List[object]:
    """A vector layer of live text right above each text's pixel layer, which is hidden. Krita 5.1 adds the shapes
    of an SVG (VectorLayer.addShapesFromSvg) as an undoable step of the layer's document and with the active
    document's shape tools: the layers are filled in a scratch document, never shown and closed at once, so the
    user's document gets no undo step but the result's one. Without an active document (nothing is open in a
    window) the text stays pixels, shown. Returns the vector layers."""
    from krita import Krita

    active = Krita.instance().activeDocument()
    if active is None or active != doc:
        notes.append("The text stayed pixels: Krita can set live text only in the document shown in its window.")
        return []
    families = livetext.qt_families()
    substituted = set()
    made = []
    scratch = Krita.instance().createDocument(doc.width(), doc.height(), "LayerBridge text", doc.colorModel(),
                                              doc.colorDepth(), doc.colorProfile(), doc.resolution())
    if scratch is None:
        notes.append("The text stayed pixels: Krita could not prepare the text layers.")
        return []
    try:
        scratch.setBatchmode(True)
        for parent, text in texts:
            block = text.block
            style = block.get("font") or {}
            font = livetext.choose_font(style, families)
            measure = livetext.qt_measure(font.family, float(block["size"]), bool(style.get("bold")),
                                          bool(style.get("italic")))
            layer = doc.createVectorLayer(livetext.layer_name(block, font))
            scratch.rootNode().addChildNode(layer, None)
            shapes = layer.addShapesFromSvg(livetext.text_svg(block, doc.width(), doc.height(), font, measure))
            layer.remove()
            if not shapes:
                continue
            siblings = members[parent]
            siblings.insert(siblings.index(text.below) + 1, layer)
            text.below.setVisible(False)
            made.append(layer)
            if font.substituted and font.wanted:
                substituted.add((font.wanted, font.family))
    finally:
        scratch.close()
    if substituted:
        notes.append("Fonts not in Krita, set in one of the same kind: %s."
                     % ", ".join("%s → %s" % pair for pair in sorted(substituted)))
    return made


def _place(doc: object, source: Source) -> Tuple[object, Optional[object]]:
    """(parent, node to go right above): above the source layer wherever the user has moved it meanwhile,
    else on top of the document."""
    if source.above_id is not None:
        node = standin.find(doc.rootNode(), source.above_id)       # None once deleted (alone or with its group)
        parent = node.parentNode() if node is not None else None
        if parent is not None:
            return parent, node
    root = doc.rootNode()
    tops = root.childNodes()
    return root, (tops[-1] if tops else None)


def insert(doc: object, source: Source, result: dict, layers: Dict[int, bytes], text_layers: bool = False,
           notes: Optional[List[str]] = None) -> object:
    """insert_steps at once."""
    steps = insert_steps(doc, source, result, layers, text_layers, notes)
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
