"""Full-resolution, pixel-exact layers from the model's bucket-resolution layers.

The model decomposes a downsampled copy of the document. `restore_layers` brings its layers back to the source's
resolution so that what is visible comes from the original pixels and only what was hidden comes from the model:

1. At the model's resolution: each layer's colour is extended into its transparent area and corrected for the
   model's colour drift (a smooth per-layer offset, measured where the layer is plainly visible), and a colour
   guided filter (He et al.) fits each layer's alpha as a local linear function of the source's colour.
2. At full resolution, tile by tile: the guided filter's coefficients are upsampled and applied to the full-
   resolution source, so alpha edges follow the original's edges. The alphas are then fixed so that the stack's
   alpha equals the source's, and quantised; colours are solved so that the composite equals the source: every
   layer keeps the model's colour except the pixel's owner (the layer with the largest visible weight), whose
   8-bit colour is solved against the other layers' already quantised values, so rounding never accumulates.

Exactness bound. Compositing the returned 8-bit layers bottom to top with normal blending (straight alpha, as
Krita and Photoshop do) gives, in premultiplied RGB and in alpha, at most 1/255 of error per pixel (half a step of
the owner's colour plus rounding), so the composite PSNR is above 60 dB. Where 8-bit alpha makes exactness
impossible, the bound is given up:

* Fully transparent source pixels (alpha 0) carry no colour: their RGB is not kept (any RGB there is invisible).
* Straight (unpremultiplied) colour is only exact up to 1/(255·alpha): a composite pixel with alpha a is stored
  through 8-bit colours weighted by a, so for a source alpha below 1/2 the straight RGB may differ by more than
  2/255 although the premultiplied value (what is seen) is within the bound.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from .image import PlacedLayer

TILE = 256  # full-resolution tile side; bounds the working memory to a few tens of MiB
GUIDE_RADIUS = 2  # guided-filter window radius, in model pixels
GUIDE_EPS = 1e-3  # guided-filter regularisation: larger keeps alpha closer to the model's
DRIFT_RADIUS = 12  # colour-drift correction smoothing radius, in model pixels
ALPHA_FLOOR = 0.5 / 255.0


# ---------------------------------------------------------------- model-resolution helpers


def _box(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)² window clipped at the borders, for (h, w) or (h, w, c) arrays."""
    out = x.astype(np.float32, copy=True)
    for axis in (0, 1):
        n = out.shape[axis]
        c = np.cumsum(out, axis=axis, dtype=np.float64)
        c = np.concatenate([np.zeros_like(np.take(c, [0], axis=axis)), c], axis=axis)
        hi = np.minimum(np.arange(n) + r + 1, n)
        lo = np.maximum(np.arange(n) - r, 0)
        count = (hi - lo).astype(np.float64)
        shape = [1] * out.ndim
        shape[axis] = n
        out = ((np.take(c, hi, axis=axis) - np.take(c, lo, axis=axis)) / count.reshape(shape)).astype(np.float32)
    return out


