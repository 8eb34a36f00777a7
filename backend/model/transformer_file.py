"""A community single-file transformer used instead of the model's own: FP8 safetensors or GGUF.

Where one is set, the model's own transformer weights (41 GB in bf16) are not downloaded at all: a 24 GB card's user
fetches an FP8 file (about 20 GB) or a GGUF one (about 11 GB at Q4) plus the rest of the pipeline (about 16 GB).

Formats read:
- safetensors in diffusers' key layout, with or without ComfyUI's `model.diffusion_model.` prefix, with the scales the
  file has (ComfyUI's `<layer>.scale_weight` or `<layer>.weight_scale`, one per tensor or per row; block-wise scales
  are refused). float8 (e4m3) linear weights stay FP8 in memory with their scales (torchao's `Float8Tensor`, weight
  only: each forward widens them to the compute dtype, so any card runs them), half the bytes of bf16; on cards with
  FP8 units the plan adds FP8 activations. Other float8 (e5m2) and scaled int8 weights are widened at load, times
  their scale.
- GGUF (any type diffusers dequantises: Q4_0 … Q8_0, K-quants, F16, BF16): the weights stay quantised in memory and are
  dequantised layer by layer in each forward, so FP8 does not go on top.

A file is checked against the layered transformer's own layout (names and shapes) before any weight is placed, so a
wrong file (another model, a truncated download) fails the load with a sentence, not a tensor error mid-way.
"""

from __future__ import annotations

import functools
import json
import re
import struct
from pathlib import Path
from typing import Any

from ..core.errors import ErrorCode, LayerBridgeError

# https://huggingface.co/<owner>/<repo>/blob|resolve/<revision>/<path in the repository>
HUB_URL = re.compile(r"^https://huggingface\.co/(?P<repo>[\w.-]+/[\w.-]+)/(?:blob|resolve)/(?P<revision>[^/]+)/(?P<path>.+)$")
COMFY_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
# Keys that carry quantisation details, not weights: scales are folded into their weights, the rest dropped.
SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
DROPPED_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")
DROPPED_KEYS = ("scaled_fp8",)
BF16_BYTES = 2


def is_gguf(spec: str) -> bool:
    return spec.lower().endswith(".gguf")


def hub_location(spec: str) -> tuple[str, str, str] | None:
    """(repository, revision, path in it) for a Hugging Face file address, else None (a local path)."""
    match = HUB_URL.match(spec)
    return (match["repo"], match["revision"], match["path"]) if match else None


def local_path(spec: str) -> Path | None:
    """The file on this machine: the path itself, or the Hub cache's copy of an address; None if not here yet."""
    where = hub_location(spec)
    if where is None:
        path = Path(spec).expanduser()
        return path if path.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(where[0], where[2], revision=where[1])
    except Exception:
        return None
    return Path(cached) if isinstance(cached, str) else None


def resolve(spec: str, on_bytes: Any = None) -> Path:
    """The local file for `spec`, downloading a Hub address first (resumable, with byte progress)."""
    where = hub_location(spec)
    if where is None:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise LayerBridgeError(ErrorCode.model_unavailable, f"the transformer file {spec} does not exist")
        return path
    from .download import fetch_file

    return fetch_file(*where, on_bytes=on_bytes)


def memory_bytes(path: Path) -> float:
    """The transformer's weight bytes once loaded: a GGUF file's own size (it stays quantised); a safetensors file's
    FP8 (e4m3) weights at a byte each (they stay FP8), every other parameter in bf16."""
    if is_gguf(str(path)):
        return float(path.stat().st_size)
    total = 0
    for key, info in _header(path).items():
        if key == "__metadata__" or _is_quantisation_detail(key):
            continue
        numel = 1
        for side in info["shape"]:
            numel *= side
        total += numel * (1 if info["dtype"] == "F8_E4M3" and len(info["shape"]) == 2 and has_torchao() else BF16_BYTES)
    return float(total)


