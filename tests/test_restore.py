"""Full-resolution restoration (backend/imaging/restore.py): exact recomposition, sharp alpha, layer identity."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from backend.imaging.image import PlacedLayer, composite, resample_layers, resize_premultiplied
from backend.imaging.metrics import edge_masks, on_canvas, recomposition, soft_iou, soft_iou_sums
from backend.imaging.restore import restore_layers

BOUND = 2.0 / 255.0


def _smooth(rng: np.random.Generator, w: int, h: int, cells: int = 4) -> np.ndarray:
    grids = [rng.random((cells, cells), dtype=np.float32) for _ in range(3)]
    return np.stack([np.asarray(Image.fromarray(g, "F").resize((w, h), Image.BICUBIC)) for g in grids], axis=-1)


def _rgba(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    out = np.rint(np.clip(np.concatenate([colour, alpha[..., None]], axis=-1), 0, 1) * 255).astype(np.uint8)
    out[out[..., 3] == 0] = 0
    return out


def _ellipse(w: int, h: int, cx: float, cy: float, rx: float, ry: float, feather: float = 1.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = (np.sqrt(((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2) - 1.0) * min(rx, ry)
    return np.clip(0.5 - d / feather, 0.0, 1.0)


def stack(w: int, h: int, transparent: bool = False, seed: int = 0) -> list[np.ndarray]:
    """Ground truth, bottom to top: textured background (unless transparent), a hard ellipse, a soft ellipse,
    a semi-transparent band and text."""
    rng = np.random.default_rng(seed)
    layers = []
    if not transparent:
        grain = 0.08 * rng.standard_normal((h, w, 1), dtype=np.float32)
        layers.append(_rgba(np.clip(_smooth(rng, w, h) + grain, 0, 1), np.ones((h, w), np.float32)))
    layers.append(_rgba(0.2 + 0.6 * _smooth(rng, w, h, 3), _ellipse(w, h, 0.4 * w, 0.45 * h, 0.25 * w, 0.3 * h)))
    layers.append(
        _rgba(np.full((h, w, 3), [0.9, 0.3, 0.1], np.float32), _ellipse(w, h, 0.65 * w, 0.5 * h, 0.2 * w, 0.25 * h, 6.0))
    )
    band = np.zeros((h, w), np.float32)
    band[int(0.7 * h) : int(0.85 * h), int(0.05 * w) : int(0.95 * w)] = 0.5
    layers.append(_rgba(np.full((h, w, 3), [0.1, 0.2, 0.8], np.float32), band))
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).text((0.1 * w, 0.1 * h), "Text 42", fill=255, font=ImageFont.load_default(size=max(8, h // 6)))
    layers.append(_rgba(np.full((h, w, 3), [0.05, 0.05, 0.05], np.float32), np.asarray(mask, np.float32) / 255))
    return layers


def flatten(layers: list[np.ndarray]) -> np.ndarray:
    h, w = layers[0].shape[:2]
    placed = [PlacedLayer(str(i), 0, 0, layer) for i, layer in enumerate(layers)]
    pre = composite(placed, w, h)
    a = pre[..., 3:4]
    rgb = np.where(a > 0, pre[..., :3] / np.maximum(a, 1e-12), 0)
    return np.rint(np.clip(np.concatenate([rgb, a], axis=-1), 0, 1) * 255).astype(np.uint8)


def model_output(gt: list[np.ndarray], w: int, h: int, drift: float = 0.03) -> list[np.ndarray]:
    """What the model gives: each layer at the bucket size, with a little colour drift and a blurred alpha."""
    out = []
    rng = np.random.default_rng(7)
    for layer in gt:
        small = resize_premultiplied(layer, w, h).astype(np.float32) / 255
        a = np.asarray(Image.fromarray(small[..., 3], "F").resize((w // 2, h // 2), Image.BILINEAR).resize((w, h), Image.BILINEAR))
        a = np.where(small[..., 3] > 0.999, 1.0, np.clip(0.5 * a + 0.5 * small[..., 3], 0, 1))
        rgb = small[..., :3] * (1 + rng.uniform(-drift, drift, 3)) + rng.uniform(-drift, drift, 3) / 2
        out.append(_rgba(rgb, a))
    return out


def run(gt: list[np.ndarray], mw: int, mh: int, **kw):
    source = flatten(gt)
    model = model_output(gt, mw, mh, **kw)
    names = [f"L{i}" for i in range(len(gt))]
    return source, model, names, restore_layers(source, model, names)


@pytest.mark.parametrize("transparent", [False, True])
def test_recomposes_the_source(transparent: bool) -> None:
    gt = stack(480, 360, transparent=transparent)
    source, model, names, placed = run(gt, 160, 120)
    rebuilt = recomposition(placed, source)
    assert rebuilt.within(BOUND), rebuilt
    assert rebuilt.psnr >= 60
    assert [p.name for p in placed] == names
    for p in placed:
        assert p.pixels.dtype == np.uint8 and p.pixels.ndim == 3 and p.pixels.shape[2] == 4
        assert 0 <= p.x and p.x + p.width <= 480 and 0 <= p.y and p.y + p.height <= 360
        if p.width:  # cropped to content: every border row and column has some alpha
            a = p.pixels[..., 3]
            assert a[0].any() and a[-1].any() and a[:, 0].any() and a[:, -1].any()


def test_source_alpha_round_trips() -> None:
    gt = stack(400, 300, transparent=True, seed=3)
    source, model, names, placed = run(gt, 128, 96)
    comp = composite(placed, 400, 300)
    assert np.abs(comp[..., 3] * 255 - source[..., 3]).max() <= 2.0
    assert np.all(comp[source[..., 3] == 0, 3] == 0)


def test_alpha_sharper_than_resampling() -> None:
    gt = stack(640, 480, seed=1)
    source, model, names, placed = run(gt, 160, 120)
    plain = resample_layers(source, model, names)
    gains = []
    for truth, mine, base in zip(gt, placed, plain):
        ours = soft_iou(on_canvas(mine, 640, 480)[..., 3], truth[..., 3])
        theirs = soft_iou(on_canvas(base, 640, 480)[..., 3], truth[..., 3])
        assert ours >= theirs - 0.002, (mine.name, ours, theirs)
        gains.append(ours - theirs)
    assert np.mean(gains) > 0


def test_hidden_content_comes_from_the_model() -> None:
    gt = stack(480, 360, seed=2)
    source, model, names, placed = run(gt, 240, 180, drift=0.0)
    plain = resample_layers(source, model, names)
    bg, plain_bg = on_canvas(placed[0], 480, 360), on_canvas(plain[0], 480, 360)
    # the hard ellipse (layer 1) covers the background's centre: what is behind it is the model's, upsampled
    hidden = gt[1][..., 3] == 255
    hidden[:, :] &= np.roll(hidden, 8, 0) & np.roll(hidden, -8, 0) & np.roll(hidden, 8, 1) & np.roll(hidden, -8, 1)
    assert hidden.sum() > 1000
    diff = np.abs(bg[hidden][:, :3].astype(int) - plain_bg[hidden][:, :3].astype(int))
    assert diff.mean() < 3 and bg[hidden][:, 3].min() == 255
    # and it is not the visible top layer's colour
    assert np.abs(bg[hidden][:, :3].astype(int) - source[hidden][:, :3].astype(int)).mean() > 20


def _grow(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        out |= np.roll(out, 1, 0) | np.roll(out, -1, 0) | np.roll(out, 1, 1) | np.roll(out, -1, 1)
    return out


def test_colour_drift_of_a_semi_transparent_layer_is_corrected() -> None:
    # the half-transparent band (layer 3) is never seen alone: its drift shows only mixed with what lies below
    gt = stack(480, 360, seed=5)
    source, model, names, placed = run(gt, 160, 120, drift=0.08)
    plain = resample_layers(source, model, names)
    band = gt[3][..., 3] > 0
    band &= np.roll(band, 6, 0) & np.roll(band, -6, 0) & np.roll(band, 6, 1) & np.roll(band, -6, 1)
    band &= ~_grow(gt[4][..., 3] > 0, 3)  # away from the text above it
    assert band.sum() > 5000
    truth = gt[3][band][:, :3].astype(float)
    ours = np.abs(on_canvas(placed[3], 480, 360)[band][:, :3] - truth).mean()
    theirs = np.abs(on_canvas(plain[3], 480, 360)[band][:, :3] - truth).mean()
    assert ours < 0.3 * theirs, (ours, theirs)


def _model_layer(layer: np.ndarray, w: int, h: int, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """A layer at the model's size, drawn (dx, dy) model pixels off."""
    small = resize_premultiplied(layer, w, h).astype(np.float32) / 255

    def move(x: np.ndarray) -> np.ndarray:
        im = Image.fromarray(np.ascontiguousarray(x, np.float32), "F")
        return np.asarray(im.transform(im.size, Image.AFFINE, (1, 0, -dx, 0, 1, -dy), Image.BILINEAR))

    a = move(small[..., 3])
    pre = np.stack([move(small[..., c] * small[..., 3]) for c in range(3)], axis=-1)
    return _rgba(pre / np.maximum(a, 1e-6)[..., None], a)


