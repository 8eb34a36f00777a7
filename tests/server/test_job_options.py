"""What a job may ask for is declared once (backend/core/options.py): the hello announces it, JobParams enforces it."""

from __future__ import annotations

import pytest

from backend.core import options
from backend.core.errors import ErrorCode, LayerBridgeError
from backend.core.job import JobParams
from backend.core.protocol import CAPABILITIES
from backend.core.settings import Settings
from backend.server.handshake import hello_json


def refused(raw: dict, default_preset: str = "best") -> str:
    with pytest.raises(LayerBridgeError) as info:
        JobParams.parse(raw, default_preset)
    assert info.value.code == ErrorCode.invalid_params
    return info.value.message


def test_the_hello_announces_the_declared_options_in_the_documented_shape():
    hello = hello_json(Settings(preset="balanced"))
    assert "job_options" in hello["capabilities"] and "job_options" in CAPABILITIES
    announced = hello["job_options"]
    assert announced == {
        "presets": [
            {"name": "best", "label": "Best", "steps": 50, "cfg_until": 1.0, "caption_tokens": 512,
             "name_layers": True, "summary": options.PRESETS["best"].summary},
            {"name": "balanced", "label": "Balanced", "steps": 30, "cfg_until": 0.6, "caption_tokens": 256,
             "name_layers": True, "summary": options.PRESETS["balanced"].summary},
            {"name": "fast", "label": "Fast", "steps": 20, "cfg_until": 0.4, "caption_tokens": 160,
             "name_layers": False, "summary": options.PRESETS["fast"].summary},
        ],
        "preset": "balanced",
        "layers": {"min": 2, "max": 10, "default": 4},
        "resolution": {"choices": [640, 1024], "default": 640},
        "steps": {"min": 2, "max": 100, "default": None},
        "cfg_scale": {"min": 1.0, "max": 20.0, "default": 4.0},
        "caption_language": {"choices": ["en", "zh"], "default": "en"},
        "split_elements": {"choices": [False, True], "default": False},
    }
    assert all(p["summary"] for p in announced["presets"])
    assert hello_json(Settings())["job_options"]["preset"] == "best"


def test_job_params_take_the_announced_defaults_and_refuse_what_lies_outside_them():
    announced = hello_json(Settings())["job_options"]
    p = JobParams.parse({})
    assert (p.layers, p.resolution, p.steps, p.cfg_scale, p.caption_language, p.preset) == (
        announced["layers"]["default"], announced["resolution"]["default"], announced["steps"]["default"],
        announced["cfg_scale"]["default"], announced["caption_language"]["default"], announced["preset"])
    assert JobParams() == p  # the dataclass's own defaults are the declared ones too
    for key in ("layers", "steps", "cfg_scale"):
        low, high = announced[key]["min"], announced[key]["max"]
        assert getattr(JobParams.parse({key: low}), key) == low and getattr(JobParams.parse({key: high}), key) == high
        step = 1 if isinstance(low, int) else 0.5
        assert refused({key: low - step}) == f"{key} must be between {low} and {high} (got {low - step})"
        assert refused({key: high + step}) == f"{key} must be between {low} and {high} (got {high + step})"
    for key in ("resolution", "caption_language"):
        for choice in announced[key]["choices"]:
            assert getattr(JobParams.parse({key: choice}), key) == choice
    assert refused({"resolution": 800}) == "resolution must be 640 or 1024 (got 800)"
    assert refused({"caption_language": "fr"}) == "caption_language must be en or zh (got fr)"
    for preset in announced["presets"]:
        assert JobParams.parse({"preset": preset["name"]}).preset == preset["name"]
    assert refused({"preset": "draft"}) == "preset must be one of best, balanced, fast (got draft)"
    assert "too long" in refused({"preset": "x" * 100}) and "too long" in refused({"caption_language": "x" * 100})
    assert p.split_elements is announced["split_elements"]["default"] is False
    assert JobParams.parse({"split_elements": True}).split_elements is True
    assert refused({"split_elements": 1}) == "split_elements must be true or false (got 1)"


