"""Where the model's weights live: the memory modes, chosen from the free VRAM and applied to a pipeline."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import transformer_file as single_file

GIB = 1024**3
# Qwen-Image-Layered's weights in bf16, in bytes as its files hold them (what a downloaded folder is sized by;
# counted from the published configs on the meta device): transformer 20.43 B parameters (38.05 GiB), Qwen2.5-VL-7B
# text encoder 8.29 B (15.45 GiB), VAE 0.13 B.
DEFAULT_COMPONENT_BYTES = {"transformer": 40_860_814_464, "text_encoder": 16_584_333_984, "vae": 253_795_432}
# Room beside the weights, measured at 640 with 4 layers on an H200 (docs/benchmarks.md) plus about 1 GiB for the
# CUDA context and the allocator's slack. All on the GPU: 6.7 GiB of activations, caption cache and VAE decode above
# the weights (peak 60.5 GiB with 53.8 GiB of weights). One component at a time: 2.4 GiB above the FP8 transformer
# (peak 21.4 GiB under a 24 GiB cap).
HEADROOM_BYTES = 8 * GIB
OFFLOAD_HEADROOM_BYTES = 3 * GIB
# RAM left for the system and the server beside host offload's copy of every weight.
HOST_RAM_SPARE_BYTES = 6 * GIB
# Group offload with CUDA streams page-locks a host copy of every streamed weight at load, and PyTorch's pinned
# allocator rounds each buffer up to a power of two: pinned bytes per weight byte, from the published configs' tensor
# shapes (the transformer's 38.05 GiB take 60.1 GiB pinned, the bf16 text encoder's 15.45 GiB take 29.2 GiB).
PINNED_BYTES_FACTOR = {"transformer": 1.58, "text_encoder": 1.89, "vae": 1.08}
# The text encoder with int8 linear layers: its embedding table and vision tower stay bf16.
INT8_TEXT_ENCODER_SCALE = 0.6


class MemoryMode(str, enum.Enum):
    gpu = "gpu"  # every component on the GPU: fastest
    model_offload = "model_offload"  # one component on the GPU at a time (diffusers model CPU offload)
    host_offload = "host_offload"  # the same placement, every weight kept in host memory: switching is one copy
    group_offload = "group_offload"  # transformer blocks streamed to the GPU as needed (CUDA streams)
    sequential_offload = "sequential_offload"  # leaf by leaf: smallest VRAM, slowest
    cpu = "cpu"  # no GPU: float32 on the CPU (tiny models, tests)


# the transformer's blocks moved to the GPU as each runs, every forward
STREAMED = (MemoryMode.group_offload, MemoryMode.sequential_offload)


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


@dataclass
class MemoryChoice:
    mode: MemoryMode
    reason: str
    fp8: bool = False
    compile: bool = False
    # group offload only: the text encoder in int8, placed whole on the GPU while it runs instead of streamed
    text_encoder_int8: bool = False
    # the transformer's linear layers in int8 (weights only, products in bf16): cards without FP8 units
    transformer_int8: bool = False
    # an FP8 transformer file's weights kept FP8, products in bf16 (where `fp8` is off)
    fp8_file_weights: bool = False
    # a GGUF transformer file's weights, kept quantised and dequantised layer by layer in each forward
    gguf_weights: bool = False
    # group offload: every streamed weight page-locked at load (fastest); off where RAM cannot hold the pinned copies,
    # and each group is page-locked as it streams instead
    pin_streamed: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "reason": self.reason, "fp8": self.fp8, "compile": self.compile,
                "text_encoder_int8": self.text_encoder_int8, "transformer_int8": self.transformer_int8}

    def transformer_weights(self) -> str:
        """The transformer's linear layers in words (doctor)."""
        if self.gguf_weights:
            return "GGUF, the file's own quantised weights"
        if self.fp8:
            return "FP8 weights and activations"
        if self.transformer_int8:
            return "int8 weights, products unquantised (bf16 on a GPU)"
        if self.fp8_file_weights:
            return "FP8 weights from the file, products unquantised (bf16 on a GPU)"
        return "unquantised (bf16 on a GPU)"


