#!/usr/bin/env python3
"""End-to-end speed and memory of LayerBridge's engine on one GPU, with the full-size architecture and random weights.

No download: the pipeline is built from the published configs (20.4 B transformer, Qwen2.5-VL-7B text encoder, the
RGBA VAE) with random weights, and run through the real Engine (memory plan, presets, captioning, restoration).
Random weights say nothing about quality; the relative deviation of each preset's final latents from Best on the
same seed only catches a broken lever (NaN, or a jump far beyond the others).

Phases (--phases, run in the order given); fp8 quantises the transformer for good, so every phase after it runs
FP8. Each prints a row and appends it to OUT/results.jsonl as soon as it is measured:
  presets     the --presets (Best / Balanced / Fast), all weights on the GPU, eager; job start to layers ready
  compile     regional compilation + compiled captioning: Fast (first job includes compiling), Best, Fast again
  modes       a few steps all on the GPU, with model offload and with group offload (under --small-card-gib)
  fp8         FP8 weights and activations (torchao) for the transformer
  card24      a 24 GB card: model offload under a 24 GiB cap, Fast with its caption (FP8 after the fp8 phase)
  fp8compile  all on the GPU again, FP8 + compilation, Fast twice (the first includes compiling)
  card16      a 16 GB card: bf16 group offload with streams under a 16 GiB cap, a few steps, a short caption timed
Group offload pins a copy of every weight in system memory; leaving it for another mode in the same process ran
a 128 GiB host out of memory, so card16 and modes are best run in a process of their own.
Phases stop being started once --budget-s is spent, so the script ends inside one device call.

  python3 scripts/gpu_bench.py --out OUT                    # presets, compile, fp8, card24, fp8compile
  python3 scripts/gpu_bench.py --out OUT --phases card16    # the 16 GB card, in a process of its own
  python3 scripts/gpu_bench.py --phases modes --steps 4 # the memory-mode check (scripts/gpu_check.py)
  python3 scripts/gpu_bench.py --arch tiny --out /tmp/b # the same code paths on the CPU, in seconds
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

GIB = 1024**3


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
        self.compiled = False
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

    # ---- building ----------------------------------------------------------------------------------------------

    def build(self) -> None:
        from backend.engine import Engine
        from backend.memory import probe_device
        from backend.settings import Settings
        from backend.tiny_model import FULL, TINY, build_random_pipeline

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
        self.record({"phase": "build", "arch": self.args.arch, "transformer_params_b": round(params / 1e9, 2),
                     "seconds": round(time.monotonic() - t, 1), "vram_gib": self.peak_gib()})

    # ---- one job -----------------------------------------------------------------------------------------------

    def job(self, label: str, preset: str, steps: int | None = None, prompt: str = "", **extra: Any) -> dict[str, Any]:
        from backend.job import JobParams

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
        from backend.memory import MemoryMode, disable_compile, enable_compile

        if on:
            enable_compile(self.pipe.transformer)
            self.engine.caption_compiled = self.cuda and self.engine.memory.mode == MemoryMode.gpu
        else:
            disable_compile(self.pipe.transformer)
            self.engine.caption_compiled = False
        self.compiled = on

    def _place(self, mode: str) -> None:
        """Take every offload hook off, then place the pipeline in `mode` as the server would."""
        from diffusers.hooks import HookRegistry

        from backend.memory import MemoryChoice, MemoryMode, apply_mode

        for component in (self.pipe.transformer, self.pipe.text_encoder, self.pipe.vae):
            for module in component.modules():
                registry = getattr(module, "_diffusers_hook", None)
                if isinstance(registry, HookRegistry):
                    for name in ("lazy_prefetch_group_offloading", "group_offloading"):
                        if registry.get_hook(name) is not None:
                            registry.remove_hook(name, recurse=False)
        self.pipe.remove_all_hooks()
        target = MemoryMode(mode) if self.cuda else MemoryMode.cpu
        if target not in (MemoryMode.gpu, MemoryMode.cpu):
            self.pipe.to("cpu")
        if self.cuda:
            self.torch.cuda.empty_cache()
        apply_mode(self.pipe, target, self.engine.device)
        self.engine.memory = MemoryChoice(target, "benchmark", fp8=self.fp8, compile=self.compiled)

    # ---- phases ------------------------------------------------------------------------------------------------

    def phase_presets(self) -> None:
        for preset in self.args.presets.split(","):
            self.job("presets", preset)

    def phase_compile(self) -> None:
        self._compile(True)
        try:
            self.job("compile-first", "fast", compile_included=True)
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

    def phase_fp8(self) -> None:
        """FP8 weights and activations (torchao) for the transformer, for good: later phases run FP8."""
        from backend.memory import enable_fp8

        if not self.cuda:
            self.record({"phase": "fp8", "skipped": "no GPU"})
            return
        self._place("gpu")
        t = time.monotonic()
        enable_fp8(self.pipe.transformer)
        self.fp8 = True
        self.engine.memory.fp8 = True
        self.torch.cuda.empty_cache()
        self.record({"phase": "fp8-quantize", "seconds": round(time.monotonic() - t, 1),
                     "vram_gib": round(self.torch.cuda.memory_allocated() / GIB, 2)})

    def phase_card24(self) -> None:
        """A 24 GB card: model offload (FP8 transformer after the fp8 phase) under a 24 GiB cap, Fast with caption."""
        if not self.cuda:
            self.record({"phase": "card24", "skipped": "no GPU"})
            return
        self._place("model_offload")
        self.cap(24)
        try:
            self.job("card24", "fast", vram_cap_gib=24)
        finally:
            self.cap(None)

    def phase_card16(self) -> None:
        """A 16 GB card: group offload with streams under a 16 GiB cap; a few steps, then a short caption timed."""
        from PIL import Image

        from backend.job import JobParams

        if not self.cuda or self.fp8:
            self.record({"phase": "card16", "skipped": "no GPU" if not self.cuda else "FP8 cannot be streamed"})
            return
        self._place("group_offload")
        self.cap(self.args.small_card_gib)
        try:
            self.job("card16", "best", self.args.steps, prompt="a poster", vram_cap_gib=self.args.small_card_gib)
            if self.time_left() > 40:
                tokens = self.args.caption_probe_tokens
                self.peak_reset()
                t = time.monotonic()
                caption = self.engine._caption(Image.fromarray(self.image, "RGBA"),
                                               JobParams.parse({"resolution": self.args.resolution}), tokens,
                                               lambda: False)
                self.record({"phase": "card16-caption", "mode": "group_offload", "max_new_tokens": tokens,
                             "caption_words": len(caption.split()), "seconds": round(time.monotonic() - t, 2),
                             "peak_vram_gib": self.peak_gib(), "vram_cap_gib": self.args.small_card_gib})
        finally:
            self.cap(None)

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


# the least time (s) a phase needs on an H200; it is not started with less left
PHASE_SECONDS = {"presets": 30, "compile": 90, "modes": 60, "fp8": 20, "card24": 60, "card16": 50, "fp8compile": 120}


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
    p.add_argument("--budget-s", type=float, default=480.0, help="start no phase after this many seconds")
    p.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    args = p.parse_args(argv)

    from backend.server import quiet_libraries

    quiet_libraries()
    bench = Bench(args)
    bench.record({"phase": "start", "command": bench.command})
    bench.build()
    for phase in args.phases.split(","):
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
