#!/usr/bin/env python3
"""End-to-end speed and memory of LayerBridge's engine on one GPU, with the full-size architecture and random weights.

No download: the pipeline is built from the published configs (20.4 B transformer, Qwen2.5-VL-7B text encoder, the
RGBA VAE) with random weights, and run through the real Engine (memory plan, presets, captioning, restoration).
Random weights say nothing about quality; the relative deviation of each preset's final latents from Best on the
same seed only catches a broken lever (NaN, or a jump far beyond the others).

Phases (--phases, run in the order given); fp8 quantises the transformer for good, so every phase after it runs
FP8. Each prints a row and appends it to OUT/results.jsonl as soon as it is measured:
  presets     the --presets (Best / Balanced / Fast), all weights on the GPU, eager; job start to layers ready
  compile     regional compilation + compiled captioning: Fast (first job includes compiling, from the disk cache
              where an earlier process filled it: the compile-cache row), Best, Fast again
  modes       a few steps all on the GPU, with model offload and with group offload (under --small-card-gib)
  fp8         FP8 weights and activations (torchao) for the transformer
  fp8staged   the same, the way the server gets there where bf16 does not fit: from the CPU, layer by layer
  card24      a 24 GB card under a 24 GiB cap, Fast with its caption (FP8 after the fp8 phase): host offload, then
              diffusers' model offload
  fp8compile  all on the GPU again, FP8 + compilation, Fast twice (the first includes compiling)
  card16      a 16 GB card under a 16 GiB cap: bf16 group offload with streams, a few steps and a short caption
              timed; then the int8 text encoder placed whole (for good): the same caption, and Fast end to end
  card16int8  card16's int8 text encoder part alone (--pin-streamed off: the way a machine with 32-64 GB of RAM
              streams, each group page-locked as it streams)
  fp8check    FP8 products of each distinct linear shape with the rows a job feeds them (the server's check at load)
  flops       no GPU, no weights: FLOPs of one transformer forward at --resolution/--layers (FlopCounterMode on the
              meta device, inputs as the pipeline passes them), split attention / the rest, and Best's total against
              the cards' dense peaks; it builds no pipeline (a tiny one on the CPU shows the inputs' shapes)
  gguf        the transformer swapped for good for a GGUF copy of its weights (--gguf-type q8_0 or q4_0, packed on
              the GPU, loaded through the server's single-file loader): Fast all on the GPU, then host offload under a
              24 GiB cap (Q8_0: a 24 GB card without FP8 units) or 16 GiB with the int8 text encoder (Q4_0: a 16 GB
              card); run it before fp8
  fp8file     the transformer swapped for good for a scaled-FP8 copy of its weights (as ComfyUI's FP8 files), loaded
              through the server's single-file loader, the weights kept FP8: Fast all on the GPU, then host offload
              under a 24 GiB cap (a 24 GB card without FP8 units with an FP8 file); run it before fp8
  int8        int8 transformer weights (torchao, products in bf16), for good: quantised layer by layer on the GPU from
              the CPU, as the server does on a 24 GB card without FP8 units (RTX 3090); Fast all on the GPU (after a
              bf16 Fast for reference), then host offload under a 24 GiB cap, as the server plans that card; run it
              before fp8
  naming      naming the layers as Best and Balanced do after decoding (backend/model/naming.py), in the placement of the
              phases before: --layers noise layers at the bucket's size, each answer to the token limit (random weights
              never stop early: the worst case)
  attention   one transformer forward with each attention backend that runs here (native, cuDNN, flash, efficient,
              FlashAttention 2/3 and SageAttention where installed): seconds, TFLOP/s, deviation from native
Group offload pins a copy of every weight in system memory; leaving it for another mode in the same process ran
a 128 GiB host out of memory, so card16 and modes are best run in a process of their own.
Phases stop being started once --budget-s is spent, so the script ends inside one device call.

  python3 scripts/gpu_bench.py --out OUT                    # presets, compile, fp8, card24, fp8compile
  python3 scripts/gpu_bench.py --out OUT --phases card16    # the 16 GB card, in a process of its own
  python3 scripts/gpu_bench.py --phases modes --steps 4 # the memory-mode check (scripts/gpu_check.py)
  python3 scripts/gpu_bench.py --arch tiny --out /tmp/b # the same code paths on the CPU, in seconds
  python3 scripts/gpu_bench.py --phases flops --out /tmp/f  # the full model's FLOPs, on any machine, in seconds
  python3 scripts/gpu_bench.py --phases attention --out OUT # attention backends compared (not in the default phases)
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

GIB = 1024**3

# Dense (no sparsity) tensor-core peaks in TFLOP/s, keyed by a substring of torch.cuda.get_device_name; the first match
# wins, so the PCIe H100 comes before the SXM one.
PEAK_TFLOPS = {
    "H100 PCIe": {"bf16": 756.5, "fp8": 1513.0},
    "H100": {"bf16": 989.4, "fp8": 1978.9},
    "H200": {"bf16": 989.4, "fp8": 1978.9},
}
CAPTION_TOKENS = {"short": 150, "worst": 512}  # a typical automatic caption; Best's longest (presets.py)
# The prompt template's tokens after the prompt in Qwen2.5's tokenizer: <|im_end|> \n <|im_start|> assistant \n
TEMPLATE_SUFFIX_TOKENS = 5
MAX_SEQUENCE_LENGTH = 512  # QwenImageLayeredPipeline's default: the text embeddings are cut to this length
BEST_STEPS = 50
# diffusers' attention backends timed by the attention phase, with the package each needs beyond PyTorch
ATTENTION_BACKENDS = {
    "native": None, "_native_cudnn": None, "_native_flash": None, "_native_efficient": None,
    "flash": "flash_attn", "_flash_3": "flash_attn_interface", "sage": "sageattention",
}
_tiny_pipeline: Any = None


class _Captured(Exception):
    """Stops the pipeline once the transformer's inputs are recorded."""