def supports_fp8(device: DeviceInfo) -> bool:
    """FP8 matrix units, torchao to drive them, and kernels for every product the transformer asks of them."""
    return has_fp8_units(device) and _has_torchao() and device.fp8_problem is None


def supports_int8(device: DeviceInfo) -> bool:
    """int8 weights need torchao only: the products run in bf16 on any CUDA card (and on the CPU, for tests)."""
    return device.kind in ("cuda", "cpu") and _has_torchao()


def _fp8_missing(device: DeviceInfo) -> str:
    """Why FP8 cannot run on this device, in words."""
    if not has_fp8_units(device):
        return "this GPU has no FP8 units (Ada or Hopper needed)"
    return device.fp8_problem or "torchao is not installed"


def has_fp8_units(device: DeviceInfo) -> bool:
    """Ada (8.9), Hopper (9.0) or newer."""
    return device.kind == "cuda" and device.capability is not None and device.capability >= (8, 9)


def _has_torchao() -> bool:
    return single_file.has_torchao()


def plan(device: DeviceInfo, model: str, memory: str = "auto", quantize: str = "auto", compile: str = "auto",
         transformer_file: str | None = None) -> MemoryChoice:
    """The memory mode plus the load-time levers: FP8 or int8 transformer weights and regional compilation.
    `transformer_file`: a single-file transformer used instead of the model's (sized from the file once it is on
    this machine)."""
    sizes = component_bytes(model, transformer_file)  # read once: a file's header, a folder's listing
    choice = choose_mode(device, model, memory, sizes=sizes)
    gguf = bool(transformer_file) and single_file.is_gguf(transformer_file)
    fp8_file = bool(transformer_file) and not gguf and single_file.has_fp8_weights(transformer_file)
    lever: str | None = None  # "FP8" or "int8": the transformer's linear layers quantised at load
    halved: MemoryChoice | None = None  # the mode for the transformer at half its bytes, where auto weighed it
    # where the bf16 transformer does not fit: FP8 on cards with FP8 units, else int8 weights (half the bytes too)
    halving = "FP8" if supports_fp8(device) else "int8" if device.kind == "cuda" and supports_int8(device) else None
    if gguf:
        if device.kind == "cuda" or quantize in ("fp8", "int8"):
            choice.reason += "; transformer from a GGUF file: its own quantised weights, no FP8 or int8 on top"
    elif fp8_file:
        # the weights are FP8 already (and sized so above): FP8 activations cost no memory, only exactness
        if quantize in ("auto", "fp8") and supports_fp8(device):
            lever = "FP8"
            choice.reason += "; transformer from an FP8 file: its FP8 weights, with FP8 activations on this card"
        else:
            choice.reason += "; transformer from an FP8 file: its FP8 weights kept, products unquantised"
            if quantize == "fp8":
                choice.reason += f" (FP8 activations were asked for, but {_fp8_missing(device)})"
            elif quantize == "int8":
                choice.reason += " (int8 was asked for, but the file's weights take one byte each already)"
    elif quantize == "fp8":
        if supports_fp8(device):
            lever = "FP8"
        else:
            choice.reason += f"; FP8 was asked for, but {_fp8_missing(device)}"
            if halving == "int8":
                choice.reason += " (--quantize int8 or auto halves the transformer on this card)"
    elif quantize == "int8":
        if supports_int8(device):
            lever = "int8"
        else:
            choice.reason += "; int8 was asked for, but " + ("torchao is not installed" if device.kind in ("cuda", "cpu")
                                                            else "it runs on CUDA cards and the CPU only")
    elif quantize == "auto" and halving and memory == "auto" and choice.mode not in (MemoryMode.gpu, MemoryMode.cpu):
        halved = choose_mode(device, model, "auto", transformer_scale=0.5, sizes=sizes)
        # FP8 also doubles the products' speed; int8 weights (products in bf16) only where they end the streaming
        worth = halving == "FP8" or (choice.mode in STREAMED and halved.mode not in STREAMED)
        if halved.mode != choice.mode and worth:
            lever = halving
    elif quantize == "auto" and halving and choice.mode in (MemoryMode.model_offload, MemoryMode.host_offload):
        # one component at a time was asked for: FP8 (or int8) where the bf16 transformer alone does not fit
        if sizes["transformer"] + OFFLOAD_HEADROOM_BYTES > device.vram_free:
            lever = halving
            choice.reason += f"; {halving} transformer weights: the bf16 transformer does not fit"
    if lever and memory == "auto" and device.kind == "cuda" and not fp8_file:
        # the mode is the one for the quantised transformer's size (an FP8 file is sized as FP8 already)
        halved = halved or choose_mode(device, model, "auto", transformer_scale=0.5, sizes=sizes)
        asked = f" (--quantize {quantize})" if quantize != "auto" else ""
        choice = MemoryChoice(halved.mode, halved.reason + f" with {lever} transformer weights{asked}")
    fp8, int8 = lever == "FP8", lever == "int8"
    on_cpu_by_name = choice.mode == MemoryMode.cpu and device.kind != "cpu"
    if on_cpu_by_name:
        fp8 = int8 = False  # --memory cpu on a GPU machine: the GPU's levers do not apply
    if int8 and quantize == "auto" and not has_fp8_units(device):
        choice.reason += " (this GPU has no FP8 units: int8 weights, products in bf16)"
    if fp8 and choice.mode in STREAMED:
        # Streamed FP8 weights failed in cuBLAS (CUBLAS_STATUS_NOT_SUPPORTED, on an H200 with torchao 0.17) with a
        # short prompt, as FP8 on the GPU later did (see fp8_granularity): not measured again since.
        fp8 = False
        choice.reason += "; FP8 is off: streamed (group or sequential) offloading cannot run FP8 weights"
    fp8_file_weights = fp8_file and not fp8
    if fp8_file_weights and choice.mode in STREAMED:
        fp8_file_weights = False  # streaming hooks move plain tensors: widened at load
        choice.reason += "; the file's FP8 weights are widened to bf16 at load for streaming"
    if int8 and choice.mode in STREAMED:
        # auto takes int8 only where it ends the streaming; int8 weights under diffusers' streaming hooks are not tested
        int8 = False
        choice.reason += "; int8 is off: streamed (group or sequential) offloading runs bf16 weights"
    if not fp8 and device.fp8_problem and quantize == "auto" and choice.mode not in (MemoryMode.gpu, MemoryMode.cpu):
        choice.reason += f"; no FP8 {'activations' if fp8_file else 'weights'}: {device.fp8_problem}"
    choice.fp8, choice.transformer_int8, choice.fp8_file_weights = fp8, int8, fp8_file_weights
    choice.gguf_weights = gguf
    quantised = (fp8 or int8) and not fp8_file  # an FP8 file's transformer is sized as FP8 already
    placed_sizes = dict(sizes, transformer=sizes["transformer"] * (0.5 if quantised else 1.0))
    if memory != "auto" and device.kind == "cuda":
        short = _named_mode_short(choice, device, placed_sizes)
        if short:
            auto = plan(device, model, "auto", quantize, compile, transformer_file).mode.value
            choice.reason += f"; {short}: expect out_of_memory (--memory auto picks {auto} on this card)"
    if choice.mode == MemoryMode.host_offload:
        short = _ram_short(placed_sizes)
        if short is not None:
            need, ram = short
            choice.mode = MemoryMode.model_offload
            choice.reason += (
                f"; host offload keeps every weight in RAM and needs about {need / GIB:.0f} GiB, this machine has "
                f"{ram / GIB:.0f} GiB: model offload instead"
            )
    if choice.mode == MemoryMode.group_offload and quantize != "none" and device.kind == "cuda" and _has_torchao():
        # Streamed, the text encoder moves all its 16 GB over PCIe for every caption token (0.44 s a token on an
        # H200's host); in int8 it fits whole beside nothing else, and the transformer's turn takes it off again.
        int8_sizes = dict(sizes, text_encoder=sizes["text_encoder"] * INT8_TEXT_ENCODER_SCALE)
        if device.vram_free >= int8_sizes["text_encoder"] + OFFLOAD_HEADROOM_BYTES:
            choice.text_encoder_int8 = True
            choice.reason += "; text encoder in int8, whole on the GPU while it runs"
            if memory == "auto" and _one_at_a_time_fits(device, int8_sizes):
                # A transformer small enough to fit whole too (a 4-bit GGUF file on a 16 GB card): no streaming at all.
                choice.mode = MemoryMode.host_offload
                choice.reason += (
                    f", and the transformer ({int8_sizes['transformer'] / GIB:.1f} GiB) fits whole too: one component on "
                    f"the GPU at a time, every weight kept in RAM, nothing streamed"
                )
    if choice.mode == MemoryMode.group_offload and device.kind == "cuda":
        streamed_sizes = dict(sizes)  # the plan never streams quantised transformer weights (above)
        if fp8_file:
            streamed_sizes["transformer"] *= 2  # an FP8 file's weights, widened to bf16 at load for streaming
        host_bytes = {name: PINNED_BYTES_FACTOR[name] * size for name, size in streamed_sizes.items()}
        if choice.text_encoder_int8:  # placed whole while it runs: its host copy is not page-locked
            host_bytes["text_encoder"] = sizes["text_encoder"] * INT8_TEXT_ENCODER_SCALE
        short = _ram_short(host_bytes)
        if short is not None:
            need, ram = short
            choice.pin_streamed = False
            choice.reason += (
                f"; streamed weights page-locked group by group as they stream (slower): page-locked all at once they "
                f"need about {need / GIB:.0f} GiB of RAM, this machine has {ram / GIB:.0f} GiB"
            )
    # auto: only where torch.compile's GPU backend (Triton) is installed (Windows wheels of torch usually lack it),
    # and not with streamed offloading, whose per-module hooks inside every block would make torch recompile per
    # block until its limit and then run eagerly anyway.
    streamed = choice.mode in STREAMED
    # auto: not with GGUF weights either, whose layers dequantise in Python at every call: not measured compiled.
    choice.compile = device.kind == "cuda" and not on_cpu_by_name and (
        compile == "on" or (compile == "auto" and _has_triton() and not streamed and not gguf)
    )
    if gguf and compile == "auto" and device.kind == "cuda":
        choice.reason += "; compilation off with GGUF weights (--compile on to try it)"
    if streamed and memory == "auto" and not transformer_file and device.kind == "cuda":
        # Where only the transformer is streamed for its size, a smaller single-file transformer would not be.
        room = device.vram_free - OFFLOAD_HEADROOM_BYTES
        text_encoder = sizes["text_encoder"] * (INT8_TEXT_ENCODER_SCALE if choice.text_encoder_int8 else 1.0)
        if text_encoder <= room:
            choice.reason += (
                f"; a GGUF transformer file of at most {room / GIB:.1f} GiB (--transformer-file; Q8_0 is about "
                f"20 GiB, Q4_0 about 11 GiB) would be placed whole instead of streamed"
            )
    return choice