def test_a_misregistered_layer_moves_with_its_visible_edges() -> None:
    # the model drew the disc a little off; its left edge is visible, its right edge hidden under a cover:
    # the hidden edge must follow the offset the visible one shows
    w, h = 480, 360
    rng = np.random.default_rng(11)
    grain = 0.08 * rng.standard_normal((h, w, 1), dtype=np.float32)
    bg = _rgba(np.clip(_smooth(rng, w, h) + grain, 0, 1), np.ones((h, w), np.float32))
    disc = _rgba(np.full((h, w, 3), [0.9, 0.5, 0.1], np.float32), _ellipse(w, h, 0.45 * w, 0.5 * h, 0.25 * w, 0.3 * h))
    cover = np.zeros((h, w), np.float32)
    cover[:, w // 2 :] = 1
    gt = [bg, disc, _rgba(np.full((h, w, 3), [0.1, 0.3, 0.6], np.float32), cover)]
    source = flatten(gt)
    hidden = np.zeros((h, w), bool)
    hidden[:, w // 2 + 4 :] = True
    ours, plain = [], []  # how much alpha the disc's hidden part has beyond the truth (signed: where the edge is)
    for off in ((0.0, 0.0), (0.4, -0.35)):
        model = [_model_layer(gt[0], 160, 120), _model_layer(gt[1], 160, 120, *off), _model_layer(gt[2], 160, 120)]
        for result, got in ((ours, restore_layers(source, model, ["bg", "disc", "cover"])),
                            (plain, resample_layers(source, model, ["bg", "disc", "cover"]))):
            diff = on_canvas(got[1], w, h)[..., 3].astype(float) - gt[1][..., 3]
            result.append(diff[hidden].sum() / 255)
    assert abs(plain[1] - plain[0]) > 150  # the offset moves the hidden edge by more than a pixel
    assert abs(ours[1] - ours[0]) < 0.25 * abs(plain[1] - plain[0]), (ours, plain)


def test_fine_detail_goes_to_the_layer_that_has_it() -> None:
    # a grainy half-transparent panel over a flat background: the source's grain is the panel's, so the panel
    # takes it and the background behind it stays flat
    w, h = 480, 360
    rng = np.random.default_rng(12)
    bg = _rgba(np.full((h, w, 3), [0.3, 0.4, 0.5], np.float32), np.ones((h, w), np.float32))
    grain = 0.12 * rng.standard_normal((h, w, 1), dtype=np.float32)
    alpha = np.zeros((h, w), np.float32)
    alpha[int(0.2 * h) : int(0.8 * h), int(0.2 * w) : int(0.8 * w)] = 0.5
    gt = [bg, _rgba(np.clip(0.3 + 0.4 * _smooth(rng, w, h) + grain, 0, 1), alpha)]
    source, model = flatten(gt), [resize_premultiplied(g, 160, 120) for g in gt]
    placed = restore_layers(source, model, ["bg", "panel"])
    plain = resample_layers(source, model, ["bg", "panel"])
    inside = np.zeros((h, w), bool)
    inside[int(0.25 * h) : int(0.75 * h), int(0.25 * w) : int(0.75 * w)] = True
    truth = gt[1][inside][:, :3].astype(float)
    ours = np.abs(on_canvas(placed[1], w, h)[inside][:, :3] - truth).mean()
    theirs = np.abs(on_canvas(plain[1], w, h)[inside][:, :3] - truth).mean()
    assert ours < 0.2 * theirs, (ours, theirs)
    assert np.abs(on_canvas(placed[0], w, h)[inside][:, :3].astype(float) - gt[0][inside][:, :3]).mean() < 2
    rebuilt = recomposition(placed, source)
    assert rebuilt.within(BOUND), rebuilt


def test_no_element_changes_layer() -> None:
    gt = stack(480, 360, transparent=True, seed=4)
    source, model, names, placed = run(gt, 160, 120)
    plain = resample_layers(source, model, names)
    for truth, mine, base in zip(gt, placed, plain):
        a = on_canvas(mine, 480, 360)[..., 3].astype(np.float64)
        b = on_canvas(base, 480, 360)[..., 3].astype(np.float64)
        # nothing appears where the model's layer has nothing, but for the odd source pixel that no layer claims
        assert a[~_grow(b > 0, 10)].sum() <= 255 + 0.001 * a.sum(), mine.name
        # and no more strays away from the element than plain resampling lets
        away = ~_grow(truth[..., 3] > 0, 4)
        assert a[away].sum() <= b[away].sum() + 0.001 * a.sum(), mine.name


@pytest.mark.parametrize("shape", [(1, 37), (37, 1), (1, 1), (3, 300)])
def test_thin_images(shape: tuple[int, int]) -> None:
    h, w = shape
    rng = np.random.default_rng(5)
    source = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    source[..., 3] = 255
    model = [rng.integers(0, 256, (16, 32, 4), dtype=np.uint8) for _ in range(3)]
    model[0][..., 3] = 255
    placed = restore_layers(source, model, ["a", "b", "c"])
    rebuilt = recomposition(placed, source)
    assert rebuilt.within(BOUND), rebuilt


def test_a_fully_transparent_layer() -> None:
    gt = stack(320, 240, seed=6)
    source = flatten(gt)
    model = model_output(gt, 160, 120)
    model.insert(2, np.zeros_like(model[0]))
    names = [f"L{i}" for i in range(len(model))]
    placed = restore_layers(source, model, names)
    assert placed[2].width == 0 and placed[2].height == 0 and placed[2].pixels.shape == (0, 0, 4)
    rebuilt = recomposition(placed, source)
    assert rebuilt.within(BOUND), rebuilt


def test_single_layer_is_the_source() -> None:
    gt = stack(300, 200, transparent=True, seed=8)
    source = flatten(gt)
    model = [resize_premultiplied(source, 100, 64)]
    (layer,) = restore_layers(source, model, ["only"])
    got = on_canvas(layer, 300, 200)
    visible = source[..., 3] > 0
    assert np.array_equal(got[..., 3], source[..., 3])
    assert np.abs(got[visible][:, :3].astype(int) - source[visible][:, :3].astype(int)).max() <= 1


def test_model_aspect_differs_from_source() -> None:
    gt = stack(500, 200, seed=9)
    source = flatten(gt)
    model = model_output(gt, 128, 96)  # 4:3 bucket for a 5:2 document
    placed = restore_layers(source, model, [f"L{i}" for i in range(len(model))])
    rebuilt = recomposition(placed, source)
    assert rebuilt.within(BOUND), rebuilt


def test_low_alpha_source_is_exact_premultiplied() -> None:
    # a faint source: straight colour cannot survive 8-bit alpha, premultiplied colour must
    gt = stack(200, 150, transparent=True, seed=10)
    faint = [g.copy() for g in gt]
    for g in faint:
        g[..., 3] = (g[..., 3].astype(int) // 12).astype(np.uint8)
    source, model, names, placed = run(faint, 100, 75)
    rebuilt = recomposition(placed, source)
    assert rebuilt.within(BOUND), rebuilt


def test_rejects_bad_input() -> None:
    source = np.zeros((10, 10, 4), np.uint8)
    with pytest.raises(ValueError):
        restore_layers(source, [], [])
    with pytest.raises(ValueError):
        restore_layers(source, [np.zeros((4, 4, 4), np.uint8), np.zeros((5, 4, 4), np.uint8)], ["a", "b"])
    with pytest.raises(ValueError):
        restore_layers(source[..., :3], [np.zeros((4, 4, 4), np.uint8)], ["a"])


def _grid(w: int, h: int) -> np.ndarray:
    """Detail at full resolution: a one-pixel grid, finer than any model pixel."""
    out = np.full((h, w, 4), 255, np.uint8)
    out[::2, :, :3] = 0
    out[:, ::2, :3] = 0
    return out


@pytest.mark.parametrize(
    "name, source",
    [("black", np.full((300, 400, 4), [0, 0, 0, 255], np.uint8)),
     ("white", np.full((300, 400, 4), 255, np.uint8)),
     ("flat", np.full((300, 400, 4), [37, 180, 90, 255], np.uint8)),
     ("grid", _grid(1200, 900))],
)
def test_flat_and_pixel_fine_sources_against_noise(name: str, source: np.ndarray) -> None:
    # the tiny test model's layers are noise: colour and alpha that explain nothing of the source
    rng = np.random.default_rng(13)
    model = [rng.integers(0, 256, (96, 128, 4), dtype=np.uint8) for _ in range(4)]
    placed = restore_layers(source, model, ["a", "b", "c", "d"])
    rebuilt = recomposition(placed, source)
    assert rebuilt.within(BOUND), (name, rebuilt.max_rgb * 255, rebuilt.max_alpha * 255)


@pytest.mark.parametrize("opaque", [True, False])
def test_the_source_is_reduced_in_strips_as_a_whole(monkeypatch: pytest.MonkeyPatch, opaque: bool) -> None:
    from backend.imaging import restore

    rng = np.random.default_rng(14)
    source = rng.integers(0, 256, (400, 300, 4), dtype=np.uint8)
    if opaque:
        source[..., 3] = 255
    whole = np.asarray(Image.fromarray(source, "RGBX" if opaque else "RGBA").resize((75, 100), Image.BOX).convert("RGBA"))
    monkeypatch.setattr(restore, "STRIP_PIXELS", 300 * 7)  # strips of a row or two of the result
    got = restore._box_down(source, 75, 100, opaque)
    want = whole.astype(np.float32) / 255
    if opaque:
        want[..., 3] = 1
    assert got.shape == (100, 75, 4) and np.abs(got - want).max() < 1e-5


def _edge_ious(gt: list[np.ndarray], placed, plain, w: int, h: int) -> list[tuple[float, float]]:
    """Per layer with visible edges: soft IoU of alpha over them, restored and resampled."""
    masks = edge_masks([g[..., 3] for g in gt], [on_canvas(p, w, h)[..., 3] for p in plain], 2)
    out = []
    for truth, mine, base, (seen, _) in zip(gt, placed, plain, masks):
        if seen.sum() < 100:
            continue
        ours = soft_iou_sums(on_canvas(mine, w, h)[..., 3], truth[..., 3], seen)
        theirs = soft_iou_sums(on_canvas(base, w, h)[..., 3], truth[..., 3], seen)
        out.append((ours[0] / ours[1], theirs[0] / theirs[1]))
    return out


def _blurred(layer: np.ndarray, sigma: float) -> np.ndarray:
    out = layer.copy()
    a = Image.fromarray(layer[..., 3]).filter(ImageFilter.GaussianBlur(sigma))
    out[..., 3] = np.asarray(a)
    return out


@pytest.mark.parametrize("grow", [2.0, -2.0])
def test_a_misplaced_blurred_edge_follows_the_source(grow: float) -> None:
    # the model drew the disc two model pixels too large (or too small), blurred and a little off: where its edge
    # is visible, the restored edge is the source's, more than halfway from resampling to exact
    w, h = 480, 360
    rng = np.random.default_rng(21)
    grain = 0.08 * rng.standard_normal((h, w, 1), dtype=np.float32)
    bg = _rgba(np.clip(_smooth(rng, w, h) + grain, 0, 1), np.ones((h, w), np.float32))
    disc = _rgba(np.full((h, w, 3), [0.9, 0.5, 0.1], np.float32), _ellipse(w, h, 0.45 * w, 0.5 * h, 0.25 * w, 0.3 * h))
    gt = [bg, disc]
    source = flatten(gt)
    drawn = _rgba(disc[..., :3] / 255, _ellipse(w, h, 0.45 * w, 0.5 * h, 0.25 * w + 3 * grow, 0.3 * h + 3 * grow))
    model = [_model_layer(bg, 160, 120), _blurred(_model_layer(drawn, 160, 120, 0.3, -0.2), 1.0)]
    placed = restore_layers(source, model, ["bg", "disc"])
    plain = resample_layers(source, model, ["bg", "disc"])
    ((ours, theirs),) = _edge_ious(gt, placed, plain, w, h)
    assert theirs < 0.75 and ours >= theirs + 0.5 * (1 - theirs), (ours, theirs)
    rebuilt = recomposition(placed, source)
    assert rebuilt.within(BOUND), rebuilt


def test_thin_strokes_and_small_type_come_from_the_source() -> None:
    # strokes of one to three pixels and 10-pixel type, finer than a model pixel: the model has a faint haze, the
    # source has where they are
    w, h = 480, 360
    rng = np.random.default_rng(22)
    grain = 0.05 * rng.standard_normal((h, w, 1), dtype=np.float32)
    bg = _rgba(np.clip(_smooth(rng, w, h) * 0.5 + grain, 0, 1), np.ones((h, w), np.float32))
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    for k, width in enumerate((1, 2, 3)):
        draw.line((20, 40 + 60 * k, 460, 80 + 60 * k), fill=255, width=width)
    for k in range(3):
        draw.text((30, 230 + 14 * k), "small print 0123 fine", fill=255, font=ImageFont.load_default(size=10))
    strokes = _rgba(np.full((h, w, 3), [0.95, 0.95, 0.9], np.float32), np.asarray(mask, np.float32) / 255)
    gt = [bg, strokes]
    source = flatten(gt)
    model = [_model_layer(bg, 160, 120), _blurred(_model_layer(strokes, 160, 120, 0.4, -0.3), 0.7)]
    placed = restore_layers(source, model, ["bg", "strokes"])
    plain = resample_layers(source, model, ["bg", "strokes"])
    ((ours, theirs),) = _edge_ious(gt, placed, plain, w, h)
    assert ours >= theirs + 0.5 * (1 - theirs), (ours, theirs)


def test_the_edge_of_a_semi_transparent_panel_over_grain_follows_the_source() -> None:
    # a panel of alpha 0.45 with a rounded corner over a grainy background: per pixel, the grain seen through the
    # edge reads as alpha noise; pooled along the edge the source still shows where it is
    w, h = 480, 360
    rng = np.random.default_rng(23)
    grain = 0.14 * rng.standard_normal((h, w, 1), dtype=np.float32)
    bg = _rgba(np.clip(_smooth(rng, w, h) + grain, 0, 1), np.ones((h, w), np.float32))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # signed distance to a rounded rectangle (corner radius 30)
    qx = np.abs(xx + 0.5 - 240) - (180 - 30)
    qy = np.abs(yy + 0.5 - 220) - (70 - 30)
    d = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - 30
    panel = _rgba(np.full((h, w, 3), [0.35, 0.55, 0.75], np.float32), 0.45 * np.clip(0.5 - d, 0, 1))
    gt = [bg, panel]
    source = flatten(gt)
    model = [_model_layer(bg, 160, 120), _blurred(_model_layer(panel, 160, 120, 0.3, 0.2), 1.0)]
    placed = restore_layers(source, model, ["bg", "panel"])
    plain = resample_layers(source, model, ["bg", "panel"])
    ((ours, theirs),) = _edge_ious(gt, placed, plain, w, h)
    assert ours >= theirs + 0.5 * (1 - theirs), (ours, theirs)
    rebuilt = recomposition(placed, source)
    assert rebuilt.within(BOUND), rebuilt


def test_in_a_transparent_document_a_layer_hidden_behind_an_opaque_one_keeps_its_alpha() -> None:
    # a band of alpha 0.6 across a transparent document, an opaque disc over part of it (whole tiles of the source
    # are opaque there) that the model drew not quite opaque: the band keeps its alpha behind the disc, the disc
    # takes up the stack's alpha
    w, h = 480, 360
    band = np.zeros((h, w), np.float32)
    band[40:320, :] = 0.6
    gt = [
        _rgba(np.full((h, w, 3), [0.2, 0.6, 0.3], np.float32), band),
        _rgba(np.full((h, w, 3), [0.9, 0.4, 0.1], np.float32), _ellipse(w, h, 192, 192, 120, 120)),
    ]
    source = flatten(gt)
    assert (source[128:256, 128:256, 3] == 255).all()
    model = [_model_layer(layer, 160, 120) for layer in gt]
    model[1][..., 3] = np.rint(model[1][..., 3] * 0.98).astype(np.uint8)  # the model's disc not quite opaque
    placed = restore_layers(source, model, ["band", "disc"])
    hidden = on_canvas(placed[0], w, h)[128:256, 128:256, 3].astype(np.float32) / 255
    assert np.abs(hidden - 0.6).max() < 0.05, (hidden.min(), hidden.max())
    disc = on_canvas(placed[1], w, h)[128:256, 128:256, 3]
    assert (disc == 255).all()
    rebuilt = recomposition(placed, source)
    assert rebuilt.within(BOUND), rebuilt