def test_changing_a_declaration_changes_the_announcement_and_the_checks_alike(monkeypatch):
    monkeypatch.setattr(options, "LAYERS", options.Range(3, 6, 5))
    monkeypatch.setattr(options, "RESOLUTION", options.Choice((512, 640, 1024), 1024))
    monkeypatch.setattr(options, "STEPS", options.Range(4, 40, None))
    monkeypatch.setattr(options, "CFG_SCALE", options.Range(1.0, 8.0, 2.5))
    monkeypatch.setattr(options, "CAPTION_LANGUAGE", options.Choice(("en", "zh", "de"), "de"))
    draft = options.PresetSpec("Draft", 8, 0.25, 0.1, 64, False, "8 steps, a quick look")
    monkeypatch.setattr(options, "PRESETS", {"best": options.PRESETS["best"], "draft": draft})

    announced = hello_json(Settings(preset="draft"))["job_options"]
    assert announced["layers"] == {"min": 3, "max": 6, "default": 5}
    assert announced["resolution"] == {"choices": [512, 640, 1024], "default": 1024}
    assert announced["steps"] == {"min": 4, "max": 40, "default": None}
    assert announced["cfg_scale"] == {"min": 1.0, "max": 8.0, "default": 2.5}
    assert announced["caption_language"] == {"choices": ["en", "zh", "de"], "default": "de"}
    assert [p["name"] for p in announced["presets"]] == ["best", "draft"] and announced["preset"] == "draft"
    assert announced["presets"][1] == {"name": "draft", "label": "Draft", "steps": 8, "cfg_until": 0.25,
                                       "caption_tokens": 64, "name_layers": False, "summary": "8 steps, a quick look"}

    p = JobParams.parse({}, "draft")
    assert (p.layers, p.resolution, p.cfg_scale, p.caption_language, p.preset) == (5, 1024, 2.5, "de", "draft")
    p = JobParams.parse({"layers": 3, "resolution": 512, "steps": 40, "cfg_scale": 8.0, "caption_language": "zh"})
    assert (p.layers, p.resolution, p.steps, p.cfg_scale, p.caption_language) == (3, 512, 40, 8.0, "zh")
    assert refused({"layers": 2}) == "layers must be between 3 and 6 (got 2)"
    assert refused({"layers": 10}) == "layers must be between 3 and 6 (got 10)"
    assert refused({"steps": 41}) == "steps must be between 4 and 40 (got 41)"
    assert refused({"cfg_scale": 9}) == "cfg_scale must be between 1.0 and 8.0 (got 9)"
    assert refused({"resolution": 2048}) == "resolution must be one of 512, 640, 1024 (got 2048)"
    assert refused({"caption_language": "fr"}) == "caption_language must be one of en, zh, de (got fr)"
    assert refused({"preset": "fast"}) == "preset must be best or draft (got fast)"


def test_the_model_side_and_the_command_line_read_the_same_declarations(monkeypatch):
    from backend.cli.main import build_parser
    from backend.model import presets

    assert presets.PRESETS is options.PRESETS
    preset = presets.resolve_preset(JobParams.parse({"preset": "fast"}))
    assert preset.steps == options.PRESETS["fast"].steps and preset.spec is options.PRESETS["fast"]

    monkeypatch.setattr(options, "LAYERS", options.Range(3, 6, 5))
    monkeypatch.setattr(options, "RESOLUTION", options.Choice((512, 640), 512))
    args = build_parser().parse_args(["decompose", "x.png", "--out", "x.psd"])
    assert (args.layers, args.resolution, args.preset, args.cfg_scale) == (5, 512, "best", options.CFG_SCALE.default)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["decompose", "x.png", "--out", "x.psd", "--resolution", "1024"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["decompose", "x.png", "--out", "x.psd", "--preset", "draft"])
