"""Presets and load-time levers on the tiny pipeline: wiring, exactness of Best, bounded deviation of the others."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from backend.model.engine import Engine
from backend.core.job import JobParams
from backend.model.device import DeviceInfo
from backend.model.plan import MemoryMode, plan
from backend.model.presets import PRESETS, resolve_preset
from backend.core.settings import Settings

IMG = np.random.default_rng(4).integers(0, 256, (48, 64, 4), dtype=np.uint8)


def latents(engine, **params):
    engine.run(IMG, JobParams.parse({"layers": 2, "prompt": "x", "seed": 3, **params}), lambda p: None, lambda: False)
    return engine.last_latents.clone()


def test_best_is_the_exact_recipe(engine):
    preset = resolve_preset(JobParams.parse({}))
    assert preset.steps == 50 and preset.spec.cfg_until == 1.0 and preset.spec.cache_threshold is None
    assert preset.caption_tokens == 512


def test_levers_are_applied_and_removed(engine):
    pipe = engine.pipe
    preset = resolve_preset(JobParams.parse({"preset": "fast", "steps": 10}))
    preset.apply(pipe)
    skip = preset._skip
    assert skip is not None and skip.cutoff == 4 and pipe.transformer._cache_config is not None
    preset.remove(pipe)
    assert "forward" not in vars(pipe.transformer) and pipe.transformer._cache_config is None


def test_late_cfg_skip_saves_the_unconditional_calls(engine):
    calls = []
    original = type(engine.pipe.transformer).forward

    def counting(self, *a, **k):
        calls.append(1)
        return original(self, *a, **k)

    type(engine.pipe.transformer).forward = counting
    try:
        latents(engine, preset="balanced", steps=10)
    finally:
        type(engine.pipe.transformer).forward = original
    assert len(calls) == 10 + 6  # every conditional pass, the unconditional one for the first 60%


def test_preset_deviation_is_finite_and_bounded(engine):
    best = latents(engine, preset="best", steps=10)
    again = latents(engine, preset="best", steps=10)
    assert torch.equal(best, again)
    for name in ("balanced", "fast"):
        other = latents(engine, preset=name, steps=10)
        dev = float((other - best).norm() / best.norm())
        assert np.isfinite(dev) and 0 < dev < 0.5, (name, dev)


def test_cfg_off_needs_no_skip(engine):
    preset = resolve_preset(JobParams.parse({"preset": "fast", "cfg_scale": 1.0}))
    preset.apply(engine.pipe)
    assert preset._skip is None
    preset.remove(engine.pipe)


@pytest.mark.parametrize(
    "gib, cap, quantize, mode, fp8",
    [
        (140, (9, 0), "auto", MemoryMode.gpu, False),
        (24, (8, 9), "auto", MemoryMode.host_offload, True),  # 4090: FP8 transformer fits, one component at a time
        (24, (8, 6), "auto", MemoryMode.host_offload, False),  # 3090: no FP8 units, int8 weights (test_int8_transformer)
        (16, (8, 9), "auto", MemoryMode.group_offload, False),
        (140, (9, 0), "fp8", MemoryMode.gpu, True),
        (24, (8, 9), "none", MemoryMode.group_offload, False),
        (16, (8, 9), "fp8", MemoryMode.group_offload, False),  # FP8 is not streamed (failed once, not measured since)
    ],
)
def test_memory_plan_for_cards(gib, cap, quantize, mode, fp8, monkeypatch):
    monkeypatch.setattr("backend.model.plan.has_triton", lambda: True)
    monkeypatch.setattr("backend.model.plan.host_ram_bytes", lambda: 64 * 2**30)
    device = DeviceInfo("cuda", "GPU", gib * 2**30, int((gib - 0.5) * 2**30), cap)
    choice = plan(device, "Qwen/Qwen-Image-Layered", "auto", quantize, "auto")
    compiled = mode in (MemoryMode.gpu, MemoryMode.host_offload)  # streamed offloading: compile stays off on auto
    assert (choice.mode, choice.fp8, choice.compile) == (mode, fp8, compiled), choice.reason
    assert plan(device, "Qwen/Qwen-Image-Layered", "auto", quantize, "on").compile


def test_fp8_needs_torchao(monkeypatch):
    monkeypatch.setattr("backend.model.device._has_torchao", lambda: False)
    device = DeviceInfo("cuda", "RTX 4090", 24 * 2**30, int(23.5 * 2**30), (8, 9))
    assert plan(device, "Qwen/Qwen-Image-Layered").mode == MemoryMode.group_offload  # bf16 does not fit one at a time
    asked = plan(device, "Qwen/Qwen-Image-Layered", "auto", "fp8")
    assert not asked.fp8 and "torchao is not installed" in asked.reason


def test_compile_auto_needs_triton(monkeypatch):
    device = DeviceInfo("cuda", "GPU", 140 * 2**30, 139 * 2**30, (9, 0))
    monkeypatch.setattr("backend.model.plan.has_triton", lambda: False)
    assert not plan(device, "x", compile="auto").compile
    assert plan(device, "x", compile="on").compile
    assert not plan(DeviceInfo("cpu", "CPU"), "x", compile="on").compile


def test_presets_are_described_for_status_and_doctor():
    assert set(PRESETS) == {"best", "balanced", "fast"}
    assert all(spec.summary for spec in PRESETS.values())


def test_attention_backend_choice_and_setting(tiny_model):
    from backend.model.attention import attention_backend

    assert attention_backend(DeviceInfo("cpu", "CPU")) is None
    assert attention_backend(DeviceInfo("cuda", "GPU", capability=(9, 0)), "sage") == "sage"
    assert attention_backend(DeviceInfo("cuda", "GPU"), "native") is None
    e = Engine(Settings(model=str(tiny_model), attention="_native_math"))
    e.load()
    assert e.status_json()["attention"] == "_native_math"
    r = e.run(IMG, JobParams.parse({"layers": 2, "steps": 2, "prompt": "x", "seed": 1}), lambda p: None, lambda: False)
    assert r.canvas_width == 64


def test_compiled_blocks_share_one_graph_with_and_without_the_step_cache():
    """Regional compilation survives Fast's first-block cache: no per-block recompiles, output as eager."""
    import copy

    import torch._dynamo
    from torch._dynamo.utils import counters

    from backend.model.compile import disable_compile, enable_compile, repeated_blocks
    from backend.model.tiny_model import TINY, build_random_pipeline

    arch = copy.deepcopy(TINY)
    arch["transformer"]["num_layers"] = 10  # more blocks than torch's recompile limit (8)
    engine = Engine(Settings(model="random", memory="cpu", quantize="none", compile="off"))
    engine.attach(build_random_pipeline(arch), DeviceInfo("cpu", "CPU"))
    eager = {p: latents(engine, preset=p, steps=2) for p in ("fast", "best")}
    torch._dynamo.reset()
    counters.clear()
    enable_compile(engine.pipe.transformer)
    try:
        compiled = {p: latents(engine, preset=p, steps=2) for p in ("fast", "best", "fast")}
        graphs = counters["stats"]["unique_graphs"]
        assert 1 <= graphs <= 3, f"{graphs} graphs for 10 blocks"  # one, plus dynamic shapes for prompt lengths
        for p, x in compiled.items():
            assert torch.isfinite(x).all()
            assert float((x - eager[p]).norm() / eager[p].norm()) < 0.01
    finally:
        disable_compile(engine.pipe.transformer)
    assert all("forward" not in vars(block) for block in repeated_blocks(engine.pipe.transformer))


