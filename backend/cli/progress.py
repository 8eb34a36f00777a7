"""Progress on the terminal: a one-line bar, and the line a job's progress event gives."""

from __future__ import annotations

import sys


class Bar:
    """A one-line terminal progress bar."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = ""

    def show(self, fraction: float, text: str) -> None:
        width = 30
        filled = int(max(0.0, min(1.0, fraction)) * width)
        line = f"[{'#' * filled}{'.' * (width - filled)}] {text}"
        if self.tty:
            sys.stderr.write("\r" + line.ljust(78)[:120])
            sys.stderr.flush()
        elif text != self.last:
            sys.stderr.write(line + "\n")
        self.last = text

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def progress_line(state: dict) -> tuple[float, str]:
    total = state.get("total") or 0
    step = state.get("step") or 0
    eta = state.get("eta_s")
    text = state.get("message") or state.get("stage", "")
    if eta is not None:
        text += f" · {eta:.0f} s left"
    return (step / total if total else 0.0), text
