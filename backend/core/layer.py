"""The layer a job returns: RGBA pixels cropped to their content, with their place on the canvas; or a group entry of
a job's layer hierarchy, which holds no pixels (docs/protocol.md §3, docs/elements.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_ELEMENTS = 64  # at most this many elements when a layer is split into its elements (docs/elements.md)


@dataclass
class PlacedLayer:
    """One RGBA layer cropped to its non-transparent bounds, placed at (x, y) on the canvas."""

    name: str
    x: int
    y: int
    pixels: np.ndarray  # (height, width, 4) uint8, straight alpha; (0, 0, 4) when empty
    text: list[dict[str, Any]] = field(default_factory=list)  # its text blocks, canvas pixels (docs/text.md)
    parent: int | None = None  # the index of the group entry it is in, in its job's flat list; None: the top level
    # A group entry: no pixels ((0, 0, 4)); its children (indices) follow it directly; (x, y) and `extent` (width,
    # height) are their union's box. None for a pixel layer.
    children: list[int] | None = None
    extent: tuple[int, int] = (0, 0)

    @classmethod
    def from_entry(cls, entry: dict[str, Any], pixels: np.ndarray) -> "PlacedLayer":
        """A layer from its entry in a result's `layers` or in layers.json (docs/protocol.md §3), with its pixels
        ((0, 0, 4) for a group entry or an empty layer)."""
        layer = cls(entry["name"], entry["x"], entry["y"], pixels, entry.get("text") or [], entry.get("parent"))
        if entry.get("group"):
            layer.children = list(entry["children"])
            layer.extent = (entry["width"], entry["height"])
        return layer

    @property
    def group(self) -> bool:
        return self.children is not None

    @property
    def width(self) -> int:
        """Pixel columns (0 for a group entry: its box is `box`)."""
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) on the canvas: a pixel layer's own, a group entry's its children's union."""
        return (self.x, self.y, *self.extent) if self.group else (self.x, self.y, self.width, self.height)


def group_entry(name: str, members: list[PlacedLayer], first_child: int, parent: int | None = None) -> PlacedLayer:
    """The group entry of `members` (pixel layers), whose indices in the flat list run from `first_child` on.

    Args:
        name: the group's name.
        members: its children, bottom to top (their boxes make the group's).
        first_child: the index the first child has (the group entry's own index + 1).
        parent: the group's own parent, None at the top level.
    """
    boxes = [m.box for m in members if m.box[2] and m.box[3]]
    x0 = min((b[0] for b in boxes), default=0)
    y0 = min((b[1] for b in boxes), default=0)
    x1 = max((b[0] + b[2] for b in boxes), default=0)
    y1 = max((b[1] + b[3] for b in boxes), default=0)
    return PlacedLayer(name, x0, y0, np.zeros((0, 0, 4), np.uint8), [], parent,
                       list(range(first_child, first_child + len(members))), (x1 - x0, y1 - y0))
