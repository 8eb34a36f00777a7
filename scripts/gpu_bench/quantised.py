"""Phases that quantise the transformer for good: FP8 (on the GPU, or staged from the CPU), int8 weights, FP8's
kernel check, and the transformer swapped for a GGUF or a scaled-FP8 copy loaded through the server's single-file
loader; and GGUF packing on the GPU."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from backend.model.plan import GIB
from backend.core.options import PRESETS


def _round_half_away(x: Any) -> Any:
    """Round half away from zero, as gguf's numpy quantisers do (np_roundf), operation for operation."""
    import torch

    magnitude = x.abs()
    whole = magnitude.floor()
    return torch.sign(x) * (whole + (2 * (magnitude - whole)).floor())


def gguf_pack(weight: Any, kind: str) -> Any:
    """A 2-D weight as GGUF Q8_0 or Q4_0 blocks of 32 values along each row, byte for byte what gguf's quantiser
    writes (on whatever device the weight is: a 20 B-parameter transformer packs in seconds on a GPU, where gguf's
    numpy code would take minutes). Returns uint8 rows of 34 (Q8_0) or 18 (Q4_0) bytes per block."""
    import torch

    rows = weight.shape[0]
    blocks = weight.float().reshape(-1, 32)
    if kind == "q8_0":
        d = blocks.abs().amax(-1, keepdim=True) / 127
        inverse = torch.where(d == 0, torch.zeros_like(d), 1 / d)
        q = _round_half_away(blocks * inverse).to(torch.int8).view(torch.uint8)
    elif kind == "q4_0":
        d = blocks.gather(-1, blocks.abs().argmax(-1, keepdim=True)) / -8
        inverse = torch.where(d == 0, torch.zeros_like(d), 1 / d)
        nibbles = torch.trunc(blocks * inverse + 8.5).clamp(0, 15).to(torch.uint8).reshape(-1, 2, 16)
        q = nibbles[:, 0] | (nibbles[:, 1] << 4)
    else:
        raise ValueError(f"unknown GGUF type {kind!r}: q8_0 or q4_0")
    return torch.cat([d.half().view(torch.uint8), q], -1).reshape(rows, -1)