def has_fp8_weights(spec: str) -> bool:
    """Whether a single-file transformer on this machine is safetensors with FP8 (e4m3) weights that stay FP8."""
    path = local_path(spec)
    if path is None or is_gguf(spec) or not has_torchao():
        return False
    return any(info.get("dtype") == "F8_E4M3" for key, info in _header(path).items() if key != "__metadata__")


def _header(path: Path) -> dict[str, Any]:
    """A safetensors file's header (names, dtypes, shapes), read once per version of the file: a plan asks twice."""
    stat = path.stat()
    return _read_header(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_header(path: str, size: int, mtime_ns: int) -> dict[str, Any]:
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length))


def has_torchao() -> bool:
    """torchao installed (Linux): what keeps FP8 weights packed, and the server's FP8 and int8 levers."""
    import importlib.util

    return importlib.util.find_spec("torchao") is not None


def _is_quantisation_detail(key: str) -> bool:
    return key in DROPPED_KEYS or key.endswith(SCALE_SUFFIXES + DROPPED_SUFFIXES)


def read_checkpoint(path: Path, dtype: Any) -> dict[str, Any]:
    """The file's tensors under the layered transformer's names: float8 (e4m3) matrices kept FP8 with their scales
    (torchao `Float8Tensor`s computing in `dtype`), other float8 and int8 weights widened to `dtype` with theirs."""
    import torch
    from diffusers.loaders.single_file_utils import load_single_file_checkpoint

    raw = load_single_file_checkpoint(str(path))
    checkpoint: dict[str, Any] = {}
    for key in list(raw):
        tensor = raw.pop(key)  # one reference only, so each float8 tensor is freed as soon as it is widened
        for prefix in COMFY_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        checkpoint[key] = tensor
    scales = {key: checkpoint.pop(key) for key in list(checkpoint) if key.endswith(SCALE_SUFFIXES)}
    for key in [k for k in checkpoint if _is_quantisation_detail(k)]:
        del checkpoint[key]
    for key, tensor in checkpoint.items():
        if tensor.dtype not in (torch.float8_e4m3fn, torch.float8_e5m2, torch.int8):
            continue
        layer = key.removesuffix(".weight")
        scale = scales.get(layer + ".scale_weight", scales.get(layer + ".weight_scale"))
        if scale is None and tensor.dtype == torch.int8:
            raise LayerBridgeError(ErrorCode.model_unavailable, f"the transformer file {path} has int8 weights "
                                   f"without a scale ({key}): not a format the server reads")
        scale = torch.ones((), dtype=torch.float32) if scale is None else scale.to(torch.float32)
        if scale.numel() == 1:
            scale = scale.reshape(*[1] * tensor.dim())
        elif scale.numel() == tensor.shape[0]:  # one scale per output row
            scale = scale.reshape(-1, *[1] * (tensor.dim() - 1))
        else:
            raise LayerBridgeError(
                ErrorCode.model_unavailable,
                f"the transformer file {path} scales {key} in blocks (scale shape {tuple(scale.shape)}), a layout "
                f"the server does not read: use a file with one scale per tensor or per row, or a GGUF file",
            )
        if tensor.dtype == torch.float8_e4m3fn and tensor.dim() == 2 and has_torchao():
            checkpoint[key] = fp8_weight(tensor, scale, dtype)
        else:
            checkpoint[key] = (tensor.to(torch.float32) * scale).to(dtype)
    return checkpoint


