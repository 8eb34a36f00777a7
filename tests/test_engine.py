"""The engine end to end on the tiny pipeline, loaded through the same loader users hit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.model.engine import Engine, JobCancelled, ModelState
from backend.model.inputs import bucket_size, model_input
from backend.core.job import JobParams, Stage
from backend.model.device import DeviceInfo
from backend.model.plan import MemoryMode, choose_mode
from backend.model.naming import plain_names
from backend.core.settings import Settings

FAST = {"layers": 3, "steps": 2, "prompt": "a card", "seed": 11, "name_layers": False}


def source(w: int, h: int, seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 4), dtype=np.uint8)
    a[..., 3] = 255
    return a


def test_layers_come_back_at_source_size_bottom_to_top(engine):
    events = []
    r = engine.run(source(177, 93), JobParams.parse(dict(FAST, restore=False)), events.append, lambda: False)
    assert (r.canvas_width, r.canvas_height) == (177, 93)
    assert [layer.name for layer in r.layers] == plain_names(3) == ["Background", "Layer 1", "Layer 2"]
    for layer in r.layers:
        assert layer.pixels.dtype == np.uint8 and layer.pixels.shape[2] == 4
        assert layer.x + layer.width <= 177 and layer.y + layer.height <= 93
    stages = [e.stage for e in events]
    assert stages[0] == Stage.encoding and Stage.decoding in stages and stages[-1] == Stage.finishing
    denoising = [e for e in events if e.stage == Stage.denoising]
    assert denoising and all(e.eta_s is not None and e.eta_s > 0 for e in denoising if e.step > 1)
    assert r.caption == "a card" and r.seed == 11


def test_the_time_left_at_the_first_step_leaves_out_the_prompts_encoding(engine):
    """The first step's interval also holds the prompt's encoding: at step 1 the time left counts the last job's
    pace per step, scaled to this job's layers and resolution; from step 2, this job's own pace."""
    from backend.model.engine import step_work

    engine.run(source(40, 30), JobParams.parse(dict(FAST, layers=2, steps=3)), lambda p: None, lambda: False)
    pace, decode, finish = engine._step_seconds, engine._decode_seconds, engine._finish_eta()
    assert pace is not None and engine._step_work == step_work(2, 640)
    events = []
    engine.run(source(40, 30), JobParams.parse(dict(FAST, layers=4, steps=3)), events.append, lambda: False)
    first = next(e for e in events if e.stage == Stage.denoising and e.step == 1)
    assert first.eta_s == pytest.approx(2 * pace * step_work(4, 640) / step_work(2, 640) + decode + finish, rel=1e-3)
    second = next(e for e in events if e.stage == Stage.denoising and e.step == 2)
    assert engine._step_work == step_work(4, 640) and second.eta_s is not None


def test_same_seed_is_deterministic_and_other_seed_differs(engine):
    img = source(64, 40, 1)
    a = engine.run(img, JobParams.parse(FAST), lambda p: None, lambda: False)
    b = engine.run(img, JobParams.parse(FAST), lambda p: None, lambda: False)
    c = engine.run(img, JobParams.parse(dict(FAST, seed=12)), lambda p: None, lambda: False)
    assert all(np.array_equal(x.pixels, y.pixels) for x, y in zip(a.layers, b.layers))
    assert not all(np.array_equal(x.pixels, y.pixels) for x, y in zip(a.layers, c.layers))


def test_empty_prompt_captions_the_image_and_caches_it(engine):
    events = []
    img = source(50, 50, 2)
    r = engine.run(img, JobParams.parse(dict(FAST, prompt="")), events.append, lambda: False)
    assert Stage.captioning in [e.stage for e in events] and r.caption
    events.clear()
    again = engine.run(img, JobParams.parse(dict(FAST, prompt="")), events.append, lambda: False)
    assert again.caption == r.caption and again.timings["caption_s"] < r.timings["caption_s"]


def test_cancel_stops_within_one_step_and_delivers_nothing(engine):
    steps_seen = []

    def on_progress(p):
        if p.stage == Stage.denoising:
            steps_seen.append(p.step)

    with pytest.raises(JobCancelled):
        engine.run(source(40, 40), JobParams.parse(dict(FAST, steps=30)), on_progress, lambda: len(steps_seen) >= 2)
    assert steps_seen == [1, 2]


def test_cancel_during_captioning(engine):
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(JobCancelled):
        engine.run(source(33, 44, 9), JobParams.parse(dict(FAST, prompt="")), lambda p: None, cancelled)


def test_colour_under_alpha_0_does_not_reach_the_model(engine):
    # at the bucket's size the pipeline does not resize (which would clear it): two images that look alike, one with
    # white under its transparent half, the other black, must give the same layers
    white = source(640, 640, 5)
    white[:, :320, 3] = 0
    white[:, :320, :3] = 255
    black = white.copy()
    black[:, :320, :3] = 0
    params = JobParams.parse(dict(FAST, restore=False))
    a = engine.run(white, params, lambda p: None, lambda: False)
    b = engine.run(black, params, lambda p: None, lambda: False)
    assert all(np.array_equal(x.pixels, y.pixels) and (x.x, x.y) == (y.x, y.y) for x, y in zip(a.layers, b.layers))
    fed = np.asarray(model_input(white))
    assert not fed[:, :320].any() and np.array_equal(fed[:, 320:], white[:, 320:])


def test_bucket_size_matches_the_pipeline():
    assert bucket_size(640, 640, 640) == (640, 640)
    w, h = bucket_size(777, 333, 640)
    assert w % 32 == 0 and h % 32 == 0 and abs(w * h - 640 * 640) / (640 * 640) < 0.1


@pytest.mark.parametrize(
    "free_gib, expected",
    [(140, MemoryMode.gpu), (60, MemoryMode.host_offload), (24, MemoryMode.group_offload),
     (2, MemoryMode.sequential_offload)],
)
def test_memory_mode_from_free_vram(free_gib, expected):
    device = DeviceInfo("cuda", "GPU", int(free_gib * 2**30), int(free_gib * 2**30))
    choice = choose_mode(device, "Qwen/Qwen-Image-Layered")
    assert choice.mode == expected and choice.reason


def test_memory_mode_override_and_cpu():
    cuda = DeviceInfo("cuda", "GPU", 2**40, 2**40)
    assert choose_mode(cuda, "x", "group_offload").mode == MemoryMode.group_offload
    assert choose_mode(DeviceInfo("cpu", "CPU"), "x", "gpu").mode == MemoryMode.cpu
    with pytest.raises(ValueError):
        choose_mode(cuda, "x", "warp")


def test_unreachable_model_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    e = Engine(Settings(model="nobody/not-a-model"))
    from backend.core.errors import LayerBridgeError

    with pytest.raises(LayerBridgeError) as info:
        e.load()
    assert info.value.code.value == "model_unavailable"
    assert e.model_status.state == ModelState.failed and e.model_status.error


def test_out_of_memory_fails_the_job_with_advice_and_the_engine_recovers(engine, monkeypatch):
    from backend.core.errors import ErrorCode, LayerBridgeError

    transformer = engine.pipe.transformer

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(transformer, "forward", oom)
    with pytest.raises(LayerBridgeError) as info:
        engine.run(source(40, 30), JobParams.parse(FAST), lambda p: None, lambda: False)
    assert info.value.code == ErrorCode.out_of_memory
    assert "resolution 640" in info.value.message and "Close other programs that use the GPU" in info.value.message
    engine.memory.mode = MemoryMode.gpu  # what to try is the next mode that keeps less of the model on the GPU
    try:
        with pytest.raises(LayerBridgeError) as info:
            engine.run(source(40, 30), JobParams.parse(FAST), lambda p: None, lambda: False)
    finally:
        engine.memory.mode = MemoryMode.cpu
    assert "start the server with --memory host_offload" in info.value.message
    monkeypatch.undo()
    r = engine.run(source(40, 30), JobParams.parse(FAST), lambda p: None, lambda: False)
    assert r.canvas_width == 40


def test_compiled_captioning_gives_the_same_caption_and_falls_back_on_failure(engine, monkeypatch):
    img = source(60, 44, 5)
    params = JobParams.parse(dict(FAST, prompt=""))
    plain = engine.run(img, params, lambda p: None, lambda: False).caption
    te = engine.pipe.text_encoder
    real_generate = te.generate
    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("cache_implementation"))
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(te, "generate", spy)
    engine._captions.clear()
    engine.caption_compiled = True
    try:
        static = engine.run(img, params, lambda p: None, lambda: False).caption
        assert seen == ["static"] and static == plain  # greedy decoding: the static cache changes nothing

        def broken(*args, **kwargs):
            seen.append(kwargs.get("cache_implementation"))
            if kwargs.get("cache_implementation"):
                raise RuntimeError("compiler error")
            return real_generate(*args, **kwargs)

        monkeypatch.setattr(te, "generate", broken)
        engine._captions.clear()
        seen.clear()
        again = engine.run(img, params, lambda p: None, lambda: False).caption
        assert again == plain and seen == ["static", None] and engine.caption_compiled is False
    finally:
        engine.caption_compiled = False


def test_captioning_moves_an_offloaded_text_encoder_first(engine):
    """Under model offload, generate runs the vision encoder before any forward: the offload hook must run first."""
    te = engine.pipe.text_encoder
    calls = []

    class Hook:
        def pre_forward(self, module, *args, **kwargs):
            calls.append(module)
            return args, kwargs

    te._hf_hook = Hook()
    engine._captions.clear()
    try:
        engine.run(source(30, 30, 6), JobParams.parse(dict(FAST, prompt="")), lambda p: None, lambda: False)
    finally:
        del te._hf_hook
    assert calls and calls[0] is te


def test_captioning_reports_the_time_left(engine, monkeypatch):
    import backend.model.captioning as captioning_module

    monkeypatch.setattr(captioning_module, "CAPTION_PROGRESS_S", 0.0)
    engine.run(source(36, 36, 7), JobParams.parse(FAST), lambda p: None, lambda: False)  # the pace of a step
    engine._captions.clear()
    events = []
    engine.run(source(36, 36, 8), JobParams.parse(dict(FAST, prompt="")), events.append, lambda: False)
    timed = [e.eta_s for e in events if e.stage == Stage.captioning and e.eta_s is not None]
    assert len(timed) >= 3, "captioning should report the time left as tokens come"
    assert timed[-1] < timed[0]  # fewer tokens left, less time left
    encoding = next(e.eta_s for e in events if e.stage == Stage.encoding)
    assert timed[-1] >= encoding  # the denoising, decoding and finishing still ahead, plus the tokens left


def test_a_load_ahead_of_jobs_warms_up_the_compiler_once(tiny_model, monkeypatch):
    from backend.model.plan import MemoryChoice

    warmed = []
    monkeypatch.setattr(Engine, "_warm_up", lambda self: warmed.append(self))
    for compile_on, warm_up, expected in ((True, True, 1), (True, False, 0), (False, True, 0)):
        monkeypatch.setattr(Engine, "_plan", lambda self, d, c=compile_on: MemoryChoice(MemoryMode.cpu, "test", compile=c))
        monkeypatch.setattr("backend.model.loading.enable_compile", lambda transformer: None)
        warmed.clear()
        e = Engine(Settings(model=str(tiny_model)))
        e.load(warm_up=warm_up)
        e.load(warm_up=warm_up)  # already loaded: nothing again
        assert len(warmed) == expected, (compile_on, warm_up)


def test_fp8_whose_kernels_fail_the_check_is_not_used(tiny_model, monkeypatch):
    from backend.model.device import DeviceInfo
    from backend.model.plan import MemoryChoice

    checked = []

    def check(shapes):
        checked.append(shapes)
        return "FP8 failed a check on this card: txt_mlp (12288 → 3072, 6 rows): CUBLAS_STATUS_NOT_SUPPORTED"

    # a card that would take FP8 unless its kernel check fails; placed on the CPU, where the tiny model runs
    monkeypatch.setattr(Engine, "_plan", lambda self, d: MemoryChoice(MemoryMode.cpu, "test", fp8=d.fp8_problem is None))
    card = DeviceInfo("cuda", "RTX 4090", 24 * 2**30, 23 * 2**30, (8, 9))
    monkeypatch.setattr("backend.model.loading.probe_device", lambda: card)
    monkeypatch.setattr("backend.model.plan.fp8_kernel_problem", check)
    monkeypatch.setattr("backend.model.loading.enable_fp8", lambda *a, **k: pytest.fail("FP8 enabled despite the check"))
    e = Engine(Settings(model=str(tiny_model)))
    e.load()
    assert not e.memory.fp8 and e.device.fp8_problem.startswith("FP8 failed a check")
    assert ("transformer_blocks.0.txt_mlp.net.2", 128, 32) in checked[0]


def test_the_warm_up_job_runs_and_leaves_nothing_behind(engine, monkeypatch):
    engine._captions.clear()
    engine._warm_up()
    assert engine.last_latents is not None and not engine._captions and engine._finish_seconds is None
    monkeypatch.setattr(engine, "run", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("compiler crashed")))
    engine._warm_up()  # a failed warm-up is logged, not raised


def test_a_job_behind_the_warm_up_says_the_model_is_being_prepared(tiny_model, monkeypatch):
    import asyncio
    import threading

    from backend.model.plan import MemoryChoice
    from backend.server.worker import Worker

    compiling = threading.Event()
    monkeypatch.setattr(Engine, "_plan", lambda self, d: MemoryChoice(MemoryMode.cpu, "test", compile=True))
    monkeypatch.setattr("backend.model.loading.enable_compile", lambda transformer: None)
    monkeypatch.setattr(Engine, "_warm_up", lambda self: compiling.wait(60))  # stands for the compiler's minute

    async def scenario() -> list[dict]:
        worker = Worker(Engine(Settings(model=str(tiny_model))), max_queue=4, result_ttl_s=60)
        worker.start()
        worker.load_model()
        job = worker.submit(source(32, 32, 3), JobParams.parse(FAST))
        updates = worker.subscribe(job.id)
        seen = []
        try:
            while not seen or seen[-1]["state"] not in ("done", "failed", "cancelled"):
                seen.append(await asyncio.wait_for(updates.get(), 120))
                if seen[-1]["stage"] == "loading_model":
                    compiling.set()
        finally:
            compiling.set()
            await worker.stop()
        return seen

    seen = asyncio.run(scenario())
    preparing = [s for s in seen if s["stage"] == "loading_model"]
    assert preparing and preparing[0]["state"] == "running" and preparing[0]["message"] == "Preparing the model"
    assert seen[-1]["state"] == "done"


def test_finished_results_are_bounded_in_bytes_and_the_newest_is_always_kept():
    import time

    from backend.imaging.image import PlacedLayer
    from backend.core.job import Job, JobResult
    from backend.server.worker import Worker

    worker = Worker(None, max_queue=4, result_ttl_s=3600, max_results=16, max_result_bytes=20_000)

    def finished(pixels: int, age_s: float) -> Job:
        job = Job(JobParams.parse({}), np.zeros((0, 0, 4), np.uint8))
        layer = PlacedLayer("Background", 0, 0, np.zeros((1, pixels, 4), np.uint8))
        job.result = JobResult(pixels, 1, [layer], seed=1, caption="", restored=True, timings={})
        job.finished_at = time.monotonic() - age_s
        worker.jobs[job.id] = job
        return job

    oldest, older, newer, newest = finished(1000, 40), finished(1000, 30), finished(1000, 20), finished(4000, 10)
    worker._expire()
    # newest first: 16,000 + 4,000 bytes fit the bound, the next 4,000 do not: the two oldest go
    assert set(worker.jobs) == {newest.id, newer.id}
    assert oldest.id not in worker.jobs and older.id not in worker.jobs
    huge = finished(100_000, 0)  # alone over the bound: still kept, it is what its client is about to fetch
    worker._expire()
    assert set(worker.jobs) == {huge.id}