class QuantisedPhases:
    """Mixed into the runner's Bench: uses its job(), _place(), record() and its pipeline."""

    def phase_fp8(self, staged: bool = False) -> None:
        """FP8 weights and activations (torchao) for the transformer, for good: later phases run FP8."""
        from backend.model.quantize import enable_fp8

        if not self.cuda:
            self.record({"phase": "fp8", "skipped": "no GPU"})
            return
        self._place("gpu")
        t = time.monotonic()
        if staged:  # as the server does where bf16 does not fit: the transformer on the CPU, quantised layer by layer
            self.pipe.transformer.to("cpu")
            moved = time.monotonic() - t
            t = time.monotonic()
            enable_fp8(self.pipe.transformer, staging="cuda")
        else:
            enable_fp8(self.pipe.transformer)
        seconds = time.monotonic() - t
        self.fp8 = True
        self.engine.memory.fp8 = True
        self._place("gpu")
        self.torch.cuda.empty_cache()
        row = {"phase": "fp8-staged-quantize" if staged else "fp8-quantize", "seconds": round(seconds, 1),
               "vram_gib": round(self.torch.cuda.memory_allocated() / GIB, 2)}
        if staged:
            row["to_cpu_s"] = round(moved, 1)
        self.record(row)

    def phase_fp8staged(self) -> None:
        """The fp8 phase the way a 24 GB card gets there: quantised on the GPU one layer at a time from the CPU."""
        self.phase_fp8(staged=True)

    def phase_int8(self) -> None:
        """int8 transformer weights, for good, reached as the server reaches them on a 24 GB card without FP8 units:
        the transformer on the CPU, quantised one linear layer at a time on the GPU. Fast all on the GPU (a bf16 Fast
        first for reference, where none ran yet), then host offload under a 24 GiB cap: the first job after placing,
        then one more."""
        from backend.model.quantize import enable_int8
        from backend.model.offload import tensor_bytes

        if not self.cuda and self.args.arch == "full":
            self.record({"phase": "int8", "skipped": "no GPU"})
            return
        if self.fp8:
            self.record({"phase": "int8", "skipped": "runs before fp8 (it quantises the bf16 weights)"})
            return
        self._place("gpu")
        if ("fast", PRESETS["fast"].steps) not in self.first_latents:
            self.job("int8-reference-bf16", "fast")
        t = time.monotonic()
        self.pipe.transformer.to("cpu")
        moved = time.monotonic() - t
        t = time.monotonic()
        enable_int8(self.pipe.transformer, staging="cuda" if self.cuda else "cpu")
        seconds = time.monotonic() - t
        self.int8 = True
        self._place("gpu")
        weight_gib = tensor_bytes(self.pipe.transformer.state_dict().values()) / GIB
        self.record({"phase": "int8-staged-quantize", "seconds": round(seconds, 1), "to_cpu_s": round(moved, 1),
                     "transformer_gib": round(weight_gib, 2)})
        self.job("int8", "fast")
        self._offloaded_jobs("int8-card24", 24)

    def phase_fp8check(self) -> None:
        """FP8 products of every distinct linear shape of the transformer with the rows a job feeds them: per-row
        scales everywhere (what failed), then the scales the server uses (per-row for the image stream only)."""
        from backend.model.quantize import fp8_kernel_check, linear_shapes

        if not self.cuda:
            self.record({"phase": "fp8check", "skipped": "no GPU"})
            return
        shapes = linear_shapes(self.pipe.transformer)
        for label, granularity in (("row everywhere", lambda name: "row"), ("server", None)):
            t = time.monotonic()
            cases = fp8_kernel_check(shapes, "cuda", granularity)
            failed = [c for c in cases if "error" in c]
            self.record({"phase": "fp8check", "scales": label, "cases": len(cases), "failed": len(failed),
                         "seconds": round(time.monotonic() - t, 2),
                         "failures": [f"{c['layer']} {c['in']}->{c['out']} rows {c['rows']}" for c in failed],
                         "first_error": failed[0]["error"] if failed else None})
        self.torch.cuda.empty_cache()

    def phase_gguf(self) -> None:
        """The transformer swapped, for good, for a GGUF copy of the same weights (--gguf-type; packed here, loaded
        through the server's single-file loader): Fast all on the GPU (after a bf16 Fast for reference where none ran
        yet), then host offload: Q8_0 under a 24 GiB cap, as a 24 GB card without FP8 units (RTX 3090) would run it;
        Q4_0 under a 16 GiB cap with the int8 text encoder, as the server plans a 16 GB card with a 4-bit file."""
        import gguf
        from diffusers.quantizers.gguf.utils import GGUFParameter

        kind = self.args.gguf_type
        quant = gguf.GGMLQuantizationType[kind.upper()]

        def pack(weight: Any) -> Any:
            return GGUFParameter(gguf_pack(weight, kind).cpu(), quant_type=quant) if weight.shape[-1] % 32 == 0 else None

        if self._swap_in_file_weights("gguf", pack, True, gguf_type=kind):
            # Q8_0: a 24 GB card without FP8 units; Q4_0: a 16 GB card, beside the int8 text encoder (for good)
            card, int8 = (16, True) if kind == "q4_0" else (24, False)
            self._offloaded_jobs(f"gguf-card{card}", card, text_encoder_int8=int8, gguf_type=kind)

    def phase_fp8file(self) -> None:
        """The transformer swapped, for good, for a scaled-FP8 copy of the same weights, as ComfyUI's FP8 files hold
        them (e4m3, one scale per matrix), loaded through the server's single-file loader: the weights stay FP8, widened
        in each forward. Fast all on the GPU (after a bf16 Fast for reference where none ran yet), then host offload
        under a 24 GiB cap, as the server plans a 24 GB card without FP8 units with such a file."""
        from backend.model import transformer_file

        torch = self.torch
        dtype = torch.bfloat16 if self.cuda else torch.float32

        def pack(weight: Any) -> Any:
            scale = weight.abs().amax().float().clamp(min=1e-12) / torch.finfo(torch.float8_e4m3fn).max
            data = (weight.float() / scale).to(torch.float8_e4m3fn)
            return transformer_file.fp8_weight(data.cpu(), scale.reshape(1, 1).cpu(), dtype)

        if self._swap_in_file_weights("fp8file", pack, False):
            self._offloaded_jobs("fp8file-card24", 24)

    def _swap_in_file_weights(self, label: str, pack: Callable[[Any], Any], gguf: bool, **extra: Any) -> bool:
        """The transformer replaced, for good, by one loaded through the server's single-file loader from its own
        weights, each linear layer's packed by `pack` (None: left as it is); then Fast all on the GPU. False where the
        phase cannot run."""
        import tempfile

        from backend.model import transformer_file

        if self.fp8:
            self.record({"phase": label, "skipped": "runs before fp8 (it packs the bf16 weights)"})
            return False
        torch = self.torch
        self._place("gpu")
        if ("fast", PRESETS["fast"].steps) not in self.first_latents:
            self.job(f"{label}-reference-bf16", "fast")
        t = time.monotonic()
        transformer = self.pipe.transformer
        linears = {f"{n}.weight" for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)}
        checkpoint: dict[str, Any] = {}
        with torch.no_grad():
            for name, tensor in transformer.state_dict().items():
                packed = pack(tensor) if name in linears else None
                checkpoint[name] = tensor.detach().cpu() if packed is None else packed
        packed_s = time.monotonic() - t
        with tempfile.TemporaryDirectory() as folder:
            transformer.save_config(Path(folder) / "transformer")
            self.pipe.register_modules(transformer=None)
            del transformer
            if self.cuda:
                torch.cuda.empty_cache()
            t = time.monotonic()
            dtype = torch.bfloat16 if self.cuda else torch.float32
            replacement = transformer_file.from_checkpoint(checkpoint, folder, dtype, gguf, f"random {label}")
        del checkpoint
        self.pipe.register_modules(transformer=replacement)
        self._place("gpu")
        from backend.model.offload import tensor_bytes

        weight_gib = tensor_bytes(replacement.state_dict().values()) / GIB
        layers = [m for m in replacement.modules() if isinstance(m, torch.nn.Linear)]
        packed = sum(type(m.weight) is not torch.nn.Parameter for m in layers)
        self.record({"phase": f"{label}-load", "linear_layers": len(layers), "packed_linear_layers": packed,
                     "pack_s": round(packed_s, 1),
                     "load_and_place_s": round(time.monotonic() - t, 1), "transformer_gib": round(weight_gib, 2),
                     **extra})
        self.job(label, "fast", **extra)
        return True
