"""Element split in the job (option split_elements) and the split task, in process: the hierarchy the engine builds,
its progress, cancel and time left, a failure that leaves unsplit layers, and the text that guides and names the
elements (docs/elements.md, docs/protocol.md §3)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from backend.core.job import Job, JobParams, JobResult, Stage
from backend.core.layer import PlacedLayer
from backend.imaging import split as split_module
from backend.imaging.image import composite
from backend.imaging.split import split_stack
from backend.model import split_task
from backend.model.job_hooks import JobCancelled
from backend.model.split_task import run_split

DEJAVU_BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
FAST = {"layers": 3, "steps": 2, "prompt": "a test card", "cfg_scale": 1.0, "seed": 7, "split_elements": True}


def shapes(width: int = 97, height: int = 61) -> np.ndarray:
    """Three separate opaque rectangles over transparency, noise colour: each layer cut by its alpha holds three."""
    a = np.random.default_rng(0).integers(0, 256, (height, width, 4), dtype=np.uint8)
    a[..., 3] = 0
    a[5:25, 5:30, 3] = 255
    a[10:20, 70:80, 3] = 255
    a[35:55, 60:90, 3] = 200
    return a


def poster() -> np.ndarray:
    """A heading's text and a disc, apart."""
    image = Image.new("RGBA", (560, 220), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.text((20, 20), "Fresh bread", font=ImageFont.truetype(DEJAVU_BOLD, 60), fill=(10, 90, 50, 255))
    draw.ellipse((400, 120, 500, 200), fill=(200, 40, 40, 255))
    return np.asarray(image)


def test_the_engine_returns_each_layer_but_the_background_as_a_group_of_its_elements(engine):
    messages: list[tuple[Stage, str]] = []
    result = engine.run(shapes(), JobParams.parse(FAST), lambda p: messages.append((p.stage, p.message)), lambda: False)
    said = [m for _, m in messages]
    assert said.index("Reading text") < said.index("Splitting elements") == len(said) - 1
    assert messages[-1][0] == Stage.finishing
    assert "split_s" in result.timings and result.notes == []
    layers = result.layers
    assert [(layer.name, layer.group, layer.parent) for layer in layers] == [
        ("Background", False, None),
        ("Layer 1", True, None), ("Layer 1 1", False, 1), ("Layer 1 2", False, 1), ("Layer 1 3", False, 1),
        ("Layer 2", True, None), ("Layer 2 1", False, 5), ("Layer 2 2", False, 5), ("Layer 2 3", False, 5)]
    assert layers[1].children == [2, 3, 4] and layers[5].children == [6, 7, 8]
    assert layers[1].box == (5, 5, 85, 50) and layers[1].pixels.shape == (0, 0, 4)

    job = Job(JobParams.parse(FAST), np.zeros((1, 1, 4), np.uint8))
    job.result = result
    entries = job.result_json(60)["layers"]
    assert entries[1] == {"index": 1, "name": "Layer 1", "group": True, "children": [2, 3, 4], "parent": None,
                          "x": 5, "y": 5, "width": 85, "height": 50, "bytes": 0, "text": []}
    assert entries[2] == {"index": 2, "name": "Layer 1 1", "group": False, "parent": 1, "x": 5, "y": 5,
                          "width": 25, "height": 20, "bytes": 25 * 20 * 4, "text": []}
    assert entries[0]["group"] is False and entries[0]["parent"] is None and "children" not in entries[0]

    # the time left of the next job counts the split, as it last took
    engine._splitting = True
    with_split = engine._finish_eta()
    engine._splitting = False
    assert with_split == pytest.approx(engine._finish_eta() + engine._split_seconds)


def test_a_job_is_cancelled_while_its_layers_are_split(engine):
    seen: list[str] = []
    with pytest.raises(JobCancelled):
        engine.run(shapes(), JobParams.parse(FAST), lambda p: seen.append(p.message),
                   lambda: bool(seen) and seen[-1] == "Splitting elements")


def test_a_failed_split_leaves_the_layers_unsplit_with_a_note(monkeypatch):
    def broken(*args, **kwargs):
        raise MemoryError("no room")

    monkeypatch.setattr(split_module, "split_layer", broken)
    layers = [PlacedLayer("Background", 0, 0, shapes()), PlacedLayer("Layer 1", 0, 0, shapes())]
    out, notes = split_task.split_job_layers(layers, lambda: False)
    assert out == layers and all(layer.parent is None and not layer.group for layer in out)
    assert notes == ["The layers were not split into elements (MemoryError: no room)."]


def test_split_stack_keeps_the_background_and_single_elements_and_hands_each_element_its_text():
    one = np.zeros((20, 20, 4), np.uint8)
    one[5:15, 5:15] = 255
    text_and_disc = PlacedLayer("Poster", 10, 30, poster())
    text_and_disc.text = [{"text": "Fresh bread", "box": {"x": 30, "y": 55, "width": 360, "height": 60}}]
    layers = [PlacedLayer("Background", 0, 0, shapes()), PlacedLayer("Dot", 3, 4, one), text_and_disc,
              PlacedLayer("Empty", 0, 0, np.zeros((0, 0, 4), np.uint8))]
    calls: list[int] = []
    out = split_stack(layers, lambda: calls.append(1))
    assert len(calls) == 4
    assert [(layer.name, layer.parent, layer.children) for layer in out] == [
        ("Background", None, None), ("Dot", None, None), ("Poster", None, [3, 4]),
        ("Fresh bread", 2, None), ("Poster 2", 2, None), ("Empty", None, None)]
    assert out[3].text == text_and_disc.text and out[4].text == []
    kids = [out[3].box, out[4].box]
    x0, y0 = min(b[0] for b in kids), min(b[1] for b in kids)
    assert out[2].box == (x0, y0, max(b[0] + b[2] for b in kids) - x0, max(b[1] + b[3] for b in kids) - y0)
    assert out[4].box == (10 + 400, 30 + 120, 101, 81)  # the disc, at its place on the canvas
    whole = composite([text_and_disc], 600, 300)
    assert np.array_equal(composite(out[3:5], 600, 300), whole)


def test_the_split_task_reads_the_text_first_and_names_the_element_after_it():
    progress: list[str] = []
    result = run_split(poster(), JobParams.parse_split({"name": "Poster"}), lambda p: progress.append(p.message),
                       lambda: False)
    assert progress == ["Reading text", "Splitting elements"]
    assert isinstance(result, JobResult) and result.seed is None and result.caption == "" and not result.restored
    assert set(result.timings) == {"text_s", "split_s"}
    assert [layer.name for layer in result.layers] == ["Fresh bread", "Poster 2"]
    assert [block["text"] for block in result.layers[0].text] == ["Fresh bread"] and result.layers[1].text == []
    assert all(layer.parent is None and not layer.group for layer in result.layers)

    plain = run_split(poster(), JobParams.parse_split({"text_layers": False}), lambda p: None, lambda: False)
    assert [layer.name for layer in plain.layers] == ["Layer 1", "Layer 2"] and set(plain.timings) == {"split_s"}


def test_the_split_task_of_an_empty_or_whole_layer_gives_one_entry_and_stops_when_cancelled():
    empty = run_split(np.zeros((48, 64, 4), np.uint8), JobParams.parse_split({"name": "Glass"}), lambda p: None,
                      lambda: False)
    assert [(layer.name, layer.box) for layer in empty.layers] == [("Glass", (0, 0, 0, 0))]
    one = np.zeros((40, 40, 4), np.uint8)
    one[10:30, 10:30] = 255
    whole = run_split(one, JobParams.parse_split({"text_layers": False}), lambda p: None, lambda: False)
    assert [(layer.name, layer.box) for layer in whole.layers] == [("Layer", (10, 10, 20, 20))]
    with pytest.raises(JobCancelled):
        run_split(one, JobParams.parse_split({}), lambda p: None, lambda: True)