def _named_mode_short(choice: MemoryChoice, device: DeviceInfo, sizes: dict[str, float]) -> str:
    """Why a mode asked for by name does not fit the free VRAM, in words ("" where it fits or is streamed); `sizes`:
    the components' bytes as placed."""
    placed = dict(sizes)
    if choice.text_encoder_int8:
        placed["text_encoder"] *= INT8_TEXT_ENCODER_SCALE
    free = device.vram_free
    if choice.mode == MemoryMode.gpu and sum(placed.values()) + HEADROOM_BYTES > free:
        need = sum(placed.values()) + HEADROOM_BYTES
        return f"all weights on the GPU need about {need / GIB:.1f} GiB, {free / GIB:.1f} GiB are free"
    if choice.mode in (MemoryMode.host_offload, MemoryMode.model_offload):
        name, largest = max(placed.items(), key=lambda item: item[1])
        if largest + OFFLOAD_HEADROOM_BYTES > free:
            need = largest + OFFLOAD_HEADROOM_BYTES
            return f"the {name.replace('_', ' ')} alone needs about {need / GIB:.1f} GiB, {free / GIB:.1f} GiB are free"
    return ""


def _one_at_a_time_fits(device: DeviceInfo, sizes: dict[str, float]) -> bool:
    """Host offload with these component sizes: each fits the GPU by itself, and RAM holds them all."""
    return max(sizes.values()) + OFFLOAD_HEADROOM_BYTES <= device.vram_free and _ram_short(sizes) is None


