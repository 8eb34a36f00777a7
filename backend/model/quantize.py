"""Quantised linear layers (torchao): FP8 weights and activations, int8 weights, and the check that the card's
libraries have a kernel for every FP8 product the transformer asks for."""

from __future__ import annotations

from typing import Any, Callable

from . import transformer_file as single_file


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