def peaks(card: str) -> dict[str, dict[str, float]]:
    """The dense peaks of this card, or of the H100 and H200 when it is none of the table's (the CPU)."""
    for key, peak in PEAK_TFLOPS.items():
        if key in card:
            return {key: peak}
    return {key: PEAK_TFLOPS[key] for key in ("H100", "H200")}


def pipeline_inputs(image: np.ndarray, resolution: int, layers: int) -> list[dict[str, Any]]:
    """The kwargs QwenImageLayeredPipeline passes to its transformer on the first step, conditional then CFG's
    unconditional pass (negative prompt " "), recorded from the tiny pipeline on the CPU."""
    import torch
    from PIL import Image

    from backend.model.tiny_model import build_tiny_pipeline

    global _tiny_pipeline
    if _tiny_pipeline is None:
        with torch.device("cpu"):
            _tiny_pipeline = build_tiny_pipeline(seed=0)
        _tiny_pipeline.set_progress_bar_config(disable=True)
        encode, encoded = _tiny_pipeline.vae.encode, {}

        def encode_once(x: Any, *args: Any, **kwargs: Any) -> Any:
            """The same image at the same size encodes once (counts for several layer counts)."""
            key = (tuple(x.shape), hashlib.sha1(x.detach().float().cpu().numpy().tobytes()).hexdigest())
            if key not in encoded:
                encoded[key] = encode(x, *args, **kwargs)
            return encoded[key]

        _tiny_pipeline.vae.encode = encode_once
    pipe = _tiny_pipeline
    transformer = pipe.transformer
    calls: list[dict[str, Any]] = []

    def grab(**kwargs: Any) -> tuple:
        """Stands in for the transformer's forward: records, and answers zeros of the output's shape."""
        calls.append(kwargs)
        if len(calls) == 2:
            raise _Captured()
        hidden = kwargs["hidden_states"]
        channels = transformer.config.patch_size**2 * transformer.config.out_channels
        return (hidden.new_zeros(*hidden.shape[:2], channels),)

    transformer.forward = grab
    try:
        pipe(image=Image.fromarray(image, "RGBA"), prompt="a poster", negative_prompt=" ", true_cfg_scale=4.0,
             layers=layers, resolution=resolution, num_inference_steps=2,
             generator=torch.Generator(device="cpu").manual_seed(0), output_type="np")
    except _Captured:
        pass
    finally:
        del transformer.forward  # back to the class's method
    if len(calls) != 2:
        raise RuntimeError(f"the pipeline called its transformer {len(calls)} times on the first step, not 2")
    return calls


def meta_inputs(captured: dict[str, Any], config: Any, text_tokens: int | None = None) -> dict[str, Any]:
    """Recorded transformer kwargs as meta tensors for a transformer of `config`: the image tokens and shapes as
    recorded, `text_tokens` text embeddings (default: as recorded), the channels the config asks for."""
    import torch

    kwargs = {k: v.to("meta") if torch.is_tensor(v) else v for k, v in captured.items()}
    batch, image_tokens, _ = captured["hidden_states"].shape
    text = captured["encoder_hidden_states"].shape[1] if text_tokens is None else text_tokens
    dtype = torch.bfloat16
    kwargs["hidden_states"] = torch.empty(batch, image_tokens, config["in_channels"], device="meta", dtype=dtype)
    kwargs["encoder_hidden_states"] = torch.empty(batch, text, config["joint_attention_dim"], device="meta", dtype=dtype)
    if captured.get("encoder_hidden_states_mask") is not None:  # None when every prompt token is real (batch of one)
        kwargs["encoder_hidden_states_mask"] = torch.ones(batch, text, device="meta",
                                                          dtype=captured["encoder_hidden_states_mask"].dtype)
    return kwargs


