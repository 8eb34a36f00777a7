"""`layerbridge split`: one image's separate elements, one layer each, without the model (docs/elements.md)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .output import out_refused, write_beside

MAX_IMAGE_PIXELS = 10**9  # as `decompose`: a file on the user's own disk


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..core.layer import MAX_ELEMENTS

    p = sub.add_parser("split", help="split an image's separate elements into layers (no model): a folder of PNGs")
    p.add_argument("image", help="the image (its transparent pixels separate the elements)")
    p.add_argument("--out", required=True, help="output folder (PNGs + layers.json, as `decompose` writes)")
    p.add_argument("--max-elements", type=int, default=MAX_ELEMENTS,
                   help=f"at most this many layers; the smallest elements join their neighbours (default {MAX_ELEMENTS})")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=cmd_split)


def cmd_split(a: argparse.Namespace) -> int:
    """0 when written, 1 when writing failed, 2 for bad input or an OUT that is there (said on stderr)."""
    from ..core.errors import LayerBridgeError
    from ..core.layer import PlacedLayer
    from ..imaging import export
    from ..imaging.image import decode
    from ..imaging.split import split_layer

    source, out = Path(a.image), Path(a.out)
    if a.max_elements < 1:
        print("error (invalid_params): --max-elements is at least 1", file=sys.stderr)
        return 2
    if out_refused(out, a.overwrite):
        return 2
    replace = os.path.lexists(out)
    try:
        pixels = decode(source.read_bytes(), MAX_IMAGE_PIXELS, max_aspect=None)  # no model: any strip splits
    except OSError as exc:
        print(f"error: cannot read {source}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except LayerBridgeError as exc:
        print(f"error ({exc.code.value}): cannot read {source}: {exc.message}", file=sys.stderr)
        return 2
    height, width = pixels.shape[:2]
    started = time.monotonic()
    elements = split_layer(PlacedLayer(source.stem, 0, 0, pixels), max_elements=a.max_elements)
    took = time.monotonic() - started

    try:
        target, _ = write_beside(out, replace, lambda tmp: export.write_folder(tmp, elements, width, height,
                                                                           {"source": source.name}))
    except (OSError, LayerBridgeError) as exc:
        code = f" ({exc.code.value})" if isinstance(exc, LayerBridgeError) else ""
        print(f"error{code}: cannot write {out}: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    done = f"{len(elements)} elements ({width}×{height}) in {took:.2f} s"
    if target != out:
        print(f"error: {out} appeared while splitting and was left as it is; wrote {done} to {target}", file=sys.stderr)
        return 1
    print(f"wrote {done} to {out}", file=sys.stderr)
    return 0