def _ram_short(sizes: dict[str, float]) -> tuple[float, int] | None:
    """(bytes needed, bytes of RAM) where RAM cannot hold these host bytes (every weight as host offload keeps them,
    or page-locked copies as group offload makes them), else None."""
    need = sum(sizes.values()) + HOST_RAM_SPARE_BYTES
    ram = host_ram_bytes()
    return (need, ram) if ram is not None and ram < need else None


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


def host_ram_bytes() -> int | None:
    """The machine's RAM (psutil comes with accelerate), or None where it cannot be read."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:
        return None


def _has_triton() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None


# Linear layers fed the image tokens: thousands of rows a call. The others (the text stream, the modulation and the
# time embedding) get the caption's tokens or a single row: from 1 to about 520.
IMAGE_STREAM_LINEARS = (".attn.to_q", ".attn.to_k", ".attn.to_v", ".attn.to_out.", ".img_mlp.", ".img_in", ".proj_out")
# Rows an FP8 kernel check feeds each kind of layer: what a job feeds it, at its extremes.
IMAGE_STREAM_ROWS = (4096,)
FEW_ROWS = (1, 6, 300)


def fp8_granularity(name: str) -> str:
    """"row" (a scale per row of activations and per output channel) for the image stream, "tensor" elsewhere.

    On Hopper with CUDA 12.9 and later, torch runs the per-row FP8 product through cuBLASLt, which has no kernel for
    a few rows against a long inner dimension: the text stream's MLP down-projection (12,288 inputs) fails with
    CUBLAS_STATUS_NOT_SUPPORTED for 1 and 6 rows (the negative prompt's tokens), and runs for 300 (measured on an
    H200, torch 2.11 + CUDA 13; pytorch/ao#4582). One scale per tensor ran every shape there; those layers carry a
    few hundred tokens at most, a small part of the work.
    """
    return "row" if image_stream(name) else "tensor"


def image_stream(name: str) -> bool:
    """Whether a transformer's linear layer is fed the image tokens."""
    return any(part in "." + name for part in IMAGE_STREAM_LINEARS)


def fp8_config(granularity: str) -> Any:
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor

    return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow() if granularity == "row" else PerTensor())


