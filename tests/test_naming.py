"""Layer names from the text encoder (backend/model/naming.py): what is kept of an answer, what the encoder is shown, and the
answers put in order, on the tiny pipeline (whose random weights answer noise; the real model's answers are given)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.model.engine import JobCancelled
from backend.core.job import JobParams, Stage
from backend.model.naming import MAX_CHARS, NAME_SIDE, PROMPTS, clean_name, layer_picture, name_layers, plain_names, unique_names


@pytest.mark.parametrize("answer, name", [
    ("Logo", "Logo"),
    ("logo.", "Logo"),
    ('"Coffee cup"', "Coffee cup"),
    ("**Headline text**", "Headline text"),
    ("Layer name: Headline", "Headline"),
    ("The woman", "Woman"),
    ("Logo\nIt shows the brand's logo.", "Logo"),
    ("咖啡杯", "咖啡杯"),
    ("名称：标题", "标题"),
    ("咖啡\ufffd", "咖啡"),                      # the last character cut by the token limit
    ("A red car parked on a", None),            # a sentence cut off, not a name
    ("", None),
    ("...", None),
    ("\ufffd\ufffd的\ufffdC", None),             # undecodable bytes
    ("x" * (MAX_CHARS + 1), None),
])
def test_clean_name_keeps_a_short_name_or_nothing(answer, name):
    assert clean_name(answer) == name


def test_the_same_name_twice_is_numbered_from_the_bottom():
    assert unique_names(["Background", "Tree", "tree", "Sky", "Tree"]) == ["Background", "Tree", "tree 2", "Sky", "Tree 3"]


def test_the_encoder_sees_the_layers_content_on_grey():
    layer = np.zeros((480, 640, 4), np.uint8)
    layer[50:90, 100:200] = (255, 0, 0, 128)
    picture = layer_picture(layer)
    assert picture.mode == "RGB" and max(picture.size) <= NAME_SIDE and min(picture.size) == 56
    assert picture.width / picture.height == pytest.approx(104 / 44, rel=0.02)  # the box and its 2 px margin
    centre = np.asarray(picture)[picture.height // 2, picture.width // 2]
    assert np.abs(centre.astype(int) - (192, 64, 64)).max() <= 1  # half red over grey 128
    assert np.asarray(picture)[0, 0].tolist() == [128, 128, 128]  # the margin: grey
    full = np.full((480, 640, 4), 255, np.uint8)
    assert layer_picture(full).size == (NAME_SIDE, 252)
    assert layer_picture(np.zeros((8, 8, 4), np.uint8)) is None


def stack() -> list[np.ndarray]:
    """A background, two layers with content and an empty one between them."""
    layers = [np.full((64, 96, 4), 255, np.uint8) for _ in range(4)]
    layers[1][..., 3] = 0
    layers[1][10:30, 20:50, 3] = 255
    layers[2][..., 3] = 0
    return layers


def test_the_answers_name_the_layers_in_order(engine, monkeypatch):
    pipe = engine.pipe
    answers = iter(["Coffee cup", "The coffee cup."])
    prompts = []

    def generate(input_ids, **kwargs):
        prompts.append(pipe.vl_processor.batch_decode(input_ids)[0])
        assert kwargs["max_new_tokens"] == 8 and kwargs["do_sample"] is False
        said = pipe.vl_processor.tokenizer(next(answers), add_special_tokens=False, return_tensors="pt").input_ids
        return torch.cat([input_ids, said], dim=1)

    monkeypatch.setattr(pipe.text_encoder, "generate", generate)
    names = name_layers(pipe, stack(), "en", lambda: None)
    assert names == ["Background", "Coffee cup", "Layer 2", "Coffee cup 2"]
    assert len(prompts) == 2 and all("as a designer names a layer" in p for p in prompts)  # the empty layer: no call
    answers = iter(["咖啡杯", "标题"])
    prompts.clear()
    assert name_layers(pipe, stack(), "zh", lambda: None) == ["Background", "咖啡杯", "Layer 2", "标题"]
    assert all("设计师" in p for p in prompts)


def test_the_tiny_models_own_answers_are_names_or_plain_and_repeat(engine):
    names = name_layers(engine.pipe, stack(), "en", lambda: None)
    assert names == name_layers(engine.pipe, stack(), "en", lambda: None)
    assert len(names) == 4 and names[0] == "Background" and names[2] == "Layer 2"
    assert all(0 < len(n) <= MAX_CHARS + 3 and n.isprintable() for n in names) and len(set(names)) == 4


def test_a_cancel_stops_naming(engine):
    def cancel():
        raise JobCancelled()

    with pytest.raises(JobCancelled):
        name_layers(engine.pipe, stack(), "en", cancel)


@pytest.mark.parametrize("params, named", [
    ({}, True),
    ({"name_layers": False}, False),
    ({"preset": "balanced"}, True),
    ({"preset": "fast"}, False),
    ({"preset": "fast", "name_layers": True}, True),
])
def test_presets_name_layers_unless_the_job_says_otherwise(engine, params, named):
    events = []
    image = np.random.default_rng(4).integers(0, 256, (40, 56, 4), dtype=np.uint8)
    image[..., 3] = 255
    job = JobParams.parse(dict(layers=3, steps=2, prompt="a card", seed=2, restore=False, **params))
    r = engine.run(image, job, events.append, lambda: False)
    messages = [e.message for e in events if e.stage == Stage.finishing]
    assert ("Naming layers" in messages) == named and ("name_s" in r.timings) == named
    if not named:
        assert [layer.name for layer in r.layers] == plain_names(3)


@pytest.mark.parametrize("mode", ["group_offload", "sequential_offload"])
def test_streamed_modes_name_layers_only_when_asked(engine, monkeypatch, mode):
    from dataclasses import replace

    from backend.model.plan import MemoryMode

    monkeypatch.setattr(engine, "memory", replace(engine.memory, mode=MemoryMode(mode)))
    image = np.full((40, 56, 4), 200, np.uint8)
    for params, named in (({}, False), ({"name_layers": True}, True)):
        job = JobParams.parse(dict(layers=2, steps=2, prompt="a card", seed=2, restore=False, **params))
        assert ("name_s" in engine.run(image, job, lambda p: None, lambda: False).timings) == named


def test_a_failure_while_naming_leaves_plain_names(engine, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the text encoder is somewhere else")

    monkeypatch.setattr("backend.model.engine.name_layers", broken)
    job = JobParams.parse(dict(layers=3, steps=2, prompt="a card", seed=2, restore=False))
    r = engine.run(np.full((40, 56, 4), 200, np.uint8), job, lambda p: None, lambda: False)
    assert [layer.name for layer in r.layers] == plain_names(3)


def test_name_layers_must_be_a_boolean():
    from backend.core.errors import LayerBridgeError

    with pytest.raises(LayerBridgeError) as info:
        JobParams.parse({"name_layers": "yes"})
    assert info.value.code == "invalid_params"
    assert JobParams.parse({"name_layers": None}).name_layers is None


def test_the_prompts_ask_for_a_name_only():
    assert set(PROMPTS) == {"en", "zh"}
    assert all(p.count("<|image_pad|>") == 1 and p.endswith("<|im_start|>assistant\n") for p in PROMPTS.values())
