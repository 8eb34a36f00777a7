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
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from backend.model.plan import GIB
from backend.core.options import PRESETS

from .cards import CardPhases
from .forward import ForwardPhases
from .jobs import JobPhases
from .quantised import QuantisedPhases


class Bench(JobPhases, CardPhases, QuantisedPhases, ForwardPhases):
    """One benchmark process: the pipeline built once, jobs run through the real Engine, a row recorded per figure.
    Each phase is a `phase_<name>` method of one of the phase classes."""

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

    def build(self) -> None:
        from backend.model.engine import Engine
        from backend.model.device import probe_device
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
        run_steps = steps or PRESETS[preset].steps
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
        if preset == "best" and self.best_latents is None and run_steps == PRESETS["best"].steps:
            self.best_latents = latents
        self.record(row)
        return row

    def _compile(self, on: bool) -> None:
        """Regional compilation of the transformer plus compiled captioning (all on the GPU), or back to eager."""
        from backend.model.compile import disable_compile, enable_compile
        from backend.model.plan import MemoryMode

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

        from backend.model.placement import apply_mode
        from backend.model.plan import MemoryChoice, MemoryMode

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