def enable_fp8(transformer: Any, staging: str | None = None) -> None:
    """FP8 weights and activations with dynamic scales (torchao), for the transformer's linear layers."""
    configs = {g: fp8_config(g) for g in ("row", "tensor")}
    quantize_linears(transformer, lambda name: configs[fp8_granularity(name)], staging)


def enable_int8(module: Any, staging: str | None = None) -> None:
    """int8 weights (one scale per output channel; activations and products stay bf16) for a module's linear
    layers: half the bytes. The text encoder's on cards that stream the model, the transformer's on cards without
    FP8 units where bf16 does not fit."""
    from torchao.quantization import Int8WeightOnlyConfig

    config = Int8WeightOnlyConfig(version=2)  # torchao's Int8Tensor; version 1 is deprecated
    quantize_linears(module, lambda name: config, staging)


def plan_checked(device: DeviceInfo, planned: Callable[[], MemoryChoice],
                 shapes: Callable[[], list[tuple[str, int, int]]]) -> MemoryChoice:
    """The plan; where it takes FP8 on a CUDA card, FP8's kernel check on the transformer's layer shapes first, and
    where that fails, the plan again without FP8 (the reason says why)."""
    choice = planned()
    if choice.fp8 and device.kind == "cuda":
        device.fp8_problem = fp8_kernel_problem(shapes())
        if device.fp8_problem:
            return planned()
    return choice


