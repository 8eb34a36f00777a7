"""Splitting one RGBA layer into its elements, the pieces a designer moves one at a time: every pixel goes to exactly
one element, so the elements composited give back the layer exactly (docs/elements.md).

How it groups, in order:
1. Cores: the 8-connected regions of alpha ≥ CORE_ALPHA (OpenCV's connected components, with their boxes and areas).
2. Glyph pieces: a core whose stroke is thin for its size (2·area / outline length, against its longer side) looks
   like a glyph; letters of a word, a letter's dot, accent or cedilla, and punctuation join at gaps that scale with
   the type's height.
3. Words join into a line at a word gap scaled to their height (a 220-px headline's word gap is wider than two small
   icons' gap, which never join that way: only words made of glyph pieces do).
4. Lines of one type size and one alignment (left, right or centre) one line-gap apart join into a paragraph;
   given text blocks (boxes from a text reading) join whatever lies in each.
5. Faint pixels (0 < alpha < CORE_ALPHA: soft shadows, glows, anti-aliased edges, specks) join their nearest core's
   element, on a grid of at most WORK_CELLS cells (exact below that size); a faint region with no core that is
   larger than FAINT_ELEMENT_AREA stays an element of its own.
6. Beyond `max_elements`, the smallest elements merge into their nearest neighbour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

from .opencv import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .export import layer_name
from ..core.layer import MAX_ELEMENTS, PlacedLayer, group_entry

CORE_ALPHA = 128  # alpha at which a pixel belongs to an element's body; below it, it is a shadow, glow or edge
FAINT_ELEMENT_AREA = 400  # px: a faint region with no body this large is an element (a soft watermark), not a speck
WORK_CELLS = 1_600_000  # the grid on which faint pixels find their nearest element (a 24 MP layer: 4×4-px cells)
CRUMB_AREA = 24  # px: a core this small (a bit of small type) joins a neighbour close by instead of standing alone
GLYPH_STROKE = 0.3  # stroke thickness / longer side below which a core looks like a glyph (a disc or square: 0.5)
SIZE_QUANTILE = 0.5  # see _merged
PARAGRAPH_ROUNDS = 3  # passes joining lines into paragraphs
SAME_SIZE = 1.5  # type sizes within this ratio are one size (the x-height of one line against the ascenders of the next)
TWIN_SIZE = 20  # px: from this height, two squarish pieces of one size side by side may be icons
SMALL_TYPE = 12  # px: a core no longer than this counts as a glyph piece (small type)
_TEXT_NAME = 60  # characters of a text block's text that name its element
_PAIR_CHUNK = 2_000_000  # candidate pairs handled at once (bounds memory on layers with very many cores)


@dataclass(frozen=True)
class TextBlock:
    """A block of text (a line or a paragraph) found by a text reading: its box on the canvas (x0, y0, x1, y1, the
    end exclusive) and, when known, its text, which then names the element."""

    box: tuple[int, int, int, int]
    text: str = ""


BlockLike = Union[TextBlock, Sequence[int]]


@dataclass
class _Boxes:
    """Boxes of the cores (and of faint regions that are elements), end-exclusive, with what grouping needs."""

    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    area: np.ndarray
    glyph: np.ndarray  # looks like a glyph piece
    faint: np.ndarray  # a faint region with no core

    @property
    def w(self) -> np.ndarray:
        return self.x1 - self.x0

    @property
    def h(self) -> np.ndarray:
        return self.y1 - self.y0


def split_layer(layer: PlacedLayer, text_blocks: Sequence[BlockLike] = (),
                max_elements: int = MAX_ELEMENTS) -> list[PlacedLayer]:
    """The layer's elements, bottom to top in reading order, each cropped to its pixels and placed on the canvas.

    Args:
        layer: straight-alpha RGBA pixels with their place on the canvas.
        text_blocks: boxes (canvas coordinates) of text lines or paragraphs, e.g. from a text reading: what lies in
            one box is one element, named by the block's text when it has one. TextBlock or (x0, y0, x1, y1).
        max_elements: at most this many elements (at least 1); the smallest merge into their neighbours beyond it.

    Returns [] for an empty or fully transparent layer, and one element named as the layer when it holds one.
    """
    pixels = layer.pixels
    if pixels.size == 0:
        return []
    alpha = np.ascontiguousarray(pixels[..., 3])
    height, width = alpha.shape
    core = (alpha >= CORE_ALPHA).view(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=8, ltype=cv2.CV_32S)
    cores = count - 1
    faint_y, faint_x = np.nonzero(cv2.inRange(alpha, 1, CORE_ALPHA - 1))
    has_faint = faint_y.size > 0
    if not cores and not has_faint:
        return []

    # The grid for faint pixels: cells of `cell`×`cell` px (1 below WORK_CELLS pixels, so exact there).
    cell = max(1, math.ceil(math.sqrt(height * width / WORK_CELLS)))
    kernel = np.ones((cell, cell), np.uint8)

    def grid(mask: np.ndarray) -> np.ndarray:
        """The maximum over each cell (a cell's top-left pixel is its anchor)."""
        if cell == 1:
            return mask
        return cv2.dilate(mask, kernel, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT, borderValue=0)[::cell, ::cell]

    boxes = _core_boxes(stats[1:], labels, core, cores)
    faint_regions = np.zeros(0, np.int64)
    if has_faint:
        # Faint regions with no core: specks join their nearest element, large ones are elements themselves.
        core_cells = grid(core)
        faint_cells = np.zeros_like(core_cells)
        faint_cells[faint_y // cell, faint_x // cell] = 1
        visible_cells = core_cells | faint_cells
        n_regions, regions, rstats, _ = cv2.connectedComponentsWithStats(visible_cells, connectivity=8,
                                                                          ltype=cv2.CV_32S)
        with_core = np.bincount(regions[core_cells > 0], minlength=n_regions) > 0
        area = rstats[:, cv2.CC_STAT_AREA] * cell * cell
        alone = ~with_core
        alone[0] = False
        large = alone & (area >= FAINT_ELEMENT_AREA)
        if not cores and not large.any():  # nothing else to join: the largest faint region is the element
            large[np.argmax(np.where(alone, area, -1))] = True
        faint_regions = np.flatnonzero(large)
        if faint_regions.size:
            r = rstats[faint_regions]
            x0, y0 = r[:, cv2.CC_STAT_LEFT] * cell, r[:, cv2.CC_STAT_TOP] * cell
            boxes = _concat(boxes, _Boxes(
                x0, y0, np.minimum(x0 + r[:, cv2.CC_STAT_WIDTH] * cell, width),
                np.minimum(y0 + r[:, cv2.CC_STAT_HEIGHT] * cell, height), area[faint_regions],
                np.zeros(len(faint_regions), bool), np.ones(len(faint_regions), bool)))

    offset = np.array([layer.x, layer.y])
    group, block_texts = _group(boxes, [_local(b, offset) for b in text_blocks])
    group = _cap(group, boxes, max(1, max_elements))
    group, n_groups = _reading_order(group, boxes)

    # Each pixel's element, numbered from 1 (0: transparent).
    dtype = np.uint8 if n_groups < 256 else np.int32
    core_lut = np.zeros(count, dtype)
    core_lut[1:] = group[:cores] + 1
    owner = core_lut[labels] if cores else np.zeros((height, width), dtype)
    faint_box = np.zeros((n_groups, 4), np.int64)  # per element: the box of its faint cells
    faint_box[:] = (width, height, 0, 0)
    if has_faint:
        seeds = grid(owner)  # cells with a core: their element (any one of them where a cell holds several)
        if faint_regions.size:
            region_lut = np.zeros(n_regions, dtype)
            region_lut[faint_regions] = group[cores:] + 1
            seeds = np.where(seeds > 0, seeds, region_lut[regions])
        seed_y, seed_x = np.nonzero(seeds)
        _, nearest_seed = cv2.distanceTransformWithLabels((seeds == 0).view(np.uint8), cv2.DIST_L2, 5,
                                                          labelType=cv2.DIST_LABEL_PIXEL)
        nearest = seeds[seed_y, seed_x][nearest_seed - 1]  # zero pixels are numbered in raster order from 1
        cy, cx = np.nonzero(faint_cells)
        cg = nearest[cy, cx].astype(np.int64) - 1
        np.minimum.at(faint_box[:, 0], cg, cx * cell)
        np.minimum.at(faint_box[:, 1], cg, cy * cell)
        np.maximum.at(faint_box[:, 2], cg, np.minimum((cx + 1) * cell, width))
        np.maximum.at(faint_box[:, 3], cg, np.minimum((cy + 1) * cell, height))
        owner[faint_y, faint_x] = nearest[faint_y // cell, faint_x // cell]

    names = _names(layer.name, n_groups, {int(group[i]): text for i, text in reversed(block_texts)})
    elements = []
    for g in range(n_groups):
        members = group == g
        x0 = min(int(boxes.x0[members].min()) if members.any() else width, int(faint_box[g, 0]))
        y0 = min(int(boxes.y0[members].min()) if members.any() else height, int(faint_box[g, 1]))
        x1 = max(int(boxes.x1[members].max()) if members.any() else 0, int(faint_box[g, 2]))
        y1 = max(int(boxes.y1[members].max()) if members.any() else 0, int(faint_box[g, 3]))
        mine = owner[y0:y1, x0:x1] == g + 1
        rows, cols = np.flatnonzero(mine.any(axis=1)), np.flatnonzero(mine.any(axis=0))
        if rows.size == 0:
            continue
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        mine = mine[r0:r1, c0:c1]
        crop = pixels[y0 + r0:y0 + r1, x0 + c0:x0 + c1].copy()
        crop[~mine] = 0
        elements.append(PlacedLayer(names[g], layer.x + x0 + int(c0), layer.y + y0 + int(r0), crop))
    return elements


def split_stack(layers: Sequence[PlacedLayer], check: Callable[[], None] = lambda: None,
                kept: int = 1) -> list[PlacedLayer]:
    """A job's layers as a hierarchy (docs/protocol.md §3): each layer from index `kept` on that holds more than one
    element becomes a group entry, named as the layer, directly followed by its elements (bottom to top, each with
    the text blocks that lie in it); a layer with one element, or none, stays as it is. One flat list, every entry's
    `parent` set (the group entry's index, or None).

    Args:
        layers: the job's flat layers, bottom to top, with their text read (it guides the split).
        check: called before each layer; may raise to cancel, and that passes through.
        kept: this many bottom layers are never split (the background).
    """
    stack: list[PlacedLayer] = []
    for i, layer in enumerate(layers):
        check()
        elements = [] if i < kept else split_layer(layer, [text_block(b) for b in layer.text])
        if len(elements) <= 1:
            layer.parent = None
            stack.append(layer)
            continue
        assign_text(elements, layer.text)
        index = len(stack)
        stack.append(group_entry(layer.name, elements, index + 1))
        for element in elements:
            element.parent = index
            stack.append(element)
    return stack


def text_block(block: dict[str, Any]) -> TextBlock:
    """A text reading's block (docs/text.md: its `box` in canvas pixels) as a split's guide."""
    box = block["box"]
    return TextBlock((box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"]), block.get("text", ""))


def assign_text(elements: Sequence[PlacedLayer], blocks: Sequence[dict[str, Any]]) -> None:
    """Gives each element the text blocks (canvas pixels) that lie in it: each block goes to the element with the
    most visible pixels inside the block's box (none: the element whose box overlaps it most)."""
    for element in elements:
        element.text = []
    for block in blocks:
        bx0, by0, bx1, by1 = text_block(block).box
        best, best_score = None, (0, 0)
        for element in elements:
            x0, y0 = max(bx0, element.x), max(by0, element.y)
            x1, y1 = min(bx1, element.x + element.width), min(by1, element.y + element.height)
            if x1 <= x0 or y1 <= y0:
                continue
            alpha = element.pixels[y0 - element.y:y1 - element.y, x0 - element.x:x1 - element.x, 3]
            score = (int(np.count_nonzero(alpha)), (x1 - x0) * (y1 - y0))
            if score > best_score:
                best, best_score = element, score
        if best is not None:
            best.text.append(block)


def _core_boxes(stats: np.ndarray, labels: np.ndarray, core: np.ndarray, cores: int) -> _Boxes:
    x0, y0 = stats[:, cv2.CC_STAT_LEFT].astype(np.int64), stats[:, cv2.CC_STAT_TOP].astype(np.int64)
    w, h = stats[:, cv2.CC_STAT_WIDTH].astype(np.int64), stats[:, cv2.CC_STAT_HEIGHT].astype(np.int64)
    area = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
    if cores:
        # Outline length: core pixels with a non-core neighbour. A stroke of thickness t and length L has area t·L
        # and an outline of about 2·L, so 2·area / outline is its thickness (a disc's radius, a square's half side).
        inner = cv2.erode(core, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
        outline = np.bincount(labels[core > inner], minlength=cores + 1)[1:]
        thickness = 2 * area / np.maximum(outline, 1)
        longer = np.maximum(w, h)
        # Below SMALL_TYPE px a stroke is one or two pixels wide and the measure says nothing: small type's pieces.
        glyph = (thickness < GLYPH_STROKE * longer) | (longer <= SMALL_TYPE)
    else:
        glyph = np.zeros(0, bool)
    return _Boxes(x0, y0, x0 + w, y0 + h, area, glyph, np.zeros(cores, bool))


def _concat(a: _Boxes, b: _Boxes) -> _Boxes:
    return _Boxes(*(np.concatenate([getattr(a, f), getattr(b, f)]) for f in
                    ("x0", "y0", "x1", "y1", "area", "glyph", "faint")))


def _local(block: BlockLike, offset: np.ndarray) -> tuple[tuple[int, int, int, int], str]:
    box, text = (block.box, block.text) if isinstance(block, TextBlock) else (tuple(block), "")
    x0, y0, x1, y1 = (int(v) for v in box)
    return (x0 - int(offset[0]), y0 - int(offset[1]), x1 - int(offset[0]), y1 - int(offset[1])), text


def _candidate_pairs(b: _Boxes, mx: np.ndarray, my: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs (i, j) whose boxes, grown by their margins, overlap: a sweep over the boxes sorted by their left edge."""
    n = len(b.x0)
    if n < 2:
        return []
    left, right = b.x0 - mx, b.x1 + mx
    order = np.argsort(left, kind="stable")
    sl, sr = left[order], right[order]
    ends = np.searchsorted(sl, sr, side="left")
    counts = np.maximum(ends - np.arange(n) - 1, 0)
    out = []
    start = 0
    cum = np.cumsum(counts)
    while start < n:
        stop = int(np.searchsorted(cum, (cum[start - 1] if start else 0) + _PAIR_CHUNK, side="right"))
        stop = max(stop, start + 1)
        c = counts[start:stop]
        total = int(c.sum())
        if total:
            i = np.repeat(np.arange(start, stop), c)
            j = i + 1 + np.arange(total) - np.repeat(np.cumsum(c) - c, c)
            a, bb = order[i], order[j]
            keep = (b.y0[a] - my[a] < b.y1[bb] + my[bb]) & (b.y0[bb] - my[bb] < b.y1[a] + my[a])
            out.append((a[keep], bb[keep]))
        start = stop
    return out


def _components(n: int, pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    if not pairs:
        return np.arange(n)
    a = np.concatenate([p[0] for p in pairs])
    b = np.concatenate([p[1] for p in pairs])
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _gaps(b: _Boxes, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, ...]:
    """Horizontal and vertical gap (0 when they overlap) and overlap (negative when apart) of the boxes i and j."""
    x_overlap = np.minimum(b.x1[i], b.x1[j]) - np.maximum(b.x0[i], b.x0[j])
    y_overlap = np.minimum(b.y1[i], b.y1[j]) - np.maximum(b.y0[i], b.y0[j])
    return np.maximum(-x_overlap, 0), np.maximum(-y_overlap, 0), x_overlap, y_overlap


def _merged(b: _Boxes, group: np.ndarray) -> tuple[_Boxes, np.ndarray, np.ndarray]:
    """Boxes of the groups; per group the number of glyph pieces and their median height."""
    n = int(group.max()) + 1
    x0 = np.full(n, np.iinfo(np.int64).max)
    y0 = x0.copy()
    x1 = np.zeros(n, np.int64)
    y1 = x1.copy()
    np.minimum.at(x0, group, b.x0)
    np.minimum.at(y0, group, b.y0)
    np.maximum.at(x1, group, b.x1)
    np.maximum.at(y1, group, b.y1)
    area = np.bincount(group, b.area, minlength=n).astype(np.int64)
    glyphs = np.bincount(group, b.glyph, minlength=n).astype(np.int64)
    glyph_area = np.bincount(group, b.area * b.glyph, minlength=n)
    pieces = np.bincount(group, minlength=n)
    # The type size: the area-weighted median of the pieces' heights (letters outweigh dots, accents and
    # crumbs).
    order = np.lexsort((b.h, group))
    sorted_group = group[order]
    running = np.cumsum(b.area[order])
    start = np.searchsorted(sorted_group, np.arange(n))
    base = np.where(start > 0, running[np.maximum(start - 1, 0)], 0)
    past_half = np.flatnonzero((running - base[sorted_group]) >= SIZE_QUANTILE * area[sorted_group])
    _, first_of_group = np.unique(sorted_group[past_half], return_index=True)
    first = past_half[first_of_group]
    size = np.zeros(n)
    size[sorted_group[first]] = b.h[order][first]
    faint = np.bincount(group, b.faint, minlength=n) == pieces
    glyphish = glyph_area * 2 >= area  # mostly glyph strokes (a letter's dots and a period are not)
    return _Boxes(x0, y0, x1, y1, area, glyphish, faint), glyphs, size


def _group(b: _Boxes, blocks: list[tuple[tuple[int, int, int, int], str]]) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """A group number per box (0..k-1), and for each text block with a text, a box inside it and that text."""
    n = len(b.x0)
    h, w = b.h, b.w
    # 1. Glyph pieces into words: letters side by side, a dot, accent or cedilla above or below its letter, and a
    #    faint region with the element it overlaps (a soft shadow apart from its shape).
    pairs = []
    mark_small: list[np.ndarray] = []
    mark_big: list[np.ndarray] = []
    mark_score: list[np.ndarray] = []
    for i, j in _candidate_pairs(b, 0.4 * h + 2, 0.5 * h + 2):
        dx, dy, xo, yo = _gaps(b, i, j)
        hmax, hmin = np.maximum(h[i], h[j]), np.minimum(h[i], h[j])
        # Two squarish pieces of one size side by side are icons in a row (outline icons, stars) as often as two
        # letters: they join only through a word (step 2), which needs another letter.
        twins = ((np.abs(w[i] - w[j]) <= 0.1 * np.maximum(w[i], w[j])) & (np.abs(h[i] - h[j]) <= 0.1 * hmax)
                 & (4 * w[i] >= 3 * h[i]) & (3 * w[i] <= 4 * h[i]) & (hmin >= TWIN_SIZE))
        letters = (yo >= 0.5 * hmin) & (dx <= 0.35 * hmax + 1.5) & (b.glyph[i] | b.glyph[j]) & ~twins
        small = np.where(b.area[i] <= b.area[j], i, j)
        big = np.where(b.area[i] <= b.area[j], j, i)
        above_below = (xo >= -1) & (dy <= 0.3 * h[big] + 1)  # a dot, an accent, a cedilla
        beside = (yo > 0) & (dx <= 0.2 * h[big] + 1.5)  # a period, a comma, a quote
        marks = ((above_below | beside) & (h[small] <= 0.6 * h[big]) & (b.area[small] * 2 <= b.area[big])
                 & (b.glyph[big] | b.glyph[small]))
        # A mark belongs to one letter: the nearest, the one it is centred on first (an i's dot sits closer to
        # its own stem than to the descender of the line above, and more squarely).
        mark_small.append(small[marks])
        mark_big.append(big[marks])
        centred = np.clip(xo[marks] / np.maximum(w[small[marks]], 1), 0, 1)
        mark_score.append(dx[marks] + dy[marks] + (1 - centred) * h[small[marks]])
        shadow = (b.faint[i] | b.faint[j]) & (xo > 0) & (yo > 0)
        keep = letters | shadow
        pairs.append((i[keep], j[keep]))
    if mark_small:
        ms, mb, sc = np.concatenate(mark_small), np.concatenate(mark_big), np.concatenate(mark_score)
        order = np.lexsort((sc, ms))
        best = order[np.r_[True, ms[order][1:] != ms[order][:-1]]] if ms.size else order
        pairs.append((ms[best], mb[best]))
    word = _components(n, pairs)

    # 2. Words into lines at a word gap scaled to the type: only between words of glyph pieces, one a real word.
    wb, glyphs, size = _merged(b, word)
    text = wb.glyph & ~wb.faint
    pairs = []
    for i, j in _candidate_pairs(wb, 1.2 * wb.h + 2, 0.0 * wb.h):
        dx, dy, xo, yo = _gaps(wb, i, j)
        hmax, hmin = np.maximum(wb.h[i], wb.h[j]), np.minimum(wb.h[i], wb.h[j])
        keep = (text[i] & text[j] & ((glyphs[i] >= 2) | (glyphs[j] >= 2)) & (yo >= 0.5 * hmin)
                & (hmax <= 2.2 * hmin) & (dx <= 1.2 * hmax + 2))
        pairs.append((i[keep], j[keep]))
    line = _components(len(wb.x0), pairs)[word]

    # 3. Lines into paragraphs: one type size, one alignment, a line gap apart; again on what was joined (a line
    #    split by a descender tied to the line above is whole, and aligned, once joined).
    group = line
    for _ in range(PARAGRAPH_ROUNDS):
        lb, glyphs, size = _merged(b, group)
        text = lb.glyph & ~lb.faint & (glyphs >= 3)
        pairs = []
        for i, j in _candidate_pairs(lb, 1.5 * size + 2, 1.0 * size + 2):
            dx, dy, xo, yo = _gaps(lb, i, j)
            s = np.minimum(size[i], size[j])
            near = 0.6 * s + 2
            aligned = ((np.abs(lb.x0[i] - lb.x0[j]) <= near) | (np.abs(lb.x1[i] - lb.x1[j]) <= near)
                       | (np.abs((lb.x0[i] + lb.x1[i]) - (lb.x0[j] + lb.x1[j])) <= 2 * near))
            same_size = np.maximum(size[i], size[j]) <= SAME_SIZE * s
            keep = text[i] & text[j] & (
                ((xo > 0) & (dy <= 1.0 * s + 2) & same_size & aligned)
                | ((xo > 0) & (yo > 0))  # boxes that cross: lines tied together by a descender or an accent
                # a word left out of its line (its neighbour tied to the line above or below): back into it
                | ((yo >= 0.5 * np.minimum(lb.h[i], lb.h[j])) & (dx <= 1.5 * s + 2) & same_size))
            pairs.append((i[keep], j[keep]))
        if not any(len(p[0]) for p in pairs):
            break
        group = _components(len(lb.x0), pairs)[group]

    # 4. Crumbs: a piece of a few pixels (a broken-off bit of small type) joins its nearest larger neighbour within
    #    a third of that neighbour's height.
    gb, _, _ = _merged(b, group)
    tiny = gb.area <= CRUMB_AREA
    if tiny.any() and not tiny.all():
        near_i, near_j, near_d = [], [], []
        for i, j in _candidate_pairs(gb, 0.35 * gb.h + 2, 0.35 * gb.h + 2):
            i, j = np.where(tiny[i], i, j), np.where(tiny[i], j, i)  # i: the crumb
            dx, dy, _, _ = _gaps(gb, i, j)
            keep = tiny[i] & ~tiny[j] & (np.maximum(dx, dy) <= 0.35 * gb.h[j] + 2)
            near_i.append(i[keep])
            near_j.append(j[keep])
            near_d.append(np.hypot(dx, dy)[keep])
        ci, cj, cd = (np.concatenate(v) if v else np.zeros(0, np.int64) for v in (near_i, near_j, near_d))
        if ci.size:
            order = np.lexsort((cd, ci))
            first = order[np.r_[True, ci[order][1:] != ci[order][:-1]]]
            group = _components(len(gb.x0), [(ci[first], cj[first])])[group]

    # 5. Text blocks: what lies in one box is one element.
    named: list[tuple[int, str]] = []
    if blocks:
        cx, cy = (b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2
        first = np.full(len(blocks), -1)
        a_list, b_list = [], []
        for k, ((x0, y0, x1, y1), _) in enumerate(blocks):
            inside = np.flatnonzero((cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1) & ~b.faint)
            if inside.size:
                first[k] = inside[0]
                a_list.append(np.full(inside.size, inside[0]))
                b_list.append(inside)
        if a_list:
            group = _components(int(group.max()) + 1, [(group[np.concatenate(a_list)], group[np.concatenate(b_list)])])[group]
            named = [(int(first[k]), text) for k, (_, text) in enumerate(blocks) if first[k] >= 0 and text.strip()]
    return group, named


def _cap(group: np.ndarray, b: _Boxes, limit: int) -> np.ndarray:
    """At most `limit` groups: the others, smallest first, join the nearest of the `limit` largest."""
    n = int(group.max()) + 1
    if n <= limit:
        return group
    gb, _, _ = _merged(b, group)
    kept = np.argsort(-gb.area, kind="stable")[:limit]
    rest = np.setdiff1d(np.arange(n), kept)
    target = np.arange(n)
    for start in range(0, len(rest), 4096):
        r = rest[start:start + 4096, None]
        dx = np.maximum(0, np.maximum(gb.x0[r], gb.x0[kept]) - np.minimum(gb.x1[r], gb.x1[kept]))
        dy = np.maximum(0, np.maximum(gb.y0[r], gb.y0[kept]) - np.minimum(gb.y1[r], gb.y1[kept]))
        target[rest[start:start + 4096]] = kept[np.argmin(dx.astype(np.float64) ** 2 + dy.astype(np.float64) ** 2, axis=1)]
    return target[group]


def _reading_order(group: np.ndarray, b: _Boxes) -> tuple[np.ndarray, int]:
    """Groups renumbered 0..n-1 top to bottom, then left to right."""
    used, group = np.unique(group, return_inverse=True)
    gb, _, _ = _merged(b, group)
    order = np.lexsort((gb.x0, gb.y0))
    rank = np.empty(len(used), np.int64)
    rank[order] = np.arange(len(used))
    return rank[group], len(used)


def _names(base: str, n: int, texts: dict[int, str]) -> list[str]:
    """The layer's name, numbered when there are several; the text an element holds, where a text block gave it."""
    base = layer_name(base)
    names = [base if n == 1 else f"{base} {k + 1}" for k in range(n)]
    for g, text in texts.items():
        text = " ".join(text.split())
        names[g] = layer_name(text if len(text) <= _TEXT_NAME else text[:_TEXT_NAME - 1].rstrip() + "…")
    return names
