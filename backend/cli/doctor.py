"""`layerbridge doctor`: what this machine has and what the server would choose on it."""

from __future__ import annotations

import platform
import socket
from pathlib import Path
from typing import Any

from .. import __version__
from ..model.attention import attention_backend
from ..model.device import probe_device
from ..model.plan import GIB, MemoryChoice, MemoryMode, plan, plan_checked
from ..model.quantize import linear_shapes
from ..core.settings import Settings, cache_dir, config_dir, log_dir


def _port_state(port: int) -> str:
    from .client import server_alive

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        in_use = s.connect_ex(("127.0.0.1", port)) == 0
    if not in_use:
        return f"{port} free"
    if server_alive(f"http://127.0.0.1:{port}"):
        return f"{port} in use by a running LayerBridge server"
    return f"{port} in use by another program: start the server with --port"


def _model_cache(model: str, single_file: bool = False) -> str:
    if Path(model).is_dir():
        return f"local folder {model}"
    try:
        from huggingface_hub import scan_cache_dir

        for repo in scan_cache_dir().repos:
            if repo.repo_id == model:
                return f"{repo.size_on_disk / 1e9:.1f} GB cached in {repo.repo_path}"
    except Exception:
        pass
    if single_file:
        return f"not downloaded yet (`layerbridge download --transformer-file`: about 16 GB without the transformer; " \
               f"{_disk_text(16)})"
    return f"not downloaded yet (`layerbridge download`, about 57 GB; {_disk_text(57)})"


def _disk_text(needed_gb: float) -> str:
    """Free space where the download would go, and whether the download fits there."""
    from huggingface_hub import constants

    from ..model.download import DISK_MARGIN_BYTES, free_bytes

    folder = Path(constants.HF_HUB_CACHE)
    free = free_bytes(folder)
    text = f"{free / 1e9:.1f} GB free in {folder}"
    if needed_gb * 1e9 + DISK_MARGIN_BYTES > free:
        text += ": not enough, set HF_HOME to a folder on a larger disk"
    return text


def report(settings: Settings) -> dict[str, Any]:
    import torch

    device = probe_device()
    choice = plan_checked(
        device, lambda: plan(device, settings.model, settings.memory, settings.quantize, settings.compile,
                             settings.transformer_file),
        published_linear_shapes,
    )
    from ..model.presets import describe_presets

    data: dict[str, Any] = {
        "layerbridge": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "device": f"{device.name} ({device.kind})",
        "vram": f"{device.vram_free / GIB:.1f} GiB free of {device.vram_total / GIB:.1f} GiB" if device.vram_total else "n/a",
        "memory mode": f"{choice.mode.value} — {choice.reason}",
        "transformer": choice.transformer_weights(),
        "text encoder": "int8, whole on the GPU while it runs" if choice.text_encoder_int8 else "bf16",
        "compile": _compile_text(choice),
        "attention": attention_backend(device, settings.attention) or "native (PyTorch SDPA)",
        "presets": describe_presets(device),
        "model": settings.model,
        "model cache": _model_cache(settings.model, bool(settings.transformer_file)),
        "transformer file": _transformer_file_text(settings.transformer_file),
        "port": _port_state(settings.port),
        "config dir": str(config_dir()),
        "log dir": str(log_dir()),
        "cache dir": str(cache_dir()),
    }
    return data


def _transformer_file_text(spec: str | None) -> str:
    from ..model import transformer_file

    if not spec:
        return "none (the model's own transformer)"
    path = transformer_file.local_path(spec)
    if path is None:
        return f"{spec}: not on this machine yet (`layerbridge download --transformer-file`)"
    kind = "GGUF" if transformer_file.is_gguf(spec) else "safetensors"
    return f"{path} ({kind}, {path.stat().st_size / 1e9:.1f} GB; {transformer_file.memory_bytes(path) / GIB:.1f} GiB loaded)"


def published_linear_shapes() -> list[tuple[str, int, int]]:
    """The published transformer's linear layer shapes, for FP8's kernel check (built on the meta device: no
    weights, no download)."""
    import torch
    from diffusers import QwenImageTransformer2DModel

    from ..model.tiny_model import FULL

    with torch.device("meta"):
        transformer = QwenImageTransformer2DModel(**FULL["transformer"])
    return linear_shapes(transformer)


def _compile_text(choice: MemoryChoice) -> str:
    if not choice.compile:
        return "off"
    if choice.mode == MemoryMode.gpu:
        return "on (transformer blocks and caption decoder, cached on disk; compiled by a warm-up job after loading)"
    return "on (transformer blocks, cached on disk; compiled by a warm-up job after loading)"