def quantize_linears(module: Any, config_for: Callable[[str], Any], staging: str | None = None) -> None:
    """Quantise a module's linear layers in place, each with the torchao config `config_for(name)` gives.

    With `staging`, the module stays where it is (the CPU, for the offload modes) and each linear layer is
    quantised on the staging device, then moved back: the GPU computes the scales without ever holding more than
    one unquantised layer, and the CPU does not grind through billions of parameters.
    """
    import torch
    from torchao.quantization import quantize_

    home = next(module.parameters()).device
    for name, linear in [(n, m) for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)]:
        if staging is not None:
            linear.to(staging)
        single_file.widen_fp8_weight(linear)  # an FP8 file's weight: widened here first, one layer at a time
        quantize_(linear, config_for(name))  # quantises the layer in place
        if staging is not None:
            linear.to(home)


def linear_shapes(module: Any) -> list[tuple[str, int, int]]:
    """One (name, inputs, outputs) per distinct FP8 granularity and shape among a module's linear layers."""
    import torch

    seen: dict[tuple[str, int, int], str] = {}
    for name, linear in module.named_modules():
        if isinstance(linear, torch.nn.Linear):
            seen.setdefault((fp8_granularity(name), linear.in_features, linear.out_features), name)
    return [(name, k, n) for (_, k, n), name in seen.items()]


def fp8_kernel_check(shapes: list[tuple[str, int, int]], device: str = "cuda",
                     granularity: Callable[[str], str] | None = None) -> list[dict[str, Any]]:
    """Runs a random FP8 linear layer of each shape with the rows a job feeds it: one result per shape and row count.

    torchao quantises any layer, but whether the card's library has a kernel for a product shows only when it runs:
    this finds out at load, in about a second, instead of in a user's first job. `granularity` maps a layer's name
    to "row" or "tensor" (the server's choice, fp8_granularity, unless given: the benchmark compares others).
    """
    import torch
    from torchao.quantization import quantize_

    results = []
    for name, k, n in shapes:
        kind = (granularity or fp8_granularity)(name)
        linear = torch.nn.Linear(k, n, dtype=torch.bfloat16, device=device)
        quantize_(linear, fp8_config(kind))
        for rows in IMAGE_STREAM_ROWS if image_stream(name) else FEW_ROWS:
            case: dict[str, Any] = {"layer": name, "in": k, "out": n, "rows": rows, "granularity": kind}
            try:
                with torch.no_grad():
                    linear(torch.randn(rows, k, dtype=torch.bfloat16, device=device))
                if torch.device(device).type == "cuda":
                    torch.cuda.synchronize()
            except Exception as e:
                case["error"] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
            results.append(case)
        del linear
    return results


def fp8_kernel_problem(shapes: list[tuple[str, int, int]], device: str = "cuda") -> str | None:
    """The first failing case of `fp8_kernel_check`, in words, or None where every product runs."""
    for case in fp8_kernel_check(shapes, device):
        if "error" in case:
            return (f"FP8 failed a check on this card: {case['layer']} ({case['in']} → {case['out']}, "
                    f"{case['rows']} rows, per-{case['granularity']} scales): {case['error']}")
    return None


def enable_compile(transformer: Any) -> None:
    """Regional compilation: each repeated transformer block's forward is compiled once, cached on disk across starts.

    The blocks' `forward` is compiled, not their whole call (what `compile_repeated_blocks` does): step caches such as
    the first-block cache wrap each block's forward in a hook object of its own; compiled inside the call, every hook
    instance is a new guard, so torch recompiles per block until its recompile limit and then runs every block eagerly.
    Compiled below the hooks, all blocks share one graph with or without a cache.
    """
    import functools

    import torch

    use_compile_cache()
    torch._inductor.config.fx_graph_cache = True
    compiled = torch.compile(_call)
    for block in repeated_blocks(transformer):  # between jobs: no step-cache hook is on the blocks
        block.forward = functools.partial(compiled, type(block).forward, block)


