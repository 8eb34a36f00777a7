"""Fetching model weights from the Hugging Face Hub ahead of time, resumable, with byte-level progress."""

from __future__ import annotations

import fnmatch
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..core.errors import ErrorCode, LayerBridgeError

ByteProgress = Callable[[int, int], None]
# The model's own transformer weights, left out where a single-file transformer replaces them (its config stays).
TRANSFORMER_WEIGHTS = ["transformer/*.safetensors", "transformer/*.bin", "transformer/*.gguf"]
# Kept free beyond the files: the Hub client's own small files, and room for the system and the user to go on.
DISK_MARGIN_BYTES = 2 * 1024**3


def free_bytes(folder: Path) -> int:
    """Free space on the disk that holds `folder` (or would hold it: its nearest existing parent)."""
    probe = folder.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def check_disk(folder: Path, needed: int, what: str) -> None:
    """Refuses a download that cannot fit, before its first byte: a 57 GB download that stops at 80 % for want of
    space costs an hour and leaves the disk full. Nothing left to fetch: nothing to check."""
    if needed <= 0:
        return
    free = free_bytes(folder)
    if needed + DISK_MARGIN_BYTES > free:
        raise LayerBridgeError(
            ErrorCode.model_unavailable,
            f"downloading {what} needs {needed / 1e9:.1f} GB more (plus {DISK_MARGIN_BYTES / 1e9:.0f} GB to spare), "
            f"and the disk of {folder} has {free / 1e9:.1f} GB free. Free some space, set HF_HOME to a folder on a "
            "larger disk, or pass --model with a local folder.",
        )


def _blob_bytes(repo_cache: Path, partial: bool = True) -> int:
    blobs = repo_cache / "blobs"
    if not blobs.is_dir():
        return 0
    return sum(f.stat().st_size for f in blobs.iterdir() if f.is_file() and (partial or f.suffix != ".incomplete"))


def _repo_cache(repo: str) -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + repo.replace("/", "--"))


@contextmanager
def _watched(repo: str, total: int, on_bytes: ByteProgress | None, already: int = 0) -> Iterator[None]:
    """Reports the bytes in the repository's cache blobs (partial files included) every half second while the body
    downloads, less `already` (blobs of files this download does not want), and the total once it is done."""
    repo_cache = _repo_cache(repo)
    done = threading.Event()

    def report() -> None:
        while not done.wait(0.5):
            if on_bytes:
                on_bytes(max(0, min(_blob_bytes(repo_cache) - already, total)), total)

    watcher = threading.Thread(target=report, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join(timeout=2)
    if on_bytes:
        on_bytes(total, total)


def fetch(model: str, on_bytes: ByteProgress | None = None, skip_transformer: bool = False) -> Path:
    """Download (or find in the cache) every file of a model repository; returns the local snapshot folder.

    `skip_transformer`: leave out the transformer's weights (a single-file transformer replaces them). The Hub client
    resumes partial downloads. Progress is read off the cache's blob folder, so it includes files already present
    from an earlier, interrupted run.
    """
    from huggingface_hub import HfApi, snapshot_download

    ignore = TRANSFORMER_WEIGHTS if skip_transformer else None
    try:
        info = HfApi().model_info(model, files_metadata=True)
        wanted = [s for s in info.siblings or [] if not _ignored(s.rfilename, ignore)]
        total = sum((s.size or 0) for s in wanted)
    except Exception as exc:
        try:  # offline, but perhaps fully cached
            return Path(snapshot_download(model, local_files_only=True, ignore_patterns=ignore))
        except Exception:
            pass
        raise LayerBridgeError(
            ErrorCode.model_unavailable,
            f"the model {model!r} is not on this machine and could not be looked up on the Hugging Face Hub "
            f"({type(exc).__name__}). Check the internet connection, or pass --model with a local folder.",
        ) from exc
    check_disk(_repo_cache(model), max(0, total - _blob_bytes(_repo_cache(model))), repr(model))
    try:
        with _watched(model, total, on_bytes):
            return Path(snapshot_download(model, ignore_patterns=ignore))
    except Exception as exc:
        raise LayerBridgeError(
            ErrorCode.model_unavailable, f"downloading {model!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def fetch_file(repo: str, revision: str, filename: str, on_bytes: ByteProgress | None = None) -> Path:
    """Download (or find in the cache) one file of a Hub repository, resumable; returns its local path."""
    from huggingface_hub import HfApi, hf_hub_download

    address = f"{repo}/{filename} ({revision})"
    try:
        info = HfApi().model_info(repo, revision=revision, files_metadata=True)
        total = next((s.size or 0) for s in info.siblings or [] if s.rfilename == filename)
    except StopIteration:
        raise LayerBridgeError(ErrorCode.model_unavailable, f"the Hub has no file {address}") from None
    except Exception as exc:
        try:
            return Path(hf_hub_download(repo, filename, revision=revision, local_files_only=True))
        except Exception:
            pass
        raise LayerBridgeError(
            ErrorCode.model_unavailable,
            f"the file {address} is not on this machine and could not be looked up on the Hugging Face Hub "
            f"({type(exc).__name__}). Check the internet connection, or pass a local file.",
        ) from exc
    already = _blob_bytes(_repo_cache(repo), partial=False)  # other files of that repository, cached earlier
    check_disk(_repo_cache(repo), max(0, total - (_blob_bytes(_repo_cache(repo)) - already)), address)
    try:
        with _watched(repo, total, on_bytes, already):
            return Path(hf_hub_download(repo, filename, revision=revision))
    except Exception as exc:
        raise LayerBridgeError(
            ErrorCode.model_unavailable, f"downloading {address} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _ignored(name: str, patterns: list[str] | None) -> bool:
    return bool(patterns) and any(fnmatch.fnmatch(name, p) for p in patterns)
