"""Host offload on the tiny pipeline: one component placed at a time, no copy on the way back, same results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.engine import Engine
from backend.job import JobParams
from backend.memory import DeviceInfo, MemoryMode, plan
from backend.offload import HostOffload
from backend.settings import Settings

IMG = np.random.default_rng(9).integers(0, 256, (40, 56, 4), dtype=np.uint8)
FAST = {"layers": 2, "preset": "fast", "steps": 4, "seed": 5, "prompt": ""}


@pytest.fixture()
def engine(tiny_model):
    e = Engine(Settings(model=str(tiny_model)))
    e.load()
    yield e
    if e.offload is not None:
        e.offload.remove()


def run(engine: Engine) -> torch.Tensor:
    engine._captions.clear()
    engine.run(IMG, JobParams.parse(FAST), lambda p: None, lambda: False)
    return engine.last_latents.clone()


def test_one_component_at_a_time_and_back_to_the_host_copy_without_a_copy(engine):
    pipe = engine.pipe
    before = {name: p.detach().clone() for name, p in pipe.transformer.named_parameters()}
    offload = HostOffload(pipe, "meta")  # the meta device drops data: only host copies can bring it back
    engine.offload = offload
    host = offload.host["transformer"]

    offload.onload("transformer")
    assert {p.device.type for p in pipe.transformer.parameters()} == {"meta"}
    assert {p.device.type for p in pipe.vae.parameters()} == {"cpu"}
    offload.onload("vae")
    assert {p.device.type for p in pipe.vae.parameters()} == {"meta"}
    for name, p in pipe.transformer.named_parameters():
        assert p.device.type == "cpu" and p.data_ptr() == host[name].data_ptr(), name
        assert torch.equal(p, before[name]), name
    assert offload.current == "vae" and pipe._execution_device == torch.device("meta")
    assert offload.weight_bytes() == sum(t.untyped_storage().nbytes() for s in offload.host.values() for t in s.values())

    offload.remove()
    engine.offload = None
    assert all(not hasattr(m, "_hf_hook") for m in (pipe.transformer, pipe.vae, pipe.text_encoder))
    assert {p.device.type for p in pipe.vae.parameters()} == {"cpu"}


def test_jobs_place_each_component_when_it_runs_and_give_the_same_latents(engine, monkeypatch):
    plain = run(engine)
    offload = HostOffload(engine.pipe, "cpu")
    engine.offload = offload
    placed: list[str] = []
    onload = offload.onload

    def recording(name: str) -> None:
        if offload.current != name:
            placed.append(name)
        onload(name)

    monkeypatch.setattr(offload, "onload", recording)
    first = run(engine)
    assert placed == ["text_encoder", "vae", "transformer", "vae"]  # caption, encode, denoise, decode
    # Fast's late-CFG skip wraps the transformer's forward for the job: the offload hook must survive it
    assert getattr(vars(engine.pipe.transformer).get("forward"), "func", None) is not None
    placed.clear()
    second = run(engine)
    assert placed == ["text_encoder", "vae", "transformer", "vae"]
    assert torch.equal(first, plain) and torch.equal(second, plain)


@pytest.mark.parametrize("gib, cap, fp8", [(24, (8, 9), True), (48, (8, 9), False), (24, (8, 6), False)])
def test_host_offload_plan_takes_fp8_where_the_transformer_does_not_fit(gib, cap, fp8, monkeypatch):
    monkeypatch.setattr("backend.memory._has_triton", lambda: True)
    device = DeviceInfo("cuda", "GPU", gib * 2**30, int((gib - 0.5) * 2**30), cap)
    choice = plan(device, "Qwen/Qwen-Image-Layered", "host_offload", "auto", "auto")
    assert (choice.mode, choice.fp8, choice.compile) == (MemoryMode.host_offload, fp8, True), choice.reason
    assert plan(device, "Qwen/Qwen-Image-Layered", "host_offload", "none", "auto").fp8 is False