def use_compile_cache() -> None:
    """torch's compile cache (inductor's graphs and kernels) in the user cache folder: each machine compiles once, not
    after every reboot that empties the temporary folder, torch's default. A folder chosen with
    TORCHINDUCTOR_CACHE_DIR stays."""
    import os

    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    from torch._inductor.utils import clear_caches

    from ..core.settings import cache_dir

    # torch writes its default into the variable the first time anything asks (importing diffusers does), so the
    # default there is not a user's choice
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen is None or os.path.abspath(chosen) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir() / "inductor")
        clear_caches()  # lookups torch memoised under the old folder


def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    return function(*args, **kwargs)


def disable_compile(transformer: Any) -> None:
    """Back to eager blocks (benchmarks compare both on one loaded model)."""
    for block in repeated_blocks(transformer):
        vars(block).pop("forward", None)


def repeated_blocks(transformer: Any) -> list[Any]:
    names = set(getattr(transformer, "_repeated_blocks", None) or ())
    return [m for m in transformer.modules() if type(m).__name__ in names]


def probe_device() -> DeviceInfo:
    import torch

    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        props = torch.cuda.get_device_properties(0)
        return DeviceInfo("cuda", props.name, total, free, (props.major, props.minor))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return DeviceInfo("mps", "Apple GPU")
    return DeviceInfo("cpu", "CPU")


def component_bytes(model: str, transformer_file: str | None = None) -> dict[str, float]:
    """Weight bytes per component once loaded: read from a local folder, else the default model's known sizes; the
    transformer's from a single-file transformer where one is set and on this machine."""
    root = Path(model)
    if not root.is_dir():
        sizes = dict(DEFAULT_COMPONENT_BYTES)
    else:
        sizes = {}
        for sub in ("transformer", "text_encoder", "vae"):
            files = list((root / sub).glob("*.safetensors")) + list((root / sub).glob("*.bin"))
            sizes[sub] = float(sum(f.stat().st_size for f in files))
    path = single_file.local_path(transformer_file) if transformer_file else None
    if path is not None:
        sizes["transformer"] = single_file.memory_bytes(path)
    return sizes


def choose_mode(device: DeviceInfo, model: str, requested: str = "auto", transformer_scale: float = 1.0,
                sizes: dict[str, float] | None = None) -> MemoryChoice:
    """The memory mode from the free VRAM; `sizes`: the components' weight bytes (default: component_bytes(model))."""
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
    sizes = dict(sizes or component_bytes(model))
    sizes["transformer"] *= transformer_scale
    total = sum(sizes.values())
    largest = max(sizes.values())
    free = device.vram_free
    free_gib = free / GIB
    if free >= total + HEADROOM_BYTES:
        return MemoryChoice(MemoryMode.gpu, f"{free_gib:.0f} GiB free VRAM ≥ {(total + HEADROOM_BYTES) / GIB:.0f} GiB for all weights")
    if free >= largest + OFFLOAD_HEADROOM_BYTES:
        # host offload: Fast in 32.5 s under a 24 GiB cap on an H200 (FP8), 2.3x all-on-the-GPU; the plan falls back
        # to model offload where RAM cannot hold every weight
        return MemoryChoice(
            MemoryMode.host_offload,
            f"{free_gib:.0f} GiB free VRAM: enough for the largest component ({largest / GIB:.0f} GiB), not for all "
            f"({total / GIB:.0f} GiB); one component on the GPU at a time, every weight kept in RAM",
        )
    if free >= 3 * GIB:
        return MemoryChoice(MemoryMode.group_offload, f"only {free_gib:.0f} GiB free VRAM: streaming transformer blocks")
    return MemoryChoice(MemoryMode.sequential_offload, f"only {free_gib:.1f} GiB free VRAM: leaf-by-leaf offload")


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


def model_dtype(device: DeviceInfo) -> Any:
    """bf16 on CUDA; float32 elsewhere (the tiny model on the CPU)."""
    import torch

    return torch.bfloat16 if device.kind == "cuda" else torch.float32


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
