"""The element split: every scene of tests/split_scenes.py comes back as its elements, each whole (alpha IoU ≥ 0.95),
and the elements composited give back the layer exactly."""

from __future__ import annotations

import numpy as np
import pytest

from backend.core.layer import PlacedLayer
from backend.imaging.export import flatten
from backend.imaging.split import MAX_ELEMENTS, TextBlock, split_layer

from split_scenes import all_scenes, alpha_iou, on_canvas

SCENES = all_scenes()


def premultiplied(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.int64)
    return np.concatenate([a[..., :3] * a[..., 3:] // 255, a[..., 3:]], axis=-1)


def recomposition_error(elements: list[PlacedLayer], layer: np.ndarray) -> int:
    height, width = layer.shape[:2]
    back = np.asarray(flatten(elements, width, height))
    return int(np.abs(premultiplied(back) - premultiplied(layer)).max()) if layer.size else 0


@pytest.mark.parametrize("scene", SCENES, ids=[s.name for s in SCENES])
def test_scene_splits_into_its_elements(scene) -> None:
    layer = scene.layer()
    elements = split_layer(PlacedLayer("Layer", 0, 0, layer))
    assert recomposition_error(elements, layer) == 0
    # every pixel in exactly one element
    coverage = np.zeros(layer.shape[:2], np.int64)
    for e in elements:
        coverage[e.y:e.y + e.height, e.x:e.x + e.width] += e.pixels[..., 3] > 0
    assert (coverage == (layer[..., 3] > 0)).all()
    if scene.name.startswith("confetti"):
        assert len(elements) == MAX_ELEMENTS
        return
    assert len(elements) == len(scene.elements)
    found = [on_canvas(e, scene.width, scene.height)[..., 3] for e in elements]
    for truth in scene.elements:
        assert max(alpha_iou(truth[..., 3], f) for f in found) >= 0.95


def test_elements_are_cropped_placed_and_named() -> None:
    pixels = np.zeros((50, 100, 4), np.uint8)
    pixels[10:20, 5:15] = (255, 0, 0, 255)
    pixels[30:45, 60:90] = (0, 0, 255, 255)
    elements = split_layer(PlacedLayer("Logo", 200, 300, pixels))
    assert [(e.name, e.x, e.y, e.width, e.height) for e in elements] == [
        ("Logo 1", 205, 310, 10, 10), ("Logo 2", 260, 330, 30, 15)]
    one = split_layer(PlacedLayer("Logo", 0, 0, pixels[:25]))
    assert [(e.name, e.x, e.y) for e in one] == [("Logo", 5, 10)]


def test_text_blocks_join_and_name_what_they_hold() -> None:
    pixels = np.zeros((60, 300, 4), np.uint8)
    for x in (10, 110, 210):
        pixels[20:40, x:x + 20] = (0, 0, 0, 255)
    blocks = [TextBlock((1000, 500, 1140, 560), "Summer sale"), (1200, 500, 1300, 560)]
    elements = split_layer(PlacedLayer("Text", 1000, 500, pixels), text_blocks=blocks)
    assert [(e.name, e.x, e.width) for e in elements] == [("Summer sale", 1010, 120), ("Text 2", 1210, 20)]


def test_max_elements_merges_the_smallest_into_their_neighbours() -> None:
    pixels = np.zeros((40, 400, 4), np.uint8)
    for k in range(10):
        pixels[10:10 + 3 + k, 40 * k:40 * k + 3 + k] = (0, 0, 0, 255)
    elements = split_layer(PlacedLayer("Dots", 0, 0, pixels), max_elements=4)
    assert len(elements) == 4
    assert recomposition_error(elements, pixels) == 0
    assert max(e.width for e in elements) > 12  # the largest dot is still there, with small ones merged into it


def test_faint_only_layer_is_one_element_and_specks_join() -> None:
    pixels = np.zeros((100, 100, 4), np.uint8)
    pixels[40:60, 40:60] = (0, 0, 0, 60)  # a faint square: no body, but large enough to stand alone
    pixels[5, 5] = (0, 0, 0, 10)  # a speck
    elements = split_layer(PlacedLayer("Shadow", 0, 0, pixels))
    assert len(elements) == 1
    assert (elements[0].x, elements[0].y, elements[0].width, elements[0].height) == (5, 5, 55, 55)
