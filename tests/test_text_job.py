"""Text in the job (option text_layers): each returned layer's blocks in the result, on the canvas; a failure of the
text engine is a note, never a failed job; exports carry the blocks and name the layers after their words."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

pytest.importorskip("rapidocr_onnxruntime")

from backend.core.errors import LayerBridgeError  # noqa: E402
from backend.core.job import Job, JobParams, JobResult, Stage  # noqa: E402
from backend.core.layer import PlacedLayer  # noqa: E402
from backend.core.protocol import CAPABILITIES  # noqa: E402
from backend.imaging import export  # noqa: E402
from backend.text.layers import read_layers_text  # noqa: E402

DEJAVU_BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def text_layer(words: str = "Fresh bread", size: int = 60) -> np.ndarray:
    image = Image.new("RGBA", (520, 120), (0, 0, 0, 0))
    ImageDraw.Draw(image).text((10, 20), words, font=ImageFont.truetype(DEJAVU_BOLD, size), fill=(10, 90, 50, 255))
    return np.asarray(image)


def test_text_layers_is_on_by_default_a_boolean_and_announced():
    assert JobParams.parse({}).text_layers is True
    assert JobParams.parse({"text_layers": False}).text_layers is False
    with pytest.raises(LayerBridgeError) as err:
        JobParams.parse({"text_layers": "yes"})
    assert err.value.code.value == "invalid_params"
    assert "text_layers" in CAPABILITIES


def test_blocks_are_placed_on_the_canvas_and_go_into_the_result():
    layers = [PlacedLayer("Background", 0, 0, np.full((300, 700, 4), 255, np.uint8)),
              PlacedLayer("Title", 100, 150, text_layer())]
    assert read_layers_text(layers, lambda: None) == []
    assert layers[0].text == []
    (block,) = layers[1].text
    assert block["text"] == "Fresh bread" and block["font"]["bold"] and block["editable"]
    assert 110 <= block["box"]["x"] <= 115 and 170 <= block["box"]["y"] <= 190  # layer offset added
    assert block["lines"][0]["baseline"] > block["box"]["y"]
    job = Job(JobParams(), np.zeros((1, 1, 4), np.uint8))
    job.result = JobResult(700, 300, layers, 1, "", True, {"text_s": 0.5})
    result = job.result_json(60)
    assert result["layers"][1]["text"] == layers[1].text and result["layers"][0]["text"] == []
    assert result["notes"] == []
    json.dumps(result)


def test_an_engine_failure_leaves_plain_layers_and_a_note(monkeypatch):
    def broken(image):
        raise RuntimeError("no ONNX Runtime")

    monkeypatch.setattr("backend.text.reading.read_text", broken)
    layers = [PlacedLayer("Title", 0, 0, text_layer())]
    notes = read_layers_text(layers, lambda: None)
    assert layers[0].text == [] and len(notes) == 1 and "no ONNX Runtime" in notes[0]


def test_a_cancel_passes_through():
    class Cancelled(Exception):
        pass

    def cancel():
        raise Cancelled()

    with pytest.raises(Cancelled):
        read_layers_text([PlacedLayer("Title", 0, 0, text_layer())], cancel)


def test_empty_and_degenerate_layers_give_no_blocks():
    layers = [PlacedLayer("Empty", 0, 0, np.zeros((0, 0, 4), np.uint8)),
              PlacedLayer("Dot", 5, 5, np.full((1, 1, 4), 255, np.uint8)),
              PlacedLayer("Clear", 0, 0, np.zeros((50, 80, 4), np.uint8))]
    assert read_layers_text(layers, lambda: None) == [] and all(layer.text == [] for layer in layers)


def test_exports_carry_the_blocks_and_name_layers_after_their_words(tmp_path: Path):
    layers = [PlacedLayer("Background", 0, 0, np.full((300, 700, 4), 255, np.uint8)),
              PlacedLayer("Title", 100, 150, text_layer())]
    read_layers_text(layers, lambda: None)
    export.write_folder(tmp_path / "out", layers, 700, 300)
    manifest = json.loads((tmp_path / "out" / "layers.json").read_text(encoding="utf-8"))
    assert manifest["layers"][1]["text"] == layers[1].text and manifest["layers"][0]["text"] == []
    back, _, _ = export.read_folder(tmp_path / "out")
    assert back[1].text == layers[1].text
    export.write_ora(tmp_path / "out.ora", layers, 700, 300)
    stack = zipfile.ZipFile(tmp_path / "out.ora").read("stack.xml").decode()
    assert 'name="Fresh bread"' in stack and 'name="Background"' in stack
    export.write_psd(tmp_path / "out.psd", layers, 700, 300)
    from psd_tools import PSDImage

    assert [layer.name for layer in PSDImage.open(tmp_path / "out.psd")] == ["Background", "Fresh bread"]


@pytest.fixture(scope="module")
def engine(tiny_model):
    from backend.core.settings import Settings
    from backend.model.engine import Engine

    e = Engine(Settings(model=str(tiny_model)))
    e.load()
    return e


def test_the_job_reads_text_after_restoring_unless_told_not_to(engine, monkeypatch):
    image = np.full((40, 56, 4), 200, np.uint8)
    for params, reads in (({}, True), ({"text_layers": False}, False)):
        events = []
        job = JobParams.parse(dict(layers=2, steps=2, prompt="a card", seed=2, restore=False, name_layers=False,
                                   **params))
        r = engine.run(image, job, events.append, lambda: False)
        messages = [e.message for e in events if e.stage == Stage.finishing]
        assert ("Reading text" in messages) == reads and ("text_s" in r.timings) == reads
        if reads:
            assert messages.index("Reading text") > messages.index("Resizing layers")
        assert all(isinstance(layer.text, list) for layer in r.layers) and r.notes == []

    def broken(image):
        raise RuntimeError("the text engine broke")

    monkeypatch.setattr("backend.text.reading.read_text", broken)
    r = engine.run(image, JobParams.parse(dict(layers=2, steps=2, prompt="a card", seed=2, restore=False,
                                               name_layers=False)), lambda p: None, lambda: False)
    assert len(r.layers) == 2 and len(r.notes) == 1 and "the text engine broke" in r.notes[0]
