"""int8 transformer weights: the plan for cards without FP8 units, and the tiny pipeline with them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.model.engine import Engine
from backend.core.job import JobParams
from backend.model.device import DeviceInfo
from backend.model.plan import MemoryChoice, MemoryMode, plan
from backend.core.settings import Settings

MODEL = "Qwen/Qwen-Image-Layered"
IMG = np.random.default_rng(11).integers(0, 256, (40, 56, 4), dtype=np.uint8)
FAST = {"layers": 2, "preset": "fast", "steps": 4, "seed": 5, "prompt": ""}


def card(gib: float, capability: tuple[int, int], name: str = "GPU") -> DeviceInfo:
    return DeviceInfo("cuda", name, int(gib * 2**30), int((gib - 0.5) * 2**30), capability)


@pytest.mark.parametrize(
    "gib, capability, ram_gib, quantize, torchao, mode, fp8, int8",
    [
        (24, (8, 6), 64, "auto", True, MemoryMode.host_offload, False, True),  # RTX 3090: placed whole in int8
        (24, (8, 6), 32, "auto", True, MemoryMode.model_offload, False, True),  # RAM cannot keep every weight
        (24, (8, 6), 64, "none", True, MemoryMode.group_offload, False, False),  # bf16 asked for: streamed
        (24, (8, 6), 64, "auto", False, MemoryMode.group_offload, False, False),  # no torchao
        (16, (8, 6), 64, "auto", True, MemoryMode.group_offload, False, False),  # 20 GiB of int8 does not fit 16
        (48, (8, 6), 128, "auto", True, MemoryMode.host_offload, False, False),  # bf16 fits whole: nothing to end
        (24, (8, 9), 64, "auto", True, MemoryMode.host_offload, True, False),  # RTX 4090: FP8, as before
        (80, (8, 0), 128, "int8", True, MemoryMode.gpu, False, True),  # asked for by name
        (24, (8, 6), 64, "int8", True, MemoryMode.host_offload, False, True),  # by name: the mode fits int8's size
        (24, (8, 9), 64, "fp8", True, MemoryMode.host_offload, True, False),  # the same for FP8 by name
    ],
)
def test_auto_takes_int8_weights_where_they_end_the_streaming_on_cards_without_fp8(
    gib, capability, ram_gib, quantize, torchao, mode, fp8, int8, monkeypatch
):
    monkeypatch.setattr("backend.model.device._has_torchao", lambda: torchao)
    monkeypatch.setattr("backend.model.plan.host_ram_bytes", lambda: ram_gib * 2**30)
    choice = plan(card(gib, capability), MODEL, "auto", quantize, "auto")
    assert (choice.mode, choice.fp8, choice.transformer_int8) == (mode, fp8, int8), choice.reason
    assert choice.to_json()["transformer_int8"] is int8
    if int8 and quantize == "auto":
        assert "int8 transformer weights" in choice.reason and "no FP8 units" in choice.reason
    if (int8 or fp8) and quantize != "auto" and mode != MemoryMode.gpu:
        assert f"(--quantize {quantize})" in choice.reason
    if mode == MemoryMode.group_offload:  # streamed: the advice for a smaller file still stands
        assert "GGUF transformer file" in choice.reason


def test_int8_weights_for_modes_asked_by_name(monkeypatch, tmp_path):
    monkeypatch.setattr("backend.model.device._has_torchao", lambda: True)
    monkeypatch.setattr("backend.model.plan.host_ram_bytes", lambda: 64 * 2**30)
    rtx3090 = card(24, (8, 6), "RTX 3090")
    choice = plan(rtx3090, MODEL, "host_offload", "auto", "auto")
    assert choice.transformer_int8 and "bf16 transformer does not fit" in choice.reason
    assert not plan(rtx3090, MODEL, "host_offload", "none", "auto").transformer_int8
    streamed = plan(rtx3090, MODEL, "group_offload", "int8", "auto")
    assert not streamed.transformer_int8 and "int8 is off" in streamed.reason
    gguf = tmp_path / "q4.gguf"
    with open(gguf, "wb") as f:
        f.truncate(11 * 2**30)  # sparse: only its size is read
    packed = plan(rtx3090, MODEL, "auto", "int8", "auto", transformer_file=str(gguf))
    assert not packed.transformer_int8 and "no FP8 or int8 on top" in packed.reason
    assert not plan(DeviceInfo("mps", "Apple GPU"), MODEL, "auto", "int8").transformer_int8


@pytest.fixture(scope="module")
def plain_latents(tiny_model) -> torch.Tensor:
    e = Engine(Settings(model=str(tiny_model), quantize="none"))
    e.load()
    e.run(IMG, JobParams.parse(FAST), lambda p: None, lambda: False)
    return e.last_latents.clone()


def int8_weights(module: torch.nn.Module) -> list[str]:
    return [n for n, m in module.named_modules() if isinstance(m, torch.nn.Linear) and type(m.weight) is not torch.nn.Parameter]


def test_an_int8_transformer_runs_jobs_close_to_the_plain_one(tiny_model, plain_latents):
    pytest.importorskip("torchao")
    e = Engine(Settings(model=str(tiny_model), quantize="int8"))
    e.load()
    assert e.memory.transformer_int8 and not e.memory.fp8
    linears = [n for n, m in e.pipe.transformer.named_modules() if isinstance(m, torch.nn.Linear)]
    assert int8_weights(e.pipe.transformer) == linears  # every linear layer, nothing else
    assert not int8_weights(e.pipe.text_encoder)  # the text encoder is not streamed here: left as it is
    weight = e.pipe.transformer.transformer_blocks[0].img_mlp.net[2].weight
    assert weight.qdata.dtype == torch.int8 and weight.scale.numel() == weight.shape[0]  # a scale per output channel
    assert e.status_json()["memory_mode"]["transformer_int8"] is True

    results = []
    for _ in range(2):
        e._captions.clear()
        result = e.run(IMG, JobParams.parse(FAST), lambda p: None, lambda: False)
        assert len(result.layers) == 2 and all(layer.pixels.dtype == np.uint8 for layer in result.layers)
        results.append(e.last_latents.clone())
    assert torch.equal(results[0], results[1])  # deterministic
    deviation = float((results[0] - plain_latents).norm() / plain_latents.norm())
    assert 0 < deviation < 0.05, deviation  # int8 rounding moves the result a little, not a lot


def test_an_int8_transformer_under_host_offload_gives_the_same_latents(tiny_model, monkeypatch):
    """Placed whole and taken off again each job (here onto the CPU itself): the int8 weights come back from their
    host copies, and each job ends where the transformer left in place does."""
    pytest.importorskip("torchao")
    reference = Engine(Settings(model=str(tiny_model), quantize="int8"))
    reference.load()
    reference.run(IMG, JobParams.parse(FAST), lambda p: None, lambda: False)

    monkeypatch.setattr(Engine, "_plan", lambda self, d: MemoryChoice(MemoryMode.host_offload, "test", transformer_int8=True))
    monkeypatch.setattr("backend.model.loading.probe_device", lambda: DeviceInfo("cpu", "CPU"))
    e = Engine(Settings(model=str(tiny_model)))
    e.load()
    try:
        assert e.offload is not None and "transformer" in e.offload.modules
        assert int8_weights(e.pipe.transformer)
        for _ in range(2):
            e._captions.clear()
            e.run(IMG, JobParams.parse(FAST), lambda p: None, lambda: False)
            assert e.offload.current == "vae"  # the transformer went back to its host copy
            assert torch.equal(e.last_latents, reference.last_latents)
    finally:
        e.offload.remove()
