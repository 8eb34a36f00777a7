"""The device the model runs on: what it is, its memory (and the machine's RAM), and what it can run (FP8 units,
torchao for quantised weights)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from . import transformer_file as single_file


@dataclass
class DeviceInfo:
    kind: str  # "cuda", "mps" or "cpu"
    name: str
    vram_total: int = 0
    vram_free: int = 0
    capability: tuple[int, int] | None = None
    # why FP8 cannot run here although the card has FP8 units (the engine's kernel check at load), else None
    fp8_problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "vram_total": self.vram_total, "vram_free": self.vram_free}


def supports_fp8(device: DeviceInfo) -> bool:
    """FP8 matrix units, torchao to drive them, and kernels for every product the transformer asks of them."""
    return has_fp8_units(device) and _has_torchao() and device.fp8_problem is None


def supports_int8(device: DeviceInfo) -> bool:
    """int8 weights need torchao only: the products run in bf16 on any CUDA card (and on the CPU, for tests)."""
    return device.kind in ("cuda", "cpu") and _has_torchao()


def fp8_missing(device: DeviceInfo) -> str:
    """Why FP8 cannot run on this device, in words."""
    if not has_fp8_units(device):
        return "this GPU has no FP8 units (Ada or Hopper needed)"
    return device.fp8_problem or "torchao is not installed"


def has_fp8_units(device: DeviceInfo) -> bool:
    """Ada (8.9), Hopper (9.0) or newer."""
    return device.kind == "cuda" and device.capability is not None and device.capability >= (8, 9)


def _has_torchao() -> bool:
    return single_file.has_torchao()


def probe_device() -> DeviceInfo:
    import torch

    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        props = torch.cuda.get_device_properties(0)
        return DeviceInfo("cuda", props.name, total, free, (props.major, props.minor))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return DeviceInfo("mps", "Apple GPU")
    return DeviceInfo("cpu", "CPU")


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (else all of this machine's), without
    initialising CUDA."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def host_ram_bytes() -> int | None:
    """The machine's RAM (psutil comes with accelerate), or None where it cannot be read."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:
        return None


def model_dtype(device: DeviceInfo) -> Any:
    """bf16 on CUDA; float32 elsewhere (the tiny model on the CPU)."""
    import torch

    return torch.bfloat16 if device.kind == "cuda" else torch.float32