def _resize_f(x: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a float (h, w) or (h, w, c) array."""
    if x.ndim == 2:
        return np.asarray(Image.fromarray(np.ascontiguousarray(x, np.float32), "F").resize((width, height), Image.BILINEAR))
    return np.stack([_resize_f(x[..., c], width, height) for c in range(x.shape[-1])], axis=-1)


def _fill_colour(pre: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight colour everywhere: the layer's own colour where it is opaque enough, extended smoothly
    (push-pull) into its transparent area so that alpha may grow there without dark or random fringes."""
    h, w = alpha.shape
    if h <= 2 or w <= 2:
        total = float(alpha.sum())
        mean = pre.reshape(-1, 3).sum(axis=0) / total if total > 1e-6 else np.full(3, 0.5)
        colour = np.broadcast_to(mean.astype(np.float32), (h, w, 3))
        k = 0.05 * (1.0 - alpha[..., None])
        return (pre + k * colour) / (alpha[..., None] + k + 1e-12)
    h2, w2 = (h + 1) // 2, (w + 1) // 2
    pp = np.pad(pre, ((0, 2 * h2 - h), (0, 2 * w2 - w), (0, 0)), mode="edge")
    pa = np.pad(alpha, ((0, 2 * h2 - h), (0, 2 * w2 - w)), mode="edge")
    cp = pp.reshape(h2, 2, w2, 2, 3).mean(axis=(1, 3))
    ca = pa.reshape(h2, 2, w2, 2).mean(axis=(1, 3))
    coarse = _resize_f(_fill_colour(cp, ca), w, h)
    k = 0.05 * (1.0 - alpha[..., None])
    return (pre + k * coarse) / (alpha[..., None] + k)


class _Prepared:
    """Per-layer maps at the model's resolution, ready to be upsampled tile by tile."""

    def __init__(self, source: np.ndarray, layers: Sequence[np.ndarray]) -> None:
        h, w = layers[0].shape[:2]
        self.h, self.w = h, w
        small = np.asarray(Image.fromarray(source, "RGBA").resize((w, h), Image.BOX), dtype=np.float32) / 255.0
        s_alpha = small[..., 3]
        guide = small[..., :3] * s_alpha[..., None]
        model = [layer.astype(np.float32) / 255.0 for layer in layers]
        alphas = [m[..., 3] for m in model]

        # visible weight of each model layer, to measure colour drift where a layer is plainly visible
        above = np.ones((h, w), np.float32)
        visible = [None] * len(model)
        for i in range(len(model) - 1, -1, -1):
            visible[i] = alphas[i] * above
            above = above * (1.0 - alphas[i])

        r = GUIDE_RADIUS
        mean_i = _box(guide, r)
        cov = np.empty((h, w, 3, 3), np.float32)
        for a in range(3):
            for b in range(a, 3):
                v = _box(guide[..., a] * guide[..., b], r) - mean_i[..., a] * mean_i[..., b]
                cov[..., a, b] = cov[..., b, a] = v
        cov += GUIDE_EPS * np.eye(3, dtype=np.float32)
        inv = np.linalg.inv(cov)

        self.coef: list[np.ndarray] = []  # (h, w, 4): A_r, A_g, A_b, b  with alpha = A·I + b
        self.colour: list[np.ndarray] = []  # (h, w, 3) straight colour
        self.active: list[np.ndarray] = []  # (h, w) bool: may have alpha > 0 here
        for m, a, vis in zip(model, alphas, visible):
            colour = _fill_colour(m[..., :3] * a[..., None], a)
            # colour drift: smooth offset between the source and the model where this layer is what one sees
            conf = np.clip((vis - 0.9) / 0.1, 0.0, 1.0) * (s_alpha > 0.5)
            conf = np.minimum.reduce([np.roll(np.roll(conf, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
            total = float(conf.sum())
            if total > 4.0:
                straight = small[..., :3]
                diff = (straight - colour) * conf[..., None]
                glob = diff.reshape(-1, 3).sum(axis=0) / total
                lam = 0.02
                field = (_box(diff, DRIFT_RADIUS) + lam * glob) / (_box(conf, DRIFT_RADIUS)[..., None] + lam)
                colour = colour + field
            self.colour.append(np.clip(colour, 0.0, 1.0).astype(np.float32))

            mean_p = _box(a, r)
            cov_ip = _box(guide * a[..., None], r) - mean_i * mean_p[..., None]
            coef_a = np.einsum("...ij,...j->...i", inv, cov_ip)
            coef_b = mean_p - np.einsum("...i,...i->...", coef_a, mean_i)
            coef = np.concatenate([_box(coef_a, r), _box(coef_b, r)[..., None]], axis=-1)
            self.coef.append(coef.astype(np.float32))
            self.active.append(_box((a > 0).astype(np.float32), 2 * r + 1) > 0)


# ---------------------------------------------------------------- full-resolution tiles


def _upsample(img: Image.Image, box: tuple[float, float, float, float], tw: int, th: int) -> np.ndarray:
    return np.asarray(img.resize((tw, th), Image.BILINEAR, box=box))


def restore_layers(source: np.ndarray, layers: Sequence[np.ndarray], names: Sequence[str]) -> list[PlacedLayer]:
    """Model layers (bucket resolution, bottom to top) to full-resolution layers that recompose into `source`.

    See the module docstring for the guarantees and for where 8-bit alpha makes the exactness bound impossible.
    """
    if source.ndim != 3 or source.shape[2] != 4 or source.dtype != np.uint8:
        raise ValueError("source must be an (h, w, 4) uint8 array")
    if len(layers) == 0 or len(layers) != len(names):
        raise ValueError("need at least one layer and one name per layer")
    shape = layers[0].shape
    if any(layer.shape != shape or layer.dtype != np.uint8 or layer.ndim != 3 or shape[2] != 4 for layer in layers):
        raise ValueError("model layers must be (h, w, 4) uint8 arrays of one size")
    source = np.ascontiguousarray(source)
    H, W = source.shape[:2]
    prep = _Prepared(source, layers)
    h, w = prep.h, prep.w
    n = len(layers)
    sx, sy = w / W, h / H
    coef_img = [[Image.fromarray(np.ascontiguousarray(c[..., k]), "F") for k in range(4)] for c in prep.coef]
    col_img = [[Image.fromarray(np.ascontiguousarray(c[..., k]), "F") for k in range(3)] for c in prep.colour]
    out = [np.zeros((H, W, 4), np.uint8) for _ in range(n)]
    bounds = [[H, W, 0, 0] for _ in range(n)]  # y0, x0, y1, x1 of non-zero alpha

    for Y0 in range(0, H, TILE):
        Y1 = min(H, Y0 + TILE)
        for X0 in range(0, W, TILE):
            X1 = min(W, X0 + TILE)
            box = (X0 * sx, Y0 * sy, X1 * sx, Y1 * sy)
            ly0, ly1 = max(0, int(box[1]) - 1), min(h, int(np.ceil(box[3])) + 1)
            lx0, lx1 = max(0, int(box[0]) - 1), min(w, int(np.ceil(box[2])) + 1)
            idx = [i for i in range(n) if prep.active[i][ly0:ly1, lx0:lx1].any()]
            src = source[Y0:Y1, X0:X1]
            if idx:
                _tile(src, idx, coef_img, col_img, box, out, (Y0, Y1, X0, X1), bounds)
            elif src[..., 3].any():
                # no layer reaches here: the bottom layer takes the source as it is
                out[0][Y0:Y1, X0:X1] = np.where(src[..., 3:4] > 0, src, 0)
                _grow(bounds[0], src[..., 3], Y0, X0)

    placed = []
    for i in range(n):
        y0, x0, y1, x1 = bounds[i]
        if y1 <= y0:
            placed.append(PlacedLayer(names[i], 0, 0, np.zeros((0, 0, 4), np.uint8)))
            out[i] = None
            continue
        full = out[i]
        out[i] = None
        if (y0, x0, y1, x1) == (0, 0, H, W):
            placed.append(PlacedLayer(names[i], 0, 0, full))
        else:
            placed.append(PlacedLayer(names[i], x0, y0, np.ascontiguousarray(full[y0:y1, x0:x1])))
        del full
    return placed


def _grow(b: list[int], alpha: np.ndarray, Y0: int, X0: int) -> None:
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return
    cols = np.flatnonzero(alpha.any(axis=0))
    b[0] = min(b[0], Y0 + int(rows[0]))
    b[1] = min(b[1], X0 + int(cols[0]))
    b[2] = max(b[2], Y0 + int(rows[-1]) + 1)
    b[3] = max(b[3], X0 + int(cols[-1]) + 1)


def _tile(src, idx, coef_img, col_img, box, out, rect, bounds) -> None:
    Y0, Y1, X0, X1 = rect
    th, tw = Y1 - Y0, X1 - X0
    m = len(idx)
    s = src.astype(np.float32) * (1.0 / 255.0)
    s_alpha = s[..., 3]
    s_pre = s[..., :3] * s_alpha[..., None]

    # alpha: guided-filter coefficients applied to the full-resolution source
    alpha = np.empty((m, th, tw), np.float32)
    colour = np.empty((m, th, tw, 3), np.float32)
    for j, i in enumerate(idx):
        c = [_upsample(im, box, tw, th) for im in coef_img[i]]
        a = c[3] + c[0] * s_pre[..., 0] + c[1] * s_pre[..., 1] + c[2] * s_pre[..., 2]
        alpha[j] = a
        for k in range(3):
            colour[j, ..., k] = _upsample(col_img[i][k], box, tw, th)
    np.clip(alpha, 0.0, 1.0, out=alpha)
    alpha[:, s_alpha <= 0] = 0.0

    # the stack's alpha must equal the source's: the bottom-most clearly present layer takes up the difference
    present = alpha >= 0.5
    absorber = np.where(present.any(axis=0), present.argmax(axis=0), alpha.argmax(axis=0))
    q = np.rint(alpha * 255.0) * (1.0 / 255.0)
    onehot = np.arange(m)[:, None, None] == absorber[None]
    others = np.prod(np.where(onehot, 1.0, 1.0 - q), axis=0)  # transmittance of all but the absorber
    need = 1.0 - s_alpha  # required total transmittance
    # others already too opaque: thin them (scale their optical depth) so that they alone reach the source's alpha
    over = others < need - 1e-6
    if over.any():
        k = np.where(over, np.log(np.maximum(need, 1e-6)) / np.log(np.clip(others, 1e-3 ** m, 1 - 1e-7)), 1.0)
        thin = 1.0 - np.maximum(1.0 - q, 1e-3) ** k[None]
        q = np.where(onehot | ~over[None], q, np.rint(thin * 255.0) * (1.0 / 255.0))
        others = np.prod(np.where(onehot, 1.0, 1.0 - q), axis=0)
    own = np.take_along_axis(q, absorber[None], 0)[0]
    solved = np.where(others > 1e-4, 1.0 - need / np.maximum(others, 1e-4), own)
    solved = np.rint(np.clip(solved, 0.0, 1.0) * 255.0) * (1.0 / 255.0)
    q = np.where(onehot, solved[None], q)

    # visible weights of the quantised alphas
    vis = np.empty_like(q)
    above = np.ones((th, tw), np.float32)
    for j in range(m - 1, -1, -1):
        vis[j] = q[j] * above
        above *= 1.0 - q[j]

    # colour: everyone keeps the model's colour but the owner, solved against the others' quantised values
    qc = np.rint(colour * 255.0) * (1.0 / 255.0)
    contrib = vis[..., None] * qc
    total = contrib.sum(axis=0)
    owner = vis.argmax(axis=0)
    v_own = np.take_along_axis(vis, owner[None], 0)[0]
    own3 = np.broadcast_to(owner[None, ..., None], (1, th, tw, 3))
    c_own = np.take_along_axis(qc, own3, 0)[0]
    rest = total - v_own[..., None] * c_own
    safe = np.maximum(v_own, 1e-6)[..., None]
    c_new = np.rint(np.clip((s_pre - rest) / safe, 0.0, 1.0) * 255.0) * (1.0 / 255.0)
    err = s_pre - rest - v_own[..., None] * c_new
    # the owner could not take everything (its colour clipped): the other visible layers take the rest
    bad = np.abs(err).max(axis=-1) > 1.0 / 255.0
    if bad.any():
        onehot_o = np.arange(m)[:, None, None] == owner[None]
        for j in range(m):
            sel = bad & ~onehot_o[j] & (vis[j] > 1.0 / 255.0)
            if not sel.any():
                continue
            cj = qc[j][sel]
            nj = np.rint(np.clip(cj + err[sel] / vis[j][sel][:, None], 0.0, 1.0) * 255.0) * (1.0 / 255.0)
            err[sel] -= vis[j][sel][:, None] * (nj - cj)
            qc[j][sel] = nj
        # and the owner absorbs the rounding once more
        rest = (vis[..., None] * qc).sum(axis=0) - v_own[..., None] * c_own
        c_new = np.rint(np.clip((s_pre - rest) / safe, 0.0, 1.0) * 255.0) * (1.0 / 255.0)
    np.put_along_axis(qc, own3, c_new[None], 0)

    for j, i in enumerate(idx):
        a8 = np.rint(q[j] * 255.0).astype(np.uint8)
        if not a8.any():
            continue
        rgb8 = np.rint(qc[j] * 255.0).astype(np.uint8)
        rgb8[a8 == 0] = 0
        dst = out[i][Y0:Y1, X0:X1]
        dst[..., :3] = rgb8
        dst[..., 3] = a8
        _grow(bounds[i], a8, Y0, X0)