def fp8_weight(data: Any, scale: Any, dtype: Any) -> Any:
    """An FP8 matrix and its scale (one, or one per row, shaped to broadcast) as torchao's weight-only `Float8Tensor`:
    its value is data × scale, widened to `dtype` in each forward."""
    from torchao.quantization import Float8Tensor

    rows, columns = data.shape
    block = [rows, columns] if scale.shape[0] == 1 else [1, columns]
    return Float8Tensor(data, scale.reshape(rows // block[0], 1), block, dtype=dtype)


def is_fp8_weight(tensor: Any) -> bool:
    return type(tensor).__name__ == "Float8Tensor"


def empty_transformer(model: str) -> Any:
    """The layered transformer of `model`'s config on the meta device: its layout, no weights."""
    import torch
    from diffusers import QwenImageTransformer2DModel

    config = QwenImageTransformer2DModel.load_config(model, subfolder="transformer")
    with torch.device("meta"):
        return QwenImageTransformer2DModel.from_config(config)


def check_layout(checkpoint: dict[str, Any], layout: Any, source: str) -> None:
    """Raise model_unavailable, in words, where the file is not the layered transformer (names or shapes differ)."""
    expected = layout.state_dict()
    missing = [k for k in expected if k not in checkpoint]
    wrong = [
        f"{k} {tuple(_shape(checkpoint[k]))} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in checkpoint and tuple(_shape(checkpoint[k])) != tuple(v.shape)
    ]
    if not missing and not wrong:
        return
    found = sum(1 for k in checkpoint if k in expected)
    detail = []
    if missing:
        detail.append(f"{len(missing)} of its {len(expected)} weights are missing (first: {', '.join(missing[:3])})")
    if wrong:
        detail.append(f"{len(wrong)} have another shape (first: {wrong[0]})")
    raise LayerBridgeError(
        ErrorCode.model_unavailable,
        f"the transformer file {source} is not a Qwen-Image-Layered transformer: {'; '.join(detail)}; "
        f"{found} of its {len(checkpoint)} tensors match. Use a file made from Qwen-Image-Layered, or unset "
        f"--transformer-file to use the model's own.",
    )


def _shape(tensor: Any) -> tuple[int, ...]:
    return tuple(getattr(tensor, "quant_shape", tensor.shape))  # a GGUF tensor's shape is its packed bytes'


def unpack_outside_linears(checkpoint: dict[str, Any], layout: Any, dtype: Any) -> None:
    """GGUF or FP8 tensors of anything but a linear layer (an embedding table, say), widened to `dtype` in place:
    only linear layers compute with packed weights (diffusers' GGUF layers, torchao's FP8 tensors), and a converter
    may have packed others too."""
    import torch

    linear_weights = {f"{n}.weight" for n, m in layout.named_modules() if isinstance(m, torch.nn.Linear)}
    for key, tensor in checkpoint.items():
        if key in linear_weights:
            continue
        if hasattr(tensor, "quant_type"):
            from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

            checkpoint[key] = dequantize_gguf_tensor(tensor).as_subclass(torch.Tensor).to(dtype)
        elif is_fp8_weight(tensor):
            checkpoint[key] = tensor.dequantize().to(dtype)


def widen_fp8_linears(module: Any) -> None:
    """Every FP8 weight of a module's linear layers widened to its compute dtype, in place (for streamed placements,
    whose hooks move plain tensors)."""
    import torch

    for linear in module.modules():
        if isinstance(linear, torch.nn.Linear):
            widen_fp8_weight(linear)


def widen_fp8_weight(linear: Any) -> None:
    """A linear layer's FP8 weight, if it has one, replaced by a plain one in its compute dtype."""
    import torch

    if is_fp8_weight(linear.weight):
        linear.weight = torch.nn.Parameter(linear.weight.dequantize(), requires_grad=False)


def load(path: Path, model: str, dtype: Any, source: str | None = None) -> Any:
    """The layered transformer with the file's weights and the model's config (`model`: its local folder)."""
    return from_checkpoint(read_checkpoint(path, dtype), model, dtype, is_gguf(str(path)), source or str(path))


def from_checkpoint(checkpoint: dict[str, Any], model: str, dtype: Any, gguf: bool, source: str) -> Any:
    """The layered transformer from tensors under its own names (GGUF-packed ones where `gguf`), checked first."""
    from diffusers import QwenImageTransformer2DModel

    layout = empty_transformer(model)
    check_layout(checkpoint, layout, source)
    unpack_outside_linears(checkpoint, layout, dtype)
    kwargs: dict[str, Any] = {"config": model, "subfolder": "transformer", "torch_dtype": dtype}
    if gguf:
        from diffusers import GGUFQuantizationConfig

        kwargs["quantization_config"] = GGUFQuantizationConfig(compute_dtype=dtype)
    return QwenImageTransformer2DModel.from_single_file(checkpoint, **kwargs)
