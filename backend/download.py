"""Fetching model weights from the Hugging Face Hub ahead of time, resumable, with byte-level progress."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from .errors import ErrorCode, LayerBridgeError

ByteProgress = Callable[[int, int], None]


def _blob_bytes(repo_cache: Path) -> int:
    blobs = repo_cache / "blobs"
    if not blobs.is_dir():
        return 0
    return sum(f.stat().st_size for f in blobs.iterdir() if f.is_file())


def fetch(model: str, on_bytes: ByteProgress | None = None) -> Path:
    """Download (or find in the cache) every file of a model repository; returns the local snapshot folder.

    The Hub client resumes partial downloads. Progress is read off the cache's blob folder, so it includes files
    already present from an earlier, interrupted run.
    """
    from huggingface_hub import HfApi, constants, snapshot_download

    try:
        info = HfApi().model_info(model, files_metadata=True)
        total = sum((s.size or 0) for s in info.siblings or [])
    except Exception as exc:
        try:  # offline, but perhaps fully cached
            return Path(snapshot_download(model, local_files_only=True))
        except Exception:
            pass
        raise LayerBridgeError(
            ErrorCode.model_unavailable,
            f"the model {model!r} is not on this machine and could not be looked up on the Hugging Face Hub "
            f"({type(exc).__name__}). Check the internet connection, or pass --model with a local folder.",
        ) from exc
    repo_cache = Path(constants.HF_HUB_CACHE) / ("models--" + model.replace("/", "--"))
    done = threading.Event()

    def report() -> None:
        while not done.wait(0.5):
            if on_bytes:
                on_bytes(min(_blob_bytes(repo_cache), total), total)

    watcher = threading.Thread(target=report, daemon=True)
    watcher.start()
    try:
        path = Path(snapshot_download(model))
    except Exception as exc:
        raise LayerBridgeError(
            ErrorCode.model_unavailable, f"downloading {model!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        done.set()
        watcher.join(timeout=2)
    if on_bytes:
        on_bytes(total, total)
    return path


