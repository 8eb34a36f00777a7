#!/usr/bin/env python3
"""End-to-end speed and memory of LayerBridge's engine on one GPU, with the full-size architecture and random weights.

No download: the pipeline is built from the published configs (20.4 B transformer, Qwen2.5-VL-7B text encoder, the
RGBA VAE) with random weights, and run through the real Engine (memory plan, presets, captioning, restoration).
Random weights say nothing about quality; the relative deviation of each preset's final latents from Best on the
same seed only catches a broken lever (NaN, or a jump far beyond the others).

Phases, in this order, which the default keeps (fp8 quantises the transformer for good, so it comes last; each prints a row and appends it to OUT/results.jsonl as soon as it is measured):
  presets  Best / Balanced / Fast, all weights on the GPU, eager; job start to layers ready, stage by stage
  compile  regional compilation (first job includes compiling), then Fast and Best per-step time
  modes    model CPU offload and group offload (bf16), a few steps each, peak VRAM; optional VRAM caps emulate cards
  fp8      FP8 weights and activations (torchao), all on the GPU, then with model offload under a 24 GiB cap
Phases stop being started once --budget-s is spent, so the script ends inside one device call.

  python3 scripts/gpu_bench.py --out OUT                # the full run (about 7 minutes on an H200)
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
            "resolution": self.args.resolution, "mode": self.engine.memory.mode.value,
            "end_to_end_s": round(total, 2),
            **{k: round(v, 2) for k, v in result.timings.items()},
            "peak_vram_gib": self.peak_gib(),
            "finite": bool(torch.isfinite(latents).all()),
            **extra,
        }
        denoise = result.timings.get("denoise_s", 0.0)
        row["s_per_step"] = round(denoise / run_steps, 3)
        if self.best_latents is not None and latents.shape == self.best_latents.shape:
            row["deviation_vs_best"] = round(float((latents - self.best_latents).norm() / self.best_latents.norm()), 4)
        if preset == "best" and label == "presets":
            self.best_latents = latents
        self.record(row)
        return row

    # ---- phases ------------------------------------------------------------------------------------------------

    def phase_presets(self) -> None:
        for preset in ("best", "balanced", "fast"):
            self.job("presets", preset)

    def phase_compile(self) -> None:
        from backend.memory import enable_compile

        enable_compile(self.pipe.transformer)
        try:
            self.job("compile-first", "fast", compile_included=True)
            self.job("compiled", "fast")
            if self.time_left() > 150:
                self.job("compiled", "best")
        finally:
            for block in self.pipe.transformer.transformer_blocks:  # back to eager for the next phases
                block._compiled_call_impl = None

    def _set_mode(self, mode: str) -> None:
        from backend.memory import MemoryChoice, MemoryMode, apply_mode

        self.pipe.remove_all_hooks()
        self.pipe.to("cpu")
        self.torch.cuda.empty_cache() if self.cuda else None
        choice = MemoryChoice(MemoryMode(mode), "benchmark")
        apply_mode(self.pipe, choice.mode, self.engine.device)
        self.engine.memory = choice

    def _back_to_gpu(self) -> None:
        from backend.memory import MemoryChoice, MemoryMode

        from diffusers.hooks import HookRegistry

        for component in (self.pipe.transformer, self.pipe.text_encoder, self.pipe.vae):
            for module in component.modules():
                registry = getattr(module, "_diffusers_hook", None)
                if isinstance(registry, HookRegistry):
                    for name in ("lazy_prefetch_group_offloading", "group_offloading"):
                        if registry.get_hook(name) is not None:
                            registry.remove_hook(name, recurse=False)
        self.pipe.remove_all_hooks()
        self.pipe.to("cuda" if self.cuda else "cpu")
        self.engine.memory = MemoryChoice(MemoryMode.gpu if self.cuda else MemoryMode.cpu, "benchmark")

    def phase_modes(self) -> None:
        steps = self.args.steps
        if self.engine.memory.mode.value == "cpu":
            self.job("modes", "best", steps, prompt="a poster")
            return
        self.job("modes", "best", steps, prompt="a poster")  # all on the GPU, for comparison
        self._set_mode("model_offload")
        self.job("modes", "best", steps, prompt="a poster")
        if self.time_left() > 90:
            self._set_mode("group_offload")
            self.cap(self.args.small_card_gib)
            try:
                self.job("modes", "best", steps, prompt="a poster", vram_cap_gib=self.args.small_card_gib)
            finally:
                self.cap(None)
        self._back_to_gpu()

    def phase_fp8(self) -> None:
        from backend.memory import enable_fp8

        if not self.cuda:
            self.record({"phase": "fp8", "skipped": "no GPU"})
            return
        try:
            t = time.monotonic()
            enable_fp8(self.pipe.transformer)
            self.record({"phase": "fp8-quantize", "seconds": round(time.monotonic() - t, 1)})
        except Exception as exc:
            self.record({"phase": "fp8", "skipped": f"{type(exc).__name__}: {exc}"[:300]})
            return
        self.job("fp8", "fast")
        if self.time_left() > 60:
            self._set_mode("model_offload")
            self.cap(24)
            try:
                self.job("fp8-24gb", "fast", vram_cap_gib=24)
            finally:
                self.cap(None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=["full", "tiny"], default="full")
    p.add_argument("--phases", default="presets,compile,modes,fp8")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--resolution", type=int, default=640)
    p.add_argument("--width", type=int, default=1600, help="source image width (restoration runs at this size)")
    p.add_argument("--height", type=int, default=1200)
    p.add_argument("--steps", type=int, default=4, help="steps for the memory-mode jobs")
    p.add_argument("--small-card-gib", type=float, default=16.0, help="VRAM cap for the group-offload job")
    p.add_argument("--budget-s", type=float, default=480.0, help="start no phase after this many seconds")
    p.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    args = p.parse_args(argv)

    from backend.server import quiet_libraries

    quiet_libraries()
    bench = Bench(args)
    bench.record({"phase": "start", "command": bench.command})
    bench.build()
    for phase in args.phases.split(","):
        if bench.time_left() < 30:
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
