"""Unusual documents end to end through the real server and the tiny model: tiny and thin images, transparency,
flat colour. The layers come back at the source's size and recomposite to it within docs/restoration.md's bound."""

from __future__ import annotations

import json

import numpy as np
import pytest
from server.wire import FAST, image, request, submit_http, wait_state

from backend.imaging.image import PlacedLayer
from backend.imaging.metrics import on_canvas, recomposition

BOUND = 2.0 / 255.0


def decompose(server, source: np.ndarray) -> tuple[dict, list[PlacedLayer]]:
    status, answer = submit_http(server, source, dict(FAST))
    assert status == 202, answer
    assert wait_state(server, answer["job"])["state"] == "done"
    status, _, body = request(server, "GET", f"/v1/jobs/{answer['job']}/result")
    result = json.loads(body)
    layers = []
    for entry in result["layers"]:
        status, _, data = request(server, "GET", f"/v1/jobs/{answer['job']}/layers/{entry['index']}")
        assert status == 200 and len(data) == entry["bytes"] == entry["width"] * entry["height"] * 4
        pixels = np.frombuffer(data, np.uint8).reshape(entry["height"], entry["width"], 4)
        layers.append(PlacedLayer(entry["name"], entry["x"], entry["y"], pixels))
    return result, layers


def check_recomposes(result: dict, layers: list[PlacedLayer], source: np.ndarray) -> None:
    height, width = source.shape[:2]
    assert result["canvas"] == {"width": width, "height": height} and result["restored"] is True
    assert len(layers) == FAST["layers"]
    for layer in layers:
        assert 0 <= layer.x and layer.x + layer.width <= width and 0 <= layer.y and layer.y + layer.height <= height
    rebuilt = recomposition(layers, source)
    assert rebuilt.within(BOUND), (rebuilt.max_rgb * 255, rebuilt.max_alpha * 255)


@pytest.mark.parametrize("size", [(1, 1), (31, 17), (2000, 40)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_small_and_thin_images_come_back_at_their_size(live_server, size):
    source = image(*size, seed=1)
    check_recomposes(*decompose(live_server, source), source)


def test_a_logo_on_a_transparent_background_stays_transparent_around_it(live_server):
    height, width = 120, 200
    yy, xx = np.mgrid[0:height, 0:width]
    r2 = (xx - 100) ** 2 + (yy - 60) ** 2
    source = np.zeros((height, width, 4), np.uint8)
    source[..., :3] = 255  # colour under alpha 0, as many files carry it: it must show nowhere
    source[r2 < 40**2] = [200, 30, 40, 255]
    source[(r2 >= 40**2) & (r2 < 42**2)] = [200, 30, 40, 128]  # anti-aliased rim
    source[[5, 110, 7], [3, 190, 150]] = [10, 250, 10, 255]  # a few lone opaque pixels far from the logo
    result, layers = decompose(live_server, source)
    check_recomposes(result, layers, source)
    clear = source[..., 3] == 0
    for layer in layers:
        full = on_canvas(layer, width, height)
        assert not full[clear].any(), layer.name  # transparent, and no colour kept there
        assert not full[full[..., 3] == 0].any(), layer.name


def test_a_fully_transparent_image_gives_empty_layers(live_server):
    source = np.zeros((40, 60, 4), np.uint8)
    source[..., :3] = 90
    result, _ = decompose(live_server, source)
    assert result["canvas"] == {"width": 60, "height": 40}
    assert [(e["width"], e["height"], e["bytes"]) for e in result["layers"]] == [(0, 0, 0)] * FAST["layers"]


def test_semi_transparent_everywhere(live_server):
    source = image(90, 70, seed=2)
    source[..., 3] = 100
    check_recomposes(*decompose(live_server, source), source)


def test_a_pure_white_image(live_server):
    source = np.full((50, 80, 4), 255, np.uint8)
    check_recomposes(*decompose(live_server, source), source)
