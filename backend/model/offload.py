"""Host offload: one component on the GPU at a time, every weight kept in host memory, so switching is one copy.

diffusers' model CPU offload (accelerate) takes a component off the GPU with `.to("cpu")`: a device-to-host copy
into freshly allocated memory, every time. On an H200 host that took 22 s for the 41 GB transformer, once per job,
and about as long again to bring it back. Here each weight keeps its host copy for as long as the pipeline is
loaded: taking a component off the GPU only drops its GPU copy (no transfer, no allocation), and putting it on is
one host-to-device copy. No library places a pipeline this way: diffusers' group offloading keeps host copies too,
but moves them in and out around every forward (100 times a job for the transformer).

The host copies are ordinary (pageable) memory. Page-locking them would make the copy faster, but PyTorch's pinned
allocator rounds every buffer up to a power of two (up to twice the RAM), and page-locking the weights in place
(cudaHostRegister) can leave an error behind that a later kernel launch reports as its own.
"""

from __future__ import annotations

import logging
from typing import Any

from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module
from accelerate.utils import send_to_device

log = logging.getLogger("layerbridge.offload")

COMPONENTS = ("text_encoder", "vae", "transformer")


def onload_for_generate(module: Any) -> None:
    """Under an offload hook (accelerate's model offload, or HostOffload) a component moves to the GPU when its forward
    is called, but `generate` on the text encoder runs the vision encoder on the image before the first forward: move
    the component now."""
    hook = getattr(module, "_hf_hook", None)
    if hook is not None and hasattr(hook, "pre_forward"):
        hook.pre_forward(module)


class HostOffload:
    """Places `pipe`'s components: each moves onto `device` when it runs, the one there before leaves for free."""

    def __init__(self, pipe: Any, device: Any, components: tuple[str, ...] = COMPONENTS, release_before: tuple[Any, ...] = ()):
        """`components` are placed by this; `release_before` are modules placed otherwise (streamed by group
        offloading) that need the GPU to themselves: the component on the GPU leaves before they run."""
        import torch

        self.device = torch.device(device)
        self.modules: dict[str, Any] = {}
        self.host: dict[str, dict[str, Any]] = {}
        self.current: str | None = None
        self.released = list(release_before)
        for name in components:
            module = getattr(pipe, name, None)
            if module is None:
                continue
            module.to("cpu")
            self.modules[name] = module
            self.host[name] = module.state_dict()
        for name, module in self.modules.items():
            add_hook_to_module(module, _OnloadHook(self, name), append=False)
        for module in self.released:
            add_hook_to_module(module, _ReleaseHook(self), append=False)
        log.info("host offload: %.1f GiB of weights kept in host memory", self.weight_bytes() / 1024**3)

    def weight_bytes(self) -> int:
        return sum(tensor_bytes(state.values()) for state in self.host.values())

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
        """Back to plain modules on the CPU, hooks off."""
        self.offload()
        for module in [*self.modules.values(), *self.released]:
            remove_hook_from_module(module)


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


class _ReleaseHook(ModelHook):
    """Takes the placed component off the GPU before a module placed otherwise runs."""

    def __init__(self, offload: HostOffload):
        self.offload = offload

    def pre_forward(self, module: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        self.offload.offload()
        return args, kwargs


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


def tensor_bytes(tensors: Any) -> int:
    """The bytes holding these tensors' data, quantised ones' inner tensors included, each storage counted once."""
    return sum(_nbytes(plain) for plain in _unique(tensors))


def _nbytes(plain: Any) -> int:
    return plain.untyped_storage().nbytes()
