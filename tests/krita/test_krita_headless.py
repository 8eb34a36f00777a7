"""The plugin inside a real Krita (kritarunner, offscreen), against the real server on the tiny model."""

import json
import pathlib
import socket
import threading
import urllib.request

import pytest

from conftest import needs_krita

pytestmark = needs_krita


def test_refuses_deep_colour_and_survives_a_half_built_group(krita):
    res = krita.run(["colour", "halfbuilt"], timeout=120)
    colour = res["colour"]
    assert colour["ok"] is False and colour["code"] == "unsupported_document"
    assert "16-bit" in colour["text"] and "8-bit" in colour["text"] and colour["unchanged"]
    half = res["halfbuilt"]
    assert half["raised"] and half["unchanged"], half


def test_stopped_server_gives_words_not_a_crash(krita):
    with socket.socket() as s:          # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        dead = "http://127.0.0.1:%d" % s.getsockname()[1]
    res = krita.run(["stopped"], timeout=120, LB_DEAD_URL=dead, LB_URL=dead)
    out = res["stopped"]
    assert out["ok"] is False and out["code"] == "unreachable", out
    assert "not running" in out["text"] and out["unchanged"]
    assert dead in out["details"]
