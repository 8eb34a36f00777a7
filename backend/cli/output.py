"""Writing a command's result at OUT without losing anything the user has: an existing OUT only with --overwrite, a
private random folder beside it while writing, links at OUT never followed, whatever appears meanwhile kept."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


def out_refused(out: Path, overwrite: bool) -> bool:
    """Whether OUT must not be written (said on stderr): it is there (a link, even one to nothing, is the user's too)
    and --overwrite was not given, or its folder cannot be written."""
    if os.path.lexists(out) and not overwrite:
        print(f"error: {out} exists; pass --overwrite to replace it", file=sys.stderr)
        return True
    folder = out.absolute().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        print(f"error: cannot write {out}: {folder} is not a folder this user can write to", file=sys.stderr)
        return True
    return False


def write_beside(out: Path, replace: bool, write: Callable[[Path], T]) -> tuple[Path, T]:
    """Runs `write(tmp)` on a path in a folder of its own beside OUT (a random name, made exclusively and for this
    user only: nothing planted beside OUT is written through or merged), then moves the result into place. Only a path
    that was there at the start, and that `replace` names, is replaced (a symbolic link there is replaced itself,
    never followed); whatever appeared at OUT meanwhile is left as it is and the result takes `OUT (n)`.

    Args:
        out: where the result goes.
        replace: whether OUT was there at the start and --overwrite was given.
        write: writes the result at the path it is given; its exceptions pass through, leaving nothing behind.

    Returns:
        Where the result went (OUT, or `OUT (n)`), and what `write` returned.
    """
    private = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.absolute().parent))
    try:
        tmp = private / out.name  # the same suffix: it picks the format
        written = write(tmp)
        target, n = out, 0
        if replace and os.path.lexists(out):
            shutil.rmtree(out) if out.is_dir() and not out.is_symlink() else out.unlink()
        while os.path.lexists(target):
            n += 1
            target = out.with_name(f"{out.stem} ({n}){out.suffix}")
        os.replace(tmp, target)
        return target, written
    finally:
        shutil.rmtree(private, ignore_errors=True)
