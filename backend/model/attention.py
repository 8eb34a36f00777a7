"""The transformer's attention backend: an installed FlashAttention on CUDA, else PyTorch's SDPA."""

from __future__ import annotations

from .device import DeviceInfo


def attention_backend(device: DeviceInfo, requested: str = "auto") -> str | None:
    """The transformer's attention backend: an installed FlashAttention on CUDA, else PyTorch's SDPA (None)."""
    import importlib.util

    if requested != "auto":
        return None if requested == "native" else requested
    if device.kind != "cuda":
        return None
    if importlib.util.find_spec("flash_attn_interface") is not None and device.capability and device.capability >= (9, 0):
        return "_flash_3"
    if importlib.util.find_spec("flash_attn") is not None:
        return "flash"
    return None