# One server start: load the tiny model, compile its blocks as the server does, run one job; print the compile cache's
# counters.
START_AND_COMPILE = """
import json, sys
import numpy as np
from torch._dynamo.utils import counters
from backend.model.engine import Engine
from backend.core.job import JobParams
from backend.model.compile import enable_compile
from backend.core.settings import Settings

engine = Engine(Settings(model=sys.argv[1], quantize="none"))
engine.load()
enable_compile(engine.pipe.transformer)
job = JobParams.parse({"layers": 2, "steps": 2, "seed": 0, "prompt": "a poster", "restore": False})
engine.run(np.full((48, 64, 4), 128, np.uint8), job, lambda p: None, lambda: False)
print(json.dumps(dict(counters["inductor"])))
"""


def test_compiled_blocks_are_compiled_once_per_machine_not_per_start(tiny_model, tmp_path, start_env):
    """The second start finds every compiled graph in the disk cache under the user cache folder (diffusers' import
    has already set torch's own default by then)."""
    import json
    import subprocess
    import sys

    starts = []
    for _ in range(2):
        run = subprocess.run([sys.executable, "-c", START_AND_COMPILE, str(tiny_model)], env=start_env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        starts.append(json.loads(run.stdout.strip().splitlines()[-1]))
    first, second = starts
    assert first.get("fxgraph_cache_miss", 0) >= 1, first
    assert second.get("fxgraph_cache_miss", 0) == 0, second
    assert second.get("fxgraph_cache_hit", 0) >= first["fxgraph_cache_miss"], second
    assert any((tmp_path / "cache" / "inductor" / "fxgraph").iterdir())  # there, not in torch's temporary folder


def test_a_compile_cache_folder_the_user_chose_stays(tmp_path, monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from backend.model.compile import use_compile_cache

    monkeypatch.setenv("LAYERBRIDGE_CACHE_DIR", str(tmp_path / "ours"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    use_compile_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # what torch writes there by itself
    use_compile_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "ours" / "inductor")