def count_flops(config: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """FLOPs of one forward of a transformer of `config` on meta tensors (no memory, no GPU), counted by
    FlopCounterMode (matmul-type ops only; elementwise work is not counted). Attention is what is counted inside
    scaled_dot_product_attention, checked against 4·B·H·Lq·Lk·D."""
    import torch
    import torch.nn.functional as F
    from diffusers import QwenImageTransformer2DModel
    from torch.utils.flop_counter import FlopCounterMode

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            transformer = QwenImageTransformer2DModel.from_config(dict(config)).eval()
    finally:
        torch.set_default_dtype(previous)
    counter = FlopCounterMode(display=False)
    attention = {"counted": 0, "analytic": 0, "calls": 0}
    sdpa = F.scaled_dot_product_attention

    def counted_sdpa(query: Any, key: Any, value: Any, *args: Any, **kw: Any) -> Any:
        before = counter.get_total_flops()
        out = sdpa(query, key, value, *args, **kw)
        attention["counted"] += counter.get_total_flops() - before
        b, h, lq, d = query.shape
        attention["analytic"] += 2 * b * h * lq * key.shape[-2] * (d + value.shape[-1])  # QK^T and AV
        attention["calls"] += 1
        return out

    F.scaled_dot_product_attention = counted_sdpa
    try:
        with torch.no_grad(), counter:
            transformer(**kwargs)
    finally:
        F.scaled_dot_product_attention = sdpa
    ops = {str(op): int(n) for op, n in counter.get_flop_counts()["Global"].items()}
    total = counter.get_total_flops()
    if attention["counted"]:
        attn = attention["counted"]
        inside = sorted({op for op in ops if "attention" in op or "bmm" in op})
        note = f"counted inside scaled_dot_product_attention (on meta: {', '.join(inside)})"
        if attn != attention["analytic"]:
            note += f"; 4·B·H·Lq·Lk·D gives {attention['analytic']}"
    else:  # the counter saw no op inside SDPA: attention by the formula
        attn = attention["analytic"]
        total += attn
        note = "FlopCounterMode counted nothing inside scaled_dot_product_attention: 4·B·H·Lq·Lk·D"
    return {"flops": int(total), "attention_flops": int(attn), "rest_flops": int(total - attn),
            "attention_calls": attention["calls"], "attention_note": note, "ops": ops}


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


class Bench:
    def __init__(self, args: argparse.Namespace):
        import torch

        self.args = args
        self.torch = torch
        self.cuda = torch.cuda.is_available()
        self.card = torch.cuda.get_device_name(0) if self.cuda else "CPU"
        self.started = time.monotonic()
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        self.best_latents: Any = None
        self.first_latents: dict[tuple[str, int], Any] = {}
        self.fp8 = False
        self.int8 = False
        self.compiled = False
        self.place_seconds = 0.0
        self.built = False
        self.flops: dict[tuple, dict[str, Any]] = {}  # count_flops results by (config, input shapes)
        self.command = " ".join(["python3", "scripts/gpu_bench.py", *sys.argv[1:]])
        rng = np.random.default_rng(0)
        self.image = rng.integers(0, 256, (args.height, args.width, 4), dtype=np.uint8)
        self.image[..., 3] = 255

    # ---- bookkeeping -------------------------------------------------------------------------------------------

    def time_left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.started)

    def record(self, row: dict[str, Any]) -> None:
        row = {"card": self.card, "date": datetime.date.today().isoformat(), **row}
        self.rows.append(row)
        with open(self.out / "results.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    def peak_reset(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float:
        return round(self.torch.cuda.max_memory_allocated() / GIB, 2) if self.cuda else 0.0

    def cap(self, gib: float | None) -> None:
        """Emulate a smaller card: this process may allocate at most `gib` of the GPU."""
        if not self.cuda:
            return
        total = self.torch.cuda.get_device_properties(0).total_memory
        self.torch.cuda.set_per_process_memory_fraction(1.0 if gib is None else min(1.0, gib * GIB / total))
        self.torch.cuda.empty_cache()

    def needs_pipeline(self, phase: str) -> bool:
        """Whether a phase runs the pipeline (which is built before the first that does)."""
        if phase == "flops":
            return False
        if phase == "attention":  # on the CPU only the tiny model runs it
            return self.cuda or self.args.arch == "tiny"
        return True

    # ---- building ----------------------------------------------------------------------------------------------

    def build(self) -> None:
        from backend.model.engine import Engine
        from backend.model.memory import probe_device
        from backend.core.settings import Settings
        from backend.model.tiny_model import FULL, TINY, build_random_pipeline

        torch = self.torch
        arch = FULL if self.args.arch == "full" else TINY
        t = time.monotonic()
        dtype = torch.bfloat16 if self.cuda else torch.float32
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device("cuda" if self.cuda else "cpu"):
                pipe = build_random_pipeline(arch, seed=0)
        finally:
            torch.set_default_dtype(previous)
        pipe.to(dtype)
        params = sum(p.numel() for p in pipe.transformer.parameters())
        self.engine = Engine(Settings(model=f"random-{self.args.arch}", memory="gpu" if self.cuda else "cpu",
                                      quantize="none", compile="off"))
        self.engine.attach(pipe, probe_device())
        self.pipe = pipe
        self.built = True
        self.record({"phase": "build", "arch": self.args.arch, "transformer_params_b": round(params / 1e9, 2),
                     "seconds": round(time.monotonic() - t, 1), "vram_gib": self.peak_gib()})

    # ---- one job -----------------------------------------------------------------------------------------------

    def job(self, label: str, preset: str, steps: int | None = None, prompt: str = "", **extra: Any) -> dict[str, Any]:
        from backend.core.job import JobParams

        torch = self.torch
        self.engine._captions.clear()  # every job pays for its caption, as a new image would
        params = {"layers": self.args.layers, "resolution": self.args.resolution, "seed": 1234, "preset": preset,
                  "prompt": prompt}
        if steps is not None:
            params["steps"] = steps
        self.peak_reset()
        t = time.monotonic()
        result = self.engine.run(self.image, JobParams.parse(params), lambda p: None, lambda: False)
        if self.cuda:
            torch.cuda.synchronize()
        total = time.monotonic() - t
        latents = self.engine.last_latents.float().cpu()
        run_steps = steps or {"best": 50, "balanced": 30, "fast": 20}[preset]
        row = {
            "phase": label, "preset": preset, "steps": run_steps, "layers": self.args.layers,
            "resolution": self.args.resolution, "mode": self.engine.memory.mode.value, "fp8": self.fp8,
            "transformer_int8": self.int8,
            "compiled": self.compiled, "caption_compiled": self.engine.caption_compiled,
            "end_to_end_s": round(total, 2),
            **{k: round(v, 2) for k, v in result.timings.items()},
            "peak_vram_gib": self.peak_gib(),
            "finite": bool(torch.isfinite(latents).all()),
            **extra,
        }
        denoise = result.timings.get("denoise_s", 0.0)
        row["s_per_step"] = round(denoise / run_steps, 3)

        def deviation(reference: Any) -> float:
            return round(float((latents - reference).norm() / reference.norm()), 4)

        if self.best_latents is not None and latents.shape == self.best_latents.shape and run_steps > 4:
            row["deviation_vs_best"] = deviation(self.best_latents)
        first = self.first_latents.setdefault((preset, run_steps), latents)
        if first is not latents:
            row["deviation_vs_first_same_preset"] = deviation(first)
        if preset == "best" and self.best_latents is None and run_steps == 50:
            self.best_latents = latents
        self.record(row)
        return row

    # ---- placing the model -------------------------------------------------------------------------------------

    def _compile(self, on: bool) -> None:
        """Regional compilation of the transformer plus compiled captioning (all on the GPU), or back to eager."""
        from backend.model.memory import MemoryMode, disable_compile, enable_compile

        if on:
            enable_compile(self.pipe.transformer)
            self.engine.caption_compiled = self.cuda and self.engine.memory.mode == MemoryMode.gpu
        else:
            disable_compile(self.pipe.transformer)
            self.engine.caption_compiled = False
        self.compiled = on

    def _place(self, mode: str, text_encoder_int8: bool = False) -> None:
        """Take every offload hook off, then place the pipeline in `mode` as the server would."""
        from diffusers.hooks import HookRegistry

        from backend.model.memory import MemoryChoice, MemoryMode, apply_mode

        if self.engine.offload is not None:
            self.engine.offload.remove()
            self.engine.offload = None
        for component in (self.pipe.transformer, self.pipe.text_encoder, self.pipe.vae):
            for module in component.modules():
                registry = getattr(module, "_diffusers_hook", None)
                if isinstance(registry, HookRegistry):
                    for name in ("lazy_prefetch_group_offloading", "group_offloading"):
                        if registry.get_hook(name) is not None:
                            registry.remove_hook(name, recurse=False)
        self.pipe.remove_all_hooks()
        # on the CPU (tiny arch) the offload modes run their code paths with the CPU standing in for the GPU
        target = MemoryMode(mode) if self.cuda or mode in ("host_offload", "group_offload") else MemoryMode.cpu
        if target not in (MemoryMode.gpu, MemoryMode.cpu):
            self.pipe.to("cpu")
        if self.cuda:
            self.torch.cuda.empty_cache()
        t = time.monotonic()
        pin = self.args.pin_streamed == "on"
        self.engine.offload = apply_mode(self.pipe, target, self.engine.device, text_encoder_int8, pin)
        self.place_seconds = time.monotonic() - t
        self.engine.memory = MemoryChoice(target, "benchmark", fp8=self.fp8, compile=self.compiled,
                                          text_encoder_int8=text_encoder_int8, transformer_int8=self.int8,
                                          pin_streamed=pin)

    # ---- phases ------------------------------------------------------------------------------------------------

    def phase_presets(self) -> None:
        for preset in self.args.presets.split(","):
            self.job("presets", preset)

    def phase_compile(self) -> None:
        """Compiled jobs; the first one compiles, from the disk cache where an earlier process filled it (run the phase
        twice, in two processes, to time a start with the cache filled)."""
        from torch._dynamo.utils import counters

        self._compile(True)
        try:
            before = dict(counters["inductor"])
            self.job("compile-first", "fast", compile_included=True)
            self.record({"phase": "compile-cache", "folder": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
                         **{k: counters["inductor"].get(k, 0) - before.get(k, 0)
                            for k in ("fxgraph_cache_miss", "fxgraph_cache_hit")}})
            if self.time_left() > 120:
                self.job("compiled", "best")
            self.job("compiled", "fast")
        finally:
            self._compile(False)

    def phase_modes(self) -> None:
        """The same few steps all on the GPU, with model offload and with group offload (under --small-card-gib)."""
        steps = self.args.steps
        self.job("modes", "best", steps, prompt="a poster")
        if not self.cuda:
            return
        self._place("model_offload")
        self.job("modes", "best", steps, prompt="a poster")
        if self.time_left() > 90:
            self._place("group_offload")
            self.cap(self.args.small_card_gib)
            try:
                self.job("modes", "best", steps, prompt="a poster", vram_cap_gib=self.args.small_card_gib)
            finally:
                self.cap(None)
        self._place("gpu")

    def phase_fp8(self, staged: bool = False) -> None:
        """FP8 weights and activations (torchao) for the transformer, for good: later phases run FP8."""
        from backend.model.memory import enable_fp8

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

    def phase_card24(self) -> None:
        """A 24 GB card (FP8 transformer after the fp8 phase) under a 24 GiB cap, Fast with its caption: host offload
        twice (the first job after placing, then one more), then diffusers' model offload once."""
        if not self.cuda and self.args.arch == "full":
            self.record({"phase": "card24", "skipped": "no GPU"})
            return
        self._place("host_offload")  # on the CPU (tiny arch): the code path, the CPU standing in for the GPU
        host_gib = round(self.engine.offload.weight_bytes() / GIB, 1)
        self.cap(24)
        try:
            self.job("card24", "fast", vram_cap_gib=24, place_s=round(self.place_seconds, 1), host_gib=host_gib)
            self.job("card24", "fast", vram_cap_gib=24)
        finally:
            self.cap(None)
        if self.cuda and self.time_left() > 60:
            self._place("model_offload")
            self.cap(24)
            try:
                self.job("card24", "fast", vram_cap_gib=24)
            finally:
                self.cap(None)

    def phase_int8(self) -> None:
        """int8 transformer weights, for good, reached as the server reaches them on a 24 GB card without FP8 units:
        the transformer on the CPU, quantised one linear layer at a time on the GPU. Fast all on the GPU (a bf16 Fast
        first for reference, where none ran yet), then host offload under a 24 GiB cap: the first job after placing,
        then one more."""
        from backend.model.memory import enable_int8
        from backend.model.offload import tensor_bytes

        if not self.cuda and self.args.arch == "full":
            self.record({"phase": "int8", "skipped": "no GPU"})
            return
        if self.fp8:
            self.record({"phase": "int8", "skipped": "runs before fp8 (it quantises the bf16 weights)"})
            return
        self._place("gpu")
        if ("fast", 20) not in self.first_latents:
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

    def phase_card16(self) -> None:
        """A 16 GB card under a 16 GiB cap: group offload with streams, a few steps, then a short caption timed with
        the bf16 text encoder streamed; then the int8 text encoder placed whole (for good): the same caption, and
        Fast with its caption."""
        if not self.cuda and self.args.arch == "full":
            self.record({"phase": "card16", "skipped": "no GPU"})
            return
        if self.fp8:
            self.record({"phase": "card16", "skipped": "FP8 cannot be streamed"})
            return
        self._place("group_offload")
        self.cap(self.args.small_card_gib)
        try:
            self.job("card16", "best", self.args.steps, prompt="a poster", vram_cap_gib=self.args.small_card_gib)
            if self.time_left() > 40:
                self._caption_probe("card16-caption")
        finally:
            self.cap(None)
        if self.time_left() >= 40:
            self.phase_card16int8()

    def phase_card16int8(self) -> None:
        """The 16 GB card's int8 text encoder alone (card16 without its bf16 part): group offload under a 16 GiB cap,
        the text encoder in int8 placed whole (for good); a short caption, then Fast end to end."""
        if not self.cuda and self.args.arch == "full":
            self.record({"phase": "card16int8", "skipped": "no GPU"})
            return
        self._place("group_offload", text_encoder_int8=True)
        self.record({"phase": "card16-int8-text-encoder", "place_s": round(self.place_seconds, 1),
                     "pin_streamed": self.args.pin_streamed})
        self.cap(self.args.small_card_gib)
        try:
            self._caption_probe("card16-int8-caption")
            if self.time_left() > 45:
                self.job("card16-int8", "fast", vram_cap_gib=self.args.small_card_gib)
        finally:
            self.cap(None)

    def _caption_probe(self, label: str) -> None:
        """The automatic caption alone, --caption-probe-tokens long (random weights never end it early)."""
        from PIL import Image

        from backend.core.job import JobParams

        tokens = self.args.caption_probe_tokens
        self.engine._captions.clear()
        self.peak_reset()
        t = time.monotonic()
        caption = self.engine._caption(Image.fromarray(self.image, "RGBA"),
                                       JobParams.parse({"resolution": self.args.resolution}), tokens, lambda: False)
        seconds = time.monotonic() - t
        self.record({"phase": label, "mode": self.engine.memory.mode.value,
                     "text_encoder_int8": self.engine.memory.text_encoder_int8, "max_new_tokens": tokens,
                     "caption_words": len(caption.split()), "seconds": round(seconds, 2),
                     "s_per_token": round(seconds / tokens, 3), "peak_vram_gib": self.peak_gib(),
                     "vram_cap_gib": self.args.small_card_gib})

    def phase_naming(self) -> None:
        import numpy as np

        from backend.model.engine import bucket_size
        from backend.model.naming import NAME_TOKENS, name_layers, plain_names

        width, height = bucket_size(self.args.width, self.args.height, self.args.resolution)
        rng = np.random.default_rng(3)
        layers = [rng.integers(0, 256, (height, width, 4), dtype=np.uint8) for _ in range(self.args.layers)]
        self.peak_reset()
        t = time.monotonic()
        names = name_layers(self.pipe, layers, "en", lambda: None)
        if self.cuda:
            self.torch.cuda.synchronize()
        seconds = time.monotonic() - t
        self.record({"phase": "naming", "layers": self.args.layers, "bucket": f"{width}x{height}",
                     "mode": self.engine.memory.mode.value, "name_s": round(seconds, 2),
                     "per_layer_s": round(seconds / max(1, self.args.layers - 1), 3), "max_tokens": NAME_TOKENS,
                     "named": sum(n != p for n, p in zip(names, plain_names(len(names)))),
                     "peak_vram_gib": self.peak_gib()})

    def phase_fp8check(self) -> None:
        """FP8 products of every distinct linear shape of the transformer with the rows a job feeds them: per-row
        scales everywhere (what failed), then the scales the server uses (per-row for the image stream only)."""
        from backend.model.memory import fp8_kernel_check, linear_shapes

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
        if ("fast", 20) not in self.first_latents:
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

    def _offloaded_jobs(self, label: str, card: int, text_encoder_int8: bool = False, **extra: Any) -> None:
        """Host offload under a `card` GiB cap, where the budget leaves time: the first Fast after placing, then one
        more; back to all on the GPU after."""
        if self.time_left() <= 60:
            return
        self._place("host_offload", text_encoder_int8=text_encoder_int8)
        host_gib = round(self.engine.offload.weight_bytes() / GIB, 1)
        self.cap(card)
        try:
            self.job(label, "fast", vram_cap_gib=card, place_s=round(self.place_seconds, 1), host_gib=host_gib, **extra)
            if self.time_left() > 40:
                self.job(label, "fast", vram_cap_gib=card, **extra)
        finally:
            self.cap(None)
        self._place("gpu")

    def phase_fp8compile(self) -> None:
        """All on the GPU, FP8 (after the fp8 phase) plus compilation: the fastest configuration."""
        self._place("gpu")
        self._compile(True)
        try:
            self.job("fp8-compile-first" if self.fp8 else "compile-first", "fast", compile_included=True)
            if self.time_left() > 30:
                self.job("fp8-compiled" if self.fp8 else "compiled", "fast")
        finally:
            self._compile(False)

    # ---- arithmetic --------------------------------------------------------------------------------------------

    def _flops(self, config: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """count_flops, once per configuration and input shapes."""
        key = (json.dumps({k: v for k, v in dict(config).items() if not k.startswith("_")}, sort_keys=True, default=str),
               tuple(kwargs["hidden_states"].shape), tuple(kwargs["encoder_hidden_states"].shape),
               json.dumps(kwargs.get("img_shapes"), default=str))
        if key not in self.flops:
            self.flops[key] = count_flops(config, kwargs)
        return self.flops[key]

    def phase_flops(self) -> None:
        """FLOPs of one transformer forward (meta device: no weights, no GPU) with the inputs the pipeline passes,
        for a short and the longest caption and for CFG's negative prompt; then Best's 50 steps x 2 passes."""
        from backend.model.tiny_model import FULL, TINY

        config = (FULL if self.args.arch == "full" else TINY)["transformer"]
        t = time.monotonic()
        cond, uncond = pipeline_inputs(self.image, self.args.resolution, self.args.layers)
        frames = cond["img_shapes"][0]
        shape = {
            "arch": self.args.arch, "resolution": self.args.resolution, "layers": self.args.layers,
            "source": f"{self.args.width}x{self.args.height}",
            "bucket": f"{frames[0][2] * 16}x{frames[0][1] * 16}",
            "frames": len(frames), "image_tokens": int(cond["hidden_states"].shape[1]),
        }
        negative_tokens = int(uncond["encoder_hidden_states"].shape[1])
        cases = [(f"cond-{name}", tokens, min(tokens + TEMPLATE_SUFFIX_TOKENS, MAX_SEQUENCE_LENGTH))
                 for name, tokens in CAPTION_TOKENS.items()]
        cases.append(("uncond", None, negative_tokens))
        per_forward: dict[str, int] = {}
        for name, caption, text in cases:
            captured = uncond if name == "uncond" else cond
            counted = self._flops(config, meta_inputs(captured, config, text))
            per_forward[name] = counted["flops"]
            self.record({
                "phase": "flops", "pass": name, **shape,
                "prompt": "negative prompt \" \"" if caption is None else f"{caption}-token caption",
                "text_tokens": text,
                **({"text_tokens_before_cut": caption + TEMPLATE_SUFFIX_TOKENS}
                   if caption is not None and caption + TEMPLATE_SUFFIX_TOKENS > text else {}),
                "tflop": round(counted["flops"] / 1e12, 3),
                "attention_tflop": round(counted["attention_flops"] / 1e12, 3),
                "rest_tflop": round(counted["rest_flops"] / 1e12, 3),
                "attention_share": round(counted["attention_flops"] / counted["flops"], 3),
                **counted,
            })
        for name in CAPTION_TOKENS:
            total = BEST_STEPS * (per_forward[f"cond-{name}"] + per_forward["uncond"])
            self.record({
                "phase": "flops-best", **shape, "caption": name, "steps": BEST_STEPS, "forwards": 2 * BEST_STEPS,
                "flops": total, "pflop": round(total / 1e15, 2),
                "seconds_at_peak": {f"{card} {kind}": round(total / (tflops * 1e12), 2)
                                    for card, peak in peaks(self.card).items() for kind, tflops in peak.items()},
                "peak_tflops": peaks(self.card),
            })
        self.record({"phase": "flops-done", "seconds": round(time.monotonic() - t, 1)})

    # ---- attention backends ------------------------------------------------------------------------------------

    def _transformer_inputs(self, prompt: str) -> dict[str, Any]:
        """The kwargs the engine's pipeline passes to the transformer on a job's first (conditional) call; the job is
        stopped there."""
        from backend.model.engine import JobCancelled
        from backend.core.job import JobParams

        captured: dict[str, Any] = {}

        def grab(module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
            captured.update(kwargs)
            raise JobCancelled()

        params = JobParams.parse({"layers": self.args.layers, "resolution": self.args.resolution, "seed": 1234,
                                  "preset": "best", "steps": 2, "prompt": prompt})
        handle = self.pipe.transformer.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            self.engine.run(self.image, params, lambda p: None, lambda: False)
        except JobCancelled:
            pass
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError("the job never called the transformer")
        return captured

    def phase_attention(self) -> None:
        """One transformer forward with each attention backend that runs here: 2 warm-ups, 3 timed."""
        import importlib

        from diffusers.models.attention_dispatch import _AttentionBackendRegistry

        if not self.needs_pipeline("attention"):
            self.record({"phase": "attention", "skipped": "no GPU"})
            return
        torch = self.torch
        if self.cuda and self.engine.memory.mode.value != "gpu":
            self._place("gpu")
        transformer = self.pipe.transformer
        kwargs = self._transformer_inputs("a poster")
        counted = self._flops(transformer.config, meta_inputs(kwargs, transformer.config))
        base = {"phase": "attention", "resolution": self.args.resolution, "layers": self.args.layers,
                "image_tokens": int(kwargs["hidden_states"].shape[1]),
                "text_tokens": int(kwargs["encoder_hidden_states"].shape[1]), "fp8": self.fp8,
                "compiled": self.compiled, "tflop_per_forward": round(counted["flops"] / 1e12, 3)}
        original, active = self.engine.attention, _AttentionBackendRegistry._active_backend
        reference = None
        try:
            for name, package in ATTENTION_BACKENDS.items():
                row = {**base, "backend": name}
                if not self.cuda and name != "native":
                    self.record({**row, "skipped": "needs CUDA"})
                    continue
                if package is not None:
                    try:
                        importlib.import_module(package)
                    except Exception as exc:
                        self.record({**row, "skipped": f"{package} does not import: {type(exc).__name__}"})
                        continue
                try:
                    transformer.set_attention_backend(name)
                    with torch.no_grad():
                        for _ in range(2):
                            transformer(**kwargs)
                        if self.cuda:
                            torch.cuda.synchronize()
                        t = time.monotonic()
                        for _ in range(3):
                            out = transformer(**kwargs)[0]
                        if self.cuda:
                            torch.cuda.synchronize()
                    seconds = (time.monotonic() - t) / 3
                except Exception as exc:  # a backend that cannot run these shapes or this card
                    self.record({**row, "error": f"{type(exc).__name__}: {exc}"[:300]})
                    continue
                out = out.float()
                if name == "native":
                    reference = out
                row.update({"s_per_forward": round(seconds, 4),
                            "tflops": round(counted["flops"] / seconds / 1e12, 1),
                            "finite": bool(torch.isfinite(out).all())})
                if reference is not None:
                    row["deviation_vs_native"] = round(float((out - reference).norm() / reference.norm()), 5)
                self.record(row)
        finally:
            if original:
                transformer.set_attention_backend(original)
            else:
                transformer.reset_attention_backend()
            _AttentionBackendRegistry.set_active_backend(active)


# the least time (s) a phase needs on an H200; it is not started with less left
PHASE_SECONDS = {"presets": 30, "compile": 90, "modes": 60, "fp8": 20, "fp8staged": 60, "card24": 100, "card16": 50,
                 "fp8compile": 120, "flops": 30, "attention": 60, "card16int8": 50, "fp8check": 5, "naming": 10,
                 "gguf": 120, "int8": 90, "fp8file": 120}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=["full", "tiny"], default="full")
    p.add_argument("--phases", default="presets,compile,fp8,card24,fp8compile")
    p.add_argument("--presets", default="best,balanced,fast", help="presets the presets phase runs")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--resolution", type=int, default=640)
    p.add_argument("--width", type=int, default=1600, help="source image width (restoration runs at this size)")
    p.add_argument("--height", type=int, default=1200)
    p.add_argument("--steps", type=int, default=4, help="steps for the memory-mode jobs")
    p.add_argument("--small-card-gib", type=float, default=16.0, help="VRAM cap for the group-offload job")
    p.add_argument("--caption-probe-tokens", type=int, default=16, help="caption length timed on the 16 GB card")
    p.add_argument("--gguf-type", choices=["q8_0", "q4_0"], default="q8_0", help="what the gguf phase packs")
    p.add_argument("--pin-streamed", choices=["on", "off"], default="on",
                   help="group offload: page-lock every streamed weight at placing (on), or each group as it streams "
                        "(off: what the server does where RAM cannot hold the page-locked copies)")
    p.add_argument("--budget-s", type=float, default=480.0, help="start no phase after this many seconds")
    p.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    args = p.parse_args(argv)

    from backend.server.serve import quiet_libraries

    quiet_libraries()
    bench = Bench(args)
    bench.record({"phase": "start", "command": bench.command})
    for phase in args.phases.split(","):
        if bench.needs_pipeline(phase) and not bench.built:
            bench.build()
        if bench.time_left() < PHASE_SECONDS.get(phase, 30):
            bench.record({"phase": phase, "skipped": "time budget spent"})
            continue
        try:
            getattr(bench, f"phase_{phase}")()
        except Exception as exc:  # one broken lever must not hide the others' figures
            import traceback

            traceback.print_exc()
            bench.record({"phase": phase, "error": f"{type(exc).__name__}: {exc}"[:500]})
            if bench.cuda:
                bench.cap(None)
    bench.record({"phase": "end", "seconds": round(time.monotonic() - bench.started, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
