"""Placing a pipeline on the device as its memory mode says: whole, one component at a time, or streamed."""

from __future__ import annotations

from typing import Any

from .device import DeviceInfo
from .plan import MemoryMode
from .quantize import enable_int8


def group_offload_options(device: DeviceInfo, pin_streamed: bool = True) -> dict[str, Any]:
    """diffusers' group offloading as the group_offload mode streams: leaf by leaf, with CUDA streams on CUDA, every
    host copy page-locked at load unless `pin_streamed` is off (then each group is page-locked as it streams)."""
    import torch

    return {
        "onload_device": torch.device(device.kind),
        "offload_device": torch.device("cpu"),
        "offload_type": "leaf_level",
        "use_stream": device.kind == "cuda",
        "low_cpu_mem_usage": not pin_streamed,
    }


def apply_mode(
    pipe: Any, mode: MemoryMode, device: DeviceInfo, text_encoder_int8: bool = False, pin_streamed: bool = True
) -> Any:
    """Place the pipeline; returns the HostOffload that places components whole, where one does (None otherwise)."""

    if mode == MemoryMode.host_offload:
        from .offload import HostOffload

        if text_encoder_int8:
            enable_int8(pipe.text_encoder, staging=device.kind)
        return HostOffload(pipe, device.kind)
    if mode == MemoryMode.group_offload and text_encoder_int8:
        from .offload import HostOffload

        enable_int8(pipe.text_encoder, staging=device.kind)
        for component in (pipe.transformer, pipe.vae):
            component.enable_group_offload(**group_offload_options(device, pin_streamed))
        return HostOffload(pipe, device.kind, components=("text_encoder",), release_before=(pipe.transformer,))
    if mode == MemoryMode.cpu:
        pipe.to("cpu")
    elif mode == MemoryMode.gpu:
        pipe.to(device.kind)
    elif mode == MemoryMode.model_offload:
        pipe.enable_model_cpu_offload()
    elif mode == MemoryMode.group_offload:
        pipe.enable_group_offload(**group_offload_options(device, pin_streamed))
    elif mode == MemoryMode.sequential_offload:
        pipe.enable_sequential_cpu_offload()
    return None
