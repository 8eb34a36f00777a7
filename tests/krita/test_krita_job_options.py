"""The docker's job options from a server's hello (protocol.job_options): followed when announced, the plugin's own
values for an older server; the same cases as the Photoshop panel's jobOptions (tests/job_options_cases.json)."""

import copy
import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "krita_plugin"))

from layerbridge import protocol  # noqa: E402

CASES = json.loads((ROOT / "tests" / "job_options_cases.json").read_text(encoding="utf-8"))["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_job_options_from_a_hello(case):
    hello = copy.deepcopy(case["hello"])
    assert protocol.job_options(hello) == case["options"]
    assert hello == case["hello"]  # the hello is left as it was


def test_the_options_of_this_server_are_read_as_announced():
    from backend.core.settings import Settings
    from backend.server.handshake import hello_json

    hello = json.loads(json.dumps(hello_json(Settings(preset="fast"))))  # as it comes over the wire
    # everything the controls are built from; split_elements (a boolean whose default is the server's, false) is
    # the docker's own option, on by default, sent when the hello's capabilities announce it (protocol.features)
    announced = {k: v for k, v in hello["job_options"].items() if k != "split_elements"}
    assert protocol.job_options(hello) == announced and hello["job_options"]["preset"] == "fast"
    assert protocol.features(hello) == {"text_layers": True, "split_elements": True}


def test_the_fallback_is_what_this_server_declares_and_stays_untouched():
    """An older server offered what this one declares (backend/core/options.py), bar the presets' levers."""
    from backend.core.settings import Settings
    from backend.server.handshake import hello_json

    announced = hello_json(Settings())["job_options"]
    fallback = protocol.job_options(None)
    assert fallback == protocol.FALLBACK_JOB_OPTIONS
    assert [(p["name"], p["label"]) for p in fallback["presets"]] == [(p["name"], p["label"]) for p in announced["presets"]]
    assert {k: v for k, v in fallback.items() if k != "presets"} == \
        {k: v for k, v in announced.items() if k not in ("presets", "split_elements")}
    fallback["presets"].clear()
    fallback["layers"]["max"] = 99
    assert protocol.job_options({}) == protocol.FALLBACK_JOB_OPTIONS and protocol.FALLBACK_JOB_OPTIONS["layers"]["max"] == 10
    assert set(protocol.LANGUAGE_NAMES) == set(announced["caption_language"]["choices"])
