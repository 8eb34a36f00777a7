"""The result of reading text: blocks of lines, and their JSON form (docs/text.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FONT_CLASSES = ("sans-serif", "serif", "monospace", "display", "script")
ALIGNMENTS = ("left", "center", "right")


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    def union(self, other: "Box") -> "Box":
        x, y = min(self.x, other.x), min(self.y, other.y)
        return Box(x, y, max(self.right, other.right) - x, max(self.bottom, other.bottom) - y)

    def to_dict(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}


@dataclass
class TextLine:
    text: str
    box: Box
    baseline: int

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "box": self.box.to_dict(), "baseline": self.baseline}


@dataclass
class TextFont:
    family: str
    font_class: str
    bold: bool
    italic: bool
    postscript: str = ""  # the face's PostScript name (Photoshop's fontName); not part of the JSON block

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "class": self.font_class, "bold": self.bold, "italic": self.italic}


@dataclass
class TextBlock:
    lines: list[TextLine]
    size: float
    color: str
    align: str
    font: TextFont
    editable: bool

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    @property
    def box(self) -> Box:
        box = self.lines[0].box
        for line in self.lines[1:]:
            box = box.union(line.box)
        return box

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "box": self.box.to_dict(),
            "lines": [line.to_dict() for line in self.lines],
            "size": round(self.size, 1),
            "color": self.color,
            "align": self.align,
            "font": self.font.to_dict(),
            "editable": self.editable,
        }


@dataclass
class TextReading:
    width: int
    height: int
    blocks: list[TextBlock] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "blocks": [b.to_dict() for b in self.blocks]}
