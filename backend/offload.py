"""Host offload: one component on the GPU at a time, every weight kept in host memory, so switching is one copy.

diffusers' model CPU offload (accelerate) takes a component off the GPU with `.to("cpu")`: a device-to-host copy
into freshly allocated pageable memory, every time. On an H200 host that took 22 s for the 41 GB transformer, once
per job, and as long again to bring it back. Here each weight keeps its host copy for as long as the pipeline is
loaded: taking a component off the GPU only drops its GPU copy (no transfer), and putting it on is one
host-to-device copy, from page-locked memory where the machine has RAM to spare. No library places a pipeline this
way: diffusers' group offloading keeps host copies too, but moves them in and out around every forward (100 times
a job for the transformer), and its pinned buffers come from PyTorch's pinned allocator, which rounds every buffer
up to a power of two (up to twice the RAM); here the weights' own memory is page-locked in place, exactly.
"""

from __future__ import annotations

import logging
from typing import Any

from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module
from accelerate.utils import send_to_device

log = logging.getLogger("layerbridge.offload")

COMPONENTS = ("text_encoder", "vae", "transformer")
PIN_MIN_BYTES = 1 << 20  # smaller tensors share memory pages with others; they are copied unpinned
PIN_SPARE_RAM = 8 * 1024**3  # page-locked memory cannot be swapped: pin only with this much RAM left over


class HostOffload:
    """Places `pipe`'s components: each moves onto `device` when it runs, the one there before leaves for free."""

    def __init__(self, pipe: Any, device: Any, pin: bool | None = None):
        import torch

        self.device = torch.device(device)
        self.modules: dict[str, Any] = {}
        self.host: dict[str, dict[str, Any]] = {}
        self.current: str | None = None
        self.pinned: list[int] = []  # addresses page-locked with cudaHostRegister, unregistered by `remove`
        for name in COMPONENTS:
            module = getattr(pipe, name, None)
            if module is None:
                continue
            module.to("cpu")
            self.modules[name] = module
            self.host[name] = module.state_dict()
        if pin is None:
            pin = self.device.type == "cuda" and _ram_to_spare(self.weight_bytes())
        if pin:
            self._pin()
        for name, module in self.modules.items():
            add_hook_to_module(module, _OnloadHook(self, name), append=False)

    def weight_bytes(self) -> int:
        return sum(_nbytes(t) for state in self.host.values() for t in _unique(state.values()))

    def onload(self, name: str) -> None:
        """Put `name` on the GPU; the component there before goes back to its host copy."""
        if self.current == name:
            return
        self.offload()
        self.modules[name].to(self.device, non_blocking=True)
        self.current = name

    def offload(self) -> None:
        """The component on the GPU goes back to its host tensors (assigned, not copied); its GPU memory is freed."""
        if self.current is None:
            return
        self.modules[self.current].load_state_dict(self.host[self.current], assign=True)
        self.current = None

    def remove(self) -> None:
        """Back to plain modules on the CPU, hooks off and memory unpinned."""
        self.offload()
        for module in self.modules.values():
            remove_hook_from_module(module)
        if self.pinned:
            import torch

            cudart = torch.cuda.cudart()
            for address in self.pinned:
                cudart.cudaHostUnregister(address)
            self.pinned.clear()

    def _pin(self) -> None:
        import torch

        cudart = torch.cuda.cudart()
        pinned_bytes = 0
        seen: set[int] = set()
        for state in self.host.values():
            for tensor in state.values():
                for plain in _plain_tensors(tensor):
                    storage = plain.untyped_storage()
                    address, size = storage.data_ptr(), storage.nbytes()
                    if address in seen or size < PIN_MIN_BYTES:
                        continue
                    seen.add(address)
                    if int(cudart.cudaHostRegister(address, size, 0)) == 0:
                        self.pinned.append(address)
                        pinned_bytes += size
        log.info("host offload: %.1f GiB of weights page-locked", pinned_bytes / 1024**3)


class _OnloadHook(ModelHook):
    """Moves its component onto the GPU before it runs (forward, and the VAE's encode and decode), and its inputs
    with it. diffusers reads `execution_device` from it to put the pipeline's own tensors on the GPU."""

    def __init__(self, offload: HostOffload, name: str):
        self.offload = offload
        self.name = name
        self.execution_device = offload.device

    def pre_forward(self, module: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        self.offload.onload(self.name)
        return send_to_device(args, self.execution_device), send_to_device(kwargs, self.execution_device)


def _ram_to_spare(weight_bytes: int) -> bool:
    try:
        import psutil
    except ImportError:
        return False
    return psutil.virtual_memory().total >= weight_bytes + PIN_SPARE_RAM


def _plain_tensors(tensor: Any) -> list[Any]:
    """The plain tensors holding a tensor's data: itself, or a quantised tensor subclass's inner tensors."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    if not is_traceable_wrapper_subclass(tensor):
        return [tensor]
    names, _ = tensor.__tensor_flatten__()
    return [plain for name in names for plain in _plain_tensors(getattr(tensor, name))]


def _unique(tensors: Any) -> list[Any]:
    seen: dict[int, Any] = {}
    for tensor in tensors:
        for plain in _plain_tensors(tensor):
            seen.setdefault(plain.untyped_storage().data_ptr(), plain)
    return list(seen.values())


def _nbytes(plain: Any) -> int:
    return plain.untyped_storage().nbytes()
