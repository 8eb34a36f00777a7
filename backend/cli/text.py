"""`layerbridge text IMAGE --json OUT`: the text blocks of a picture as JSON (docs/text.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..core.errors import LayerBridgeError
from ..imaging.image import decode

MAX_PIXELS = 10**9  # a local file: only the machine's memory limits it


def add_text_command(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("text", help="read the text of a picture: words, boxes, size, colour, alignment and font")
    t.add_argument("image", help="a picture or an RGBA layer (PNG, JPEG, WebP, TIFF, HEIC, ...)")
    t.add_argument("--json", required=True, metavar="OUT", help="where the JSON goes ('-' for standard output)")
    t.set_defaults(func=cmd_text)


def cmd_text(a: argparse.Namespace) -> int:
    """Reads `a.image` and writes its text blocks to `a.json`.

    Args:
        a: the parsed command line: image (a path) and json (a path, or '-' for standard output).
    """
    from ..text.reading import read_text

    try:
        pixels = decode(Path(a.image).read_bytes(), MAX_PIXELS)
    except (OSError, LayerBridgeError) as exc:
        print(f"error: cannot read {a.image}: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    started = time.monotonic()
    reading = read_text(pixels)
    text = json.dumps(reading.to_dict(), ensure_ascii=False, indent=1)
    if a.json == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(a.json).write_text(text + "\n", encoding="utf-8")
    print(f"{len(reading.blocks)} text blocks in {time.monotonic() - started:.2f} s", file=sys.stderr)
    return 0
