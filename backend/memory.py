"""Where the model's weights live: the memory modes, chosen from the free VRAM and applied to a pipeline."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIB = 1024**3
# Qwen-Image-Layered in bf16: transformer 20.4 B parameters, Qwen2.5-VL-7B text encoder, small VAE.
DEFAULT_COMPONENT_BYTES = {"transformer": 40.9 * GIB, "text_encoder": 15.5 * GIB, "vae": 0.25 * GIB}
# Activations, CUDA context and the VAE decode of 5 frames at 1024² (measured peaks stay well under this).
HEADROOM_BYTES = 8 * GIB


class MemoryMode(str, enum.Enum):
    gpu = "gpu"  # every component on the GPU: fastest
    model_offload = "model_offload"  # one component on the GPU at a time (diffusers model CPU offload)
    group_offload = "group_offload"  # transformer blocks streamed to the GPU as needed (CUDA streams)
    sequential_offload = "sequential_offload"  # leaf by leaf: smallest VRAM, slowest
    cpu = "cpu"  # no GPU: float32 on the CPU (tiny models, tests)


@dataclass
class DeviceInfo:
    kind: str  # "cuda", "mps" or "cpu"
    name: str
    vram_total: int = 0
    vram_free: int = 0
    capability: tuple[int, int] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "vram_total": self.vram_total, "vram_free": self.vram_free}


@dataclass
class MemoryChoice:
    mode: MemoryMode
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"mode": self.mode.value, "reason": self.reason}


def probe_device() -> DeviceInfo:
    import torch

    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        props = torch.cuda.get_device_properties(0)
        return DeviceInfo("cuda", props.name, total, free, (props.major, props.minor))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return DeviceInfo("mps", "Apple GPU")
    return DeviceInfo("cpu", "CPU")


def component_bytes(model: str) -> dict[str, float]:
    """Weight bytes per component: read from a local folder, else the default model's known sizes."""
    root = Path(model)
    if not root.is_dir():
        return dict(DEFAULT_COMPONENT_BYTES)
    sizes: dict[str, float] = {}
    for sub in ("transformer", "text_encoder", "vae"):
        files = list((root / sub).glob("*.safetensors")) + list((root / sub).glob("*.bin")) + list((root / sub).glob("*.gguf"))
        sizes[sub] = float(sum(f.stat().st_size for f in files))
    return sizes


def choose_mode(device: DeviceInfo, model: str, requested: str = "auto") -> MemoryChoice:
    if requested != "auto":
        try:
            mode = MemoryMode(requested)
        except ValueError:
            raise ValueError(f"unknown memory mode {requested!r}; use auto or one of {[m.value for m in MemoryMode]}")
        if device.kind == "cpu" and mode != MemoryMode.cpu:
            return MemoryChoice(MemoryMode.cpu, f"{mode.value} was asked for, but there is no GPU")
        return MemoryChoice(mode, "set by the user")
    if device.kind == "cpu":
        return MemoryChoice(MemoryMode.cpu, "no GPU found: running on the CPU (very slow for the real model)")
    if device.kind == "mps":
        return MemoryChoice(MemoryMode.gpu, "Apple GPU: unified memory, everything on the device")
    sizes = component_bytes(model)
    total = sum(sizes.values())
    largest = max(sizes.values())
    free = device.vram_free
    free_gib = free / GIB
    if free >= total + HEADROOM_BYTES:
        return MemoryChoice(MemoryMode.gpu, f"{free_gib:.0f} GiB free VRAM ≥ {(total + HEADROOM_BYTES) / GIB:.0f} GiB for all weights")
    if free >= largest + HEADROOM_BYTES:
        return MemoryChoice(
            MemoryMode.model_offload,
            f"{free_gib:.0f} GiB free VRAM: enough for the largest component ({largest / GIB:.0f} GiB), not for all ({total / GIB:.0f} GiB)",
        )
    if free >= 3 * GIB:
        return MemoryChoice(MemoryMode.group_offload, f"only {free_gib:.0f} GiB free VRAM: streaming transformer blocks")
    return MemoryChoice(MemoryMode.sequential_offload, f"only {free_gib:.1f} GiB free VRAM: leaf-by-leaf offload")


def apply_mode(pipe: Any, mode: MemoryMode, device: DeviceInfo) -> None:
    import torch

    if mode == MemoryMode.cpu:
        pipe.to("cpu")
    elif mode == MemoryMode.gpu:
        pipe.to(device.kind)
    elif mode == MemoryMode.model_offload:
        pipe.enable_model_cpu_offload()
    elif mode == MemoryMode.group_offload:
        pipe.enable_group_offload(
            onload_device=torch.device("cuda"),
            offload_device=torch.device("cpu"),
            offload_type="leaf_level",
            use_stream=True,
        )
    elif mode == MemoryMode.sequential_offload:
        pipe.enable_sequential_cpu_offload()
