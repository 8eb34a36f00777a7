"""Full-resolution, pixel-exact layers from the model's bucket-resolution layers.

The model decomposes a downsampled copy of the document. `restore_layers` brings its layers back to the source's
resolution so that what is visible comes from the original pixels and only what was hidden comes from the model:

1. At the model's resolution: each layer's colour is extended into its transparent area and corrected for the
   model's colour drift (a per-layer gain and offset fitted to the source for all layers at once, so that
   semi-transparent layers and hidden parts are corrected too, then a smooth offset measured where the layer is
   plainly visible). A layer the model drew a little off is moved onto the source: its sub-pixel offset is
   fitted where its edges are visible (the alpha that explains the source there against the model's alpha
   moved), and the whole layer moves, so that its hidden edges and content follow. Then each layer's alpha is
   corrected, top down, towards the alpha that explains the source at the model's resolution (where the source's
   finer detail has averaged out), near the model's edges and where the layer stands out from what lies behind
   it: an edge the model drew misplaced by a few pixels, blurred, eroded or grown moves to where the source has
   it; differences within the model's colour noise are left alone. Then, for every layer, the
   model's view of each pixel without that layer and with it made opaque is composited from the others, and each
   layer's fine energy (the detail its model copy lacks) is fitted from the source on sampled patches.
2. At full resolution, tile by tile (bounded memory): each layer's alpha is the model's, upsampled, except along
   its edges, where it is the alpha that best explains the original pixel given the layer's colour and what lies
   above and below it, weighed against the model's alpha by how much the model's edge can be trusted (a steep
   model edge is probably sharper than the model can draw; a gentle ramp is kept). Alpha edges so follow the
   original's edges, including detail finer than the model's pixels (text). A model ramp as steep as the model
   can draw a step is steepened to about one full-resolution pixel first, so that where the source says nothing
   (the layer is covered) such an edge stays hard instead of a blur several pixels wide. Along a clean edge (a
   step between flat parts, straight over a few model pixels: a panel's or a glass' rim, not a strand or a letter)
   the evidence is pooled over 7 pixels along the edge, so that the grain seen through a partly transparent edge
   does not read as alpha noise. The model's alpha is also trusted less where it is partial and varies (hair,
   thin strokes, small type: a partial model pixel may hold any mix of 0 and 1) and where the source corrected
   it at the model's resolution.
3. The alphas are fixed so that the stack's alpha equals the source's (in an opaque document the lowest clearly
   present layer is made opaque; in a transparent one the clearly present layer least covered by the others takes
   up the difference, so that a layer hidden behind an opaque one keeps its alpha) and quantised; then colours
   are solved so that the composite equals the source: what the model's stack misses at a pixel is shared by the
   visible layers as a least-squares guess would, each taking a part in proportion to its visible share times its
   fine energy (the grain behind a flat semi-transparent panel
   stays behind it; a grainy panel keeps its own grain); the pixel's owner (the lowest layer that shows at least a
   quarter) takes the rest, its 8-bit colour solved against the other layers' already quantised values, so
   rounding never accumulates. Hidden parts of a layer keep the model's content (drift-corrected, moved with the
   layer, upsampled); a layer barely visible at a pixel takes next to nothing; no pixel moves to another layer.

Exactness bound. Compositing the returned 8-bit layers bottom to top with normal blending (straight alpha, as
Krita and Photoshop do) reproduces the source to within 2/255 per pixel in premultiplied RGB and in alpha (in
practice at most 1/255: half an 8-bit step of the owner's colour, or of the absorbing layer's alpha), so the
composite PSNR is well above 60 dB. Where 8-bit alpha makes exactness impossible, the bound is on what is seen:

* Fully transparent source pixels (alpha 0) carry no colour: their RGB is not kept (any RGB there is invisible),
  and every layer is transparent there.
* Straight (unpremultiplied) colour is only exact to about 1/(255·alpha): a composite pixel with alpha a is made of
  8-bit colours weighted by 8-bit alphas, so where the source's alpha is low (below about 1/2) its straight RGB
  may be off by more than 2/255, although the premultiplied value, what any viewer shows, is within the bound.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from ..core.layer import PlacedLayer
from .opencv import cv2

TILE = 128  # full-resolution tile side; bounds the working memory to a few tens of MiB
STRIP_PIXELS = 1 << 22  # source pixels per strip when the source is box-filtered to the model's size
SHIFT = 0.5  # how far (model pixels) the model's edges may be off
SHARP = 128.0  # how quickly a steep model edge (slope above 0.1 per model pixel) is taken for a sharper one
DRIFT_RADIUS = 12  # colour-drift correction smoothing radius, in model pixels
OWNER_SHARE = 0.25  # a layer showing at least this much may take the residual colour
HARD_REL = 0.2  # a ramp this steep relative to its contrast (per model pixel) is taken for a blurred step
HARD_R = 4  # model pixels either side over which a ramp's contrast is measured
HARD_K = 1.0  # how much such a ramp is steepened, per full-resolution pixel per model pixel
MOVE_PRIOR = 1.0  # weight of "no offset" in a layer's misregistration fit (about 40 clear edge pixels' worth)
ENERGY_PRIOR = 16.0  # pixels' worth of evidence behind the prior (the overall fine energy) of a layer's energy
FINE = 4.0  # how far a varying partial alpha may be off at full resolution
CORRECTED = 4.0  # how far an alpha corrected at the model's size may be off
SEEN_REACH = 4  # model pixels beyond the model's layer that the source may still show it
SEEN_EDGE = 0.03  # alpha slope (per model pixel) of an edge that the source may correct
SEEN_NOISE = 0.02  # squared colour contrast (RGBA) at which the source's alpha and the model's count alike
SEEN_TAU = 0.03  # typical size of the model's colour errors (RGB length)
SEEN_PASSES = 2  # alpha correction passes at the model's resolution (each sees the others' corrected alphas)
ENERGY_FLOOR = 0.02  # no layer's fine energy is taken below this share of the overall one
ABSORB_TIE = 1e-3  # in a transparent source, layers this close in how much the stack's alpha depends on them tie
POOL_R = 3  # full-resolution pixels either side over which an edge's evidence is pooled along the edge
POOL_WAY = 0.8  # how consistently the gradients around must point one way for an edge to be pooled along
F1 = np.float32(1.0)
F0 = np.float32(0.0)
INV255 = np.float32(1.0 / 255.0)


# ---------------------------------------------------------------- model-resolution helpers


def _box(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)² window clipped at the borders, for (h, w) or (h, w, c) arrays."""
    out = np.asarray(x, np.float32)
    for axis in (0, 1):
        n = out.shape[axis]
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r + 1, r)
        c = np.cumsum(np.pad(out, pad), axis=axis, dtype=np.float32)
        hi = [slice(None)] * out.ndim
        lo = [slice(None)] * out.ndim
        hi[axis] = slice(2 * r + 1, None)
        lo[axis] = slice(0, n)
        pos = np.arange(n)
        count = (np.minimum(pos + r, n - 1) - np.maximum(pos - r, 0) + 1).astype(np.float32)
        shape = [1] * out.ndim
        shape[axis] = n
        out = (c[tuple(hi)] - c[tuple(lo)]) / count.reshape(shape)
    return out


def _range(x: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Minimum and maximum over a (2r+1)² window (borders extended)."""
    lo, hi = x, x
    for axis in (0, 1):
        n = x.shape[axis]
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r, r)
        plo, phi = np.pad(lo, pad, mode="edge"), np.pad(hi, pad, mode="edge")
        cut = [slice(None), slice(None)]
        cut[axis] = slice(0, n)
        lo, hi = plo[tuple(cut)].copy(), phi[tuple(cut)].copy()
        for k in range(1, 2 * r + 1):
            cut[axis] = slice(k, k + n)
            np.minimum(lo, plo[tuple(cut)], out=lo)
            np.maximum(hi, phi[tuple(cut)], out=hi)
    return lo, hi


def _hard_edges(a: np.ndarray, slope: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """Where the model's alpha ramp is as steep as the model can draw a step (relative to the alpha on either
    side, 3 model pixels away), the original's edge was probably a hard one: the range and how sure, as RGB."""
    lo, hi = _range(a, HARD_R)
    contrast = hi - lo
    rel = slope / np.maximum(contrast, 1e-3)
    sure = np.clip((rel - HARD_REL) * 10.0, 0.0, 1.0) * (contrast > 0.1)
    return Image.fromarray(_to8(np.stack([lo, hi, sure], axis=-1)), "RGB"), _dilate(sure > 0, 1)


def _sharpen(prior: np.ndarray, hard: np.ndarray, scale: float) -> np.ndarray:
    """The model's alpha with its hard edges steepened to about one full-resolution pixel: without evidence from
    the source (where the layer is covered), a step at the ramp's middle is nearer the original than the ramp."""
    sure = hard[..., 2] * INV255
    if not sure.any():
        return prior
    lo = hard[..., 0] * INV255
    span = np.maximum(hard[..., 1] * INV255 - lo, INV255)
    t = np.clip((prior - lo) / span, F0, F1)
    step = lo + span * np.clip(np.float32(0.5) + (t - np.float32(0.5)) * np.float32(HARD_K * scale), F0, F1)
    return prior + sure * (step - prior)


def _erode(x: np.ndarray) -> np.ndarray:
    """3×3 minimum (borders count as outside)."""
    p = np.pad(x, 1)
    rows = np.minimum(np.minimum(p[:-2], p[1:-1]), p[2:])
    return np.minimum(np.minimum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Boolean (2r+1)² maximum."""
    out = mask
    for _ in range(r):
        p = np.pad(out, 1)
        rows = p[:-2] | p[1:-1] | p[2:]
        out = rows[:, :-2] | rows[:, 1:-1] | rows[:, 2:]
    return out


def _smooth_offset(diff: np.ndarray, conf: np.ndarray, total: float) -> np.ndarray:
    """Confidence-weighted local mean of `diff` (already multiplied by `conf`) over about DRIFT_RADIUS model
    pixels, leaning on the global mean where there is little evidence; computed on a 4× coarser grid."""
    h, w = conf.shape
    f = 4
    hp, wp = -(-h // f) * f, -(-w // f) * f
    d = np.pad(diff, ((0, hp - h), (0, wp - w), (0, 0))).reshape(hp // f, f, wp // f, f, 3).sum(axis=(1, 3))
    c = np.pad(conf, ((0, hp - h), (0, wp - w))).reshape(hp // f, f, wp // f, f).sum(axis=(1, 3))
    glob = d.reshape(-1, 3).sum(axis=0) / total
    lam = 0.02 * f * f
    r = max(1, DRIFT_RADIUS // f)
    field = (_box(d, r) + lam * glob) / (_box(c, r)[..., None] + lam)
    return _resize_f(field.astype(np.float32), w, h)


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
        return ((pre + k * colour) / (alpha[..., None] + k + 1e-12)).astype(np.float32)
    h2, w2 = (h + 1) // 2, (w + 1) // 2
    pp = np.pad(pre, ((0, 2 * h2 - h), (0, 2 * w2 - w), (0, 0)), mode="edge")
    pa = np.pad(alpha, ((0, 2 * h2 - h), (0, 2 * w2 - w)), mode="edge")
    cp = (pp[0::2, 0::2] + pp[1::2, 0::2] + pp[0::2, 1::2] + pp[1::2, 1::2]) * np.float32(0.25)
    ca = (pa[0::2, 0::2] + pa[1::2, 0::2] + pa[0::2, 1::2] + pa[1::2, 1::2]) * np.float32(0.25)
    coarse = _resize_f(_fill_colour(cp, ca), w, h)
    k = np.float32(0.05) * (1.0 - alpha[..., None])
    return (pre + k * coarse) / (alpha[..., None] + k)


def _texture_variance(source: np.ndarray, guide: np.ndarray) -> float:
    """Typical energy of the source's detail finer than the model's resolution (sampled patches): how far a
    colour predicted from the model may be off at one full-resolution pixel."""
    H, W = source.shape[:2]
    h, w = guide.shape[:2]
    size = 32
    values = []
    channels = [Image.fromarray(np.ascontiguousarray(guide[..., c]), "F") for c in range(3)]
    for fy in np.linspace(0.1, 0.9, 4):
        for fx in np.linspace(0.1, 0.9, 4):
            y0, x0 = int(fy * max(0, H - size)), int(fx * max(0, W - size))
            y1, x1 = min(H, y0 + size), min(W, x0 + size)
            patch = source[y0:y1, x0:x1].astype(np.float32) / 255.0
            pre = patch[..., :3] * patch[..., 3:4]
            box = (x0 * w / W, y0 * h / H, x1 * w / W, y1 * h / H)
            up = np.stack(
                [_upsample(im, box, x1 - x0, y1 - y0) for im in channels],
                axis=-1,
            )
            values.append(float(((pre - up) ** 2).sum(axis=-1).mean()))
    return float(np.median(values)) + 1e-4


def _layer_energy(
    source: np.ndarray, stack: np.ndarray, alphas: list, visible: list, overall: float
) -> np.ndarray:
    """Energy of each layer's detail that the model's layers lack (finer than the model's pixels, or its colour
    errors): the source's difference from the model's stack, upsampled, on sampled patches away from any model
    edge, fitted as the sum over layers of the layer's energy times its visible share squared. A semi-transparent
    layer's energy is so measured from what it adds to what lies below it; a layer with little evidence (text,
    all edges) leans on the overall energy."""
    H, W = source.shape[:2]
    h, w = stack.shape[:2]
    n = len(alphas)
    edge = np.zeros((h, w), bool)
    for a in alphas:
        gy, gx = np.gradient(a)
        edge |= (np.abs(gx) + np.abs(gy)) > 0.02
    flat = Image.fromarray((~_dilate(edge, 1)).astype(np.uint8) * 255, "L")
    channels = [Image.fromarray(np.ascontiguousarray(stack[..., c]), "F") for c in range(3)]
    shares = [Image.fromarray(np.ascontiguousarray(v, np.float32), "F") for v in visible]
    size = 32
    lhs = np.zeros((n, n))
    rhs = np.zeros(n)
    count = 0
    for fy in np.linspace(0.03, 0.97, 12):
        for fx in np.linspace(0.03, 0.97, 12):
            y0, x0 = int(fy * max(0, H - size)), int(fx * max(0, W - size))
            y1, x1 = min(H, y0 + size), min(W, x0 + size)
            box = (x0 * w / W, y0 * h / H, x1 * w / W, y1 * h / H)
            tw, th = x1 - x0, y1 - y0
            patch = source[y0:y1, x0:x1]
            keep = (np.asarray(flat.resize((tw, th), Image.NEAREST, box=box)) > 0) & (patch[..., 3] == 255)
            if not keep.any():
                continue
            pre = patch[..., :3][keep].astype(np.float32) * INV255
            up = np.stack([_upsample(im, box, tw, th)[keep] for im in channels], axis=-1)
            d2 = ((pre - up) ** 2).sum(axis=-1).astype(np.float64)
            x = np.stack([_upsample(im, box, tw, th)[keep] ** 2 for im in shares], axis=1).astype(np.float64)
            lhs += x.T @ x
            rhs += x.T @ d2
            count += int(keep.sum())
    if count < 64:
        return np.full(n, overall, np.float32)
    energy = np.linalg.solve(lhs + ENERGY_PRIOR * np.eye(n), rhs + ENERGY_PRIOR * overall)
    return np.maximum(energy, ENERGY_FLOOR * overall).astype(np.float32)


def _composites(colours: list, alphas: list) -> tuple[list, list]:
    """Premultiplied RGBA composites of the model's layers below and above each layer."""
    n = len(alphas)
    h, w = alphas[0].shape
    own = []
    for c, a in zip(colours, alphas):
        p = np.empty((h, w, 4), np.float32)
        np.multiply(c, a[..., None], out=p[..., :3])
        p[..., 3] = a
        own.append(p)
    below = [np.zeros((h, w, 4), np.float32)]
    for i in range(n - 1):
        acc = below[i] * (F1 - alphas[i])[..., None]
        acc += own[i]
        below.append(acc)
    above = [None] * n
    above[n - 1] = np.zeros((h, w, 4), np.float32)
    for i in range(n - 1, 0, -1):
        acc = own[i] * (F1 - above[i][..., 3])[..., None]
        acc += above[i]
        above[i - 1] = acc
    return below, above


def _misregistration(
    target: np.ndarray, a: np.ndarray, colour: np.ndarray, below: np.ndarray, above: np.ndarray
) -> tuple[float, float] | None:
    """How far (dx, dy in model pixels, at most SHIFT) the layer must move to sit on the source: the alpha that
    explains the source (RGBA, premultiplied, at the model's resolution) on the layer's visible edges, against
    the model's alpha moved by a small offset (least squares, leaning on no offset). None if it hardly moves."""
    gy, gx = np.gradient(a)
    use = gx * gx + gy * gy > 0.02**2
    if int(np.count_nonzero(use)) < 16:
        return None
    ab, be = above[use], below[use]  # (N, 4): only the layer's edges matter
    t = 1.0 - ab[:, 3:4]
    z0 = ab + t * be
    dz = t * (np.concatenate([colour[use], np.ones((len(ab), 1), np.float32)], axis=-1) - be)
    dd = (dz * dz).sum(axis=-1)
    clear = dd > 0.05
    if int(np.count_nonzero(clear)) < 16:
        return None
    seen = np.clip(((target[use] - z0) * dz).sum(axis=-1)[clear] / dd[clear], -0.5, 1.5)
    wgt = dd[clear].astype(np.float64)
    jac = np.stack([gx[use][clear], gy[use][clear]], axis=1).astype(np.float64)
    lhs = (jac * wgt[:, None]).T @ jac + MOVE_PRIOR * np.eye(2)
    d = np.clip(np.linalg.solve(lhs, (jac * wgt[:, None]).T @ (seen - a[use][clear])), -SHIFT, SHIFT)
    if np.abs(d).max() < 0.02:
        return None
    return float(d[0]), float(d[1])


def _seen_alpha(target: np.ndarray, a: np.ndarray, colour: np.ndarray, below: np.ndarray, above: np.ndarray) -> np.ndarray:
    """The layer's alpha corrected towards what the source shows at the model's resolution, where the source's
    detail finer than a model pixel has averaged out: per pixel, the alpha that explains the source (RGBA,
    premultiplied) given the layer's colour and what lies above and below it, trusted by how clearly the layer
    stands out there (a hidden layer, or one coloured like what is behind it, keeps the model's alpha). Only near
    where the model drew the layer (SEEN_REACH model pixels): a misplaced, blurred, eroded or grown edge moves to
    where the source has it."""
    gy, gx = np.gradient(a)
    near = _dilate(np.abs(gx) + np.abs(gy) > SEEN_EDGE, SEEN_REACH)  # the model's flat parts are its best guess
    if not near.any():
        return a
    t = 1.0 - above[..., 3:4]
    dz = np.concatenate([colour, np.ones(a.shape + (1,), np.float32)], axis=-1) - below
    dz *= t
    r = target - above
    r -= t * below
    dd = np.einsum("...c,...c->...", dz, dz)
    seen = np.einsum("...c,...c->...", dz, r) / np.maximum(dd, 1e-6)
    # differences within the noise (the model's colour errors, divided by the contrast) are taken for noise:
    # flat parts stay as the model drew them, a misplaced edge (off by up to 1) moves
    diff = np.clip(seen, 0.0, 1.0) - a
    tau = SEEN_TAU / np.sqrt(np.maximum(dd, 1e-6))
    diff = np.sign(diff) * np.maximum(np.abs(diff) - tau, 0.0)
    out = a + dd / (dd + SEEN_NOISE) * diff
    return np.where(near, out, a).astype(np.float32)


def _move(x: np.ndarray, d: tuple[float, float]) -> np.ndarray:
    """x (h, w, ...) sampled at (x + dx, y + dy): cubic convolution (a = -0.5), borders extended."""
    out = np.asarray(x, np.float32)
    for axis, shift in ((1, d[0]), (0, d[1])):
        k = int(np.floor(shift))
        f = shift - k
        taps = (  # Keys' cubic weights for the samples at offsets k-1 .. k+2
            ((-0.5 * f + 1.0) * f - 0.5) * f,
            (1.5 * f - 2.5) * f * f + 1.0,
            ((-1.5 * f + 2.0) * f + 0.5) * f,
            (0.5 * f - 0.5) * f * f,
        )
        n = out.shape[axis]
        pos = np.arange(n)
        acc = None
        for t, wgt in zip(range(k - 1, k + 3), taps):
            part = np.take(out, np.clip(pos + t, 0, n - 1), axis=axis) * np.float32(wgt)
            acc = part if acc is None else acc + part
        out = acc
    return out


def _drift(
    guide: np.ndarray, s_alpha: np.ndarray, fills: list, alphas: list, visible: list
) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer colour gain and offset (per channel) that best explain the source's colours by the model's
    stack, all layers at once: a semi-transparent layer's drift is only seen mixed with what lies below it, and a
    layer's gain also applies where it is hidden. Fitted away from edges (where the model's small shifts
    dominate), with a pull towards no correction for layers that show little."""
    n = len(fills)
    total_a = np.zeros_like(s_alpha)
    edge = np.zeros(s_alpha.shape, bool)
    for a, v in zip(alphas, visible):
        total_a += v
        gy, gx = np.gradient(a)
        edge |= (np.abs(gx) + np.abs(gy)) > 0.02
    use = ~_dilate(edge, 1) & (s_alpha > 0.5) & (np.abs(total_a - s_alpha) < 0.02)
    use[1::2] = False  # a quarter of the pixels is plenty for a dozen parameters
    use[:, 1::2] = False
    gains = np.ones((n, 3), np.float32)
    offsets = np.zeros((n, 3), np.float32)
    count = int(use.sum())
    if count < 64:
        return gains, offsets
    vis = np.stack([v[use] for v in visible], axis=1).astype(np.float64)  # (N, n)
    target = guide[use].astype(np.float64)  # (N, 3)
    ridge = 0.02 * count / n
    for ch in range(3):
        c = np.stack([f[..., ch][use] for f in fills], axis=1).astype(np.float64)
        x = np.concatenate([vis * c, vis], axis=1)  # columns: gain terms, offset terms
        y = target[:, ch] - (vis * c).sum(axis=1)  # what the model's stack misses
        lhs = x.T @ x + ridge * np.diag(np.concatenate([np.full(n, 0.25), np.ones(n)]))
        sol = np.linalg.solve(lhs, x.T @ y)
        gains[:, ch] = 1.0 + np.clip(sol[:n], -0.2, 0.2)
        offsets[:, ch] = np.clip(sol[n:], -0.1, 0.1)
    return gains, offsets


def _box_down(source: np.ndarray, w: int, h: int, opaque: bool) -> np.ndarray:
    """The source box-filtered to (h, w) RGBA floats in 0..1 (premultiplied resampling unless it is opaque), in strips
    of source rows: Pillow's premultiplied resize of the whole image would hold a full-resolution copy of it."""
    H, W = source.shape[:2]
    mode = "RGBX" if opaque else "RGBA"
    out = np.empty((h, w, 4), np.float32)
    step = max(1, STRIP_PIXELS * h // (W * H))  # output rows per strip
    for r0 in range(0, h, step):
        r1 = min(h, r0 + step)
        top, bottom = r0 * H / h, r1 * H / h  # the source rows that the box filter reads for these output rows
        y0, y1 = int(top), min(H, int(np.ceil(bottom)))
        strip = Image.fromarray(source[y0:y1], mode).resize((w, r1 - r0), Image.BOX, box=(0, top - y0, W, bottom - y0))
        out[r0:r1] = np.asarray(strip.convert("RGBA"), dtype=np.float32)
    out *= np.float32(1.0 / 255.0)
    if opaque:
        out[..., 3] = 1.0
    return out


class _Prepared:
    """Per-layer maps at the model's resolution, ready to be upsampled tile by tile."""

    def __init__(self, source: np.ndarray, layers: Sequence[np.ndarray]) -> None:
        h, w = layers[0].shape[:2]
        self.h, self.w = h, w
        # an opaque source needs no premultiplied resampling (Pillow's RGBA resize converts the full image twice)
        self.opaque_source = bool(source[..., 3].min() == 255)
        small = _box_down(source, w, h, self.opaque_source)
        s_alpha = small[..., 3]
        guide = small[..., :3] * s_alpha[..., None]
        model = [layer.astype(np.float32) / 255.0 for layer in layers]
        alphas = [m[..., 3] for m in model]
        n = len(model)
        helper = ThreadPoolExecutor(1)  # the source's fine energy is measured while the layers are prepared
        pending = helper.submit(_texture_variance, source, guide)

        # visible weight of each model layer, to measure colour drift where a layer is plainly visible
        above = np.ones((h, w), np.float32)
        visible = [None] * n
        for i in range(n - 1, -1, -1):
            visible[i] = alphas[i] * above
            above = above * (1.0 - alphas[i])

        fills = _parallel(lambda i: _fill_colour(model[i][..., :3] * alphas[i][..., None], alphas[i]), range(n))
        gains, offsets = _drift(guide, s_alpha, fills, alphas, visible)
        variance = pending.result()
        helper.shutdown()

        def colour_of(i: int) -> np.ndarray:
            colour = fills[i] * gains[i] + offsets[i]
            # what is left of the drift: a smooth offset between the source and the model where this layer is
            # what one sees
            conf = np.clip((visible[i] - 0.9) / 0.1, 0.0, 1.0) * (s_alpha > 0.5)
            conf = _erode(conf.astype(np.float32))
            total = float(conf.sum())
            if total > 4.0:
                colour = colour + _smooth_offset((small[..., :3] - colour) * conf[..., None], conf, total)
            return np.clip(colour, 0.0, 1.0).astype(np.float32)

        colours = _parallel(colour_of, range(n))

        # premultiplied composites of the model's layers below and above each layer; a layer the model drew a
        # little off (a sub-pixel offset its visible edges show) is moved onto the source first, so that its
        # hidden edges and content move with it
        below, above_c = _composites(colours, alphas)
        target = np.concatenate([guide, s_alpha[..., None]], axis=-1)
        moves = _parallel(lambda i: _misregistration(target, alphas[i], colours[i], below[i], above_c[i]), range(n))
        for i, d in enumerate(moves):
            if d is not None:
                moved = np.clip(_move(np.concatenate([colours[i], alphas[i][..., None]], axis=-1), d), 0.0, 1.0)
                colours[i], alphas[i] = np.ascontiguousarray(moved[..., :3]), np.ascontiguousarray(moved[..., 3])
        # the alpha the source shows at the model's resolution: misplaced, blurred, eroded or grown edges move to
        # where the source has them, where the layer is seen
        # top down: each layer explains what the (corrected) layers above it leave unexplained
        drawn = [a.copy() for a in alphas]
        for _ in range(SEEN_PASSES):
            below, _unused = _composites(colours, alphas)
            over = np.zeros((h, w, 4), np.float32)
            for i in range(n - 1, -1, -1):
                if not bool(alphas[i].min() >= 1.0):
                    alphas[i] = _seen_alpha(target, alphas[i], colours[i], below[i], over)
                if i:
                    over = over + (np.concatenate([colours[i] * alphas[i][..., None], alphas[i][..., None]], axis=-1)
                                   * (F1 - over[..., 3:4]))
        below, above_c = _composites(colours, alphas)
        above = np.ones((h, w), np.float32)
        for i in range(n - 1, -1, -1):
            visible[i] = alphas[i] * above
            above = above * (1.0 - alphas[i])
        self.moves = moves
        self.energy = _layer_energy(source, below[-1][..., :3] * (1.0 - alphas[-1][..., None])
                                    + colours[-1] * alphas[-1][..., None], alphas, visible, variance)

        self.weight: list[Image.Image] = []  # prior's weight against the source's evidence
        self.without: list[Image.Image] = []  # the pixel as the model sees it without this layer (CMYK = RGBA)
        self.opaque: list[Image.Image] = []  # ... and with this layer made opaque
        self.pixels: list[Image.Image] = []  # straight colour and model alpha (the prior), RGBA stored as CMYK
        self.active: list[np.ndarray] = []  # (h, w) bool: may have alpha > 0 here
        self.band: list[np.ndarray] = []  # (h, w) bool: alpha edge, refined from the source
        self.solid: list[np.ndarray] = []  # (h, w) bool: alpha 1
        self.near: list[Image.Image] = []  # model alpha spread out: which layer is closest, for unclaimed pixels
        self.tangent: list[tuple[Image.Image, np.ndarray]] = []  # CMYK: how much to pool along x, y, the diagonal
        # and the antidiagonal; (h, w) bool: where any
        self.hard: list[tuple[Image.Image, np.ndarray]] = []  # RGB: local alpha low, high, and how surely a
        # hard edge the ramp is; (h, w) bool: where it is one
        self.scale = 0.5 * (source.shape[0] / h + source.shape[1] / w)  # full-resolution pixels per model pixel
        def maps(i: int) -> tuple:
            a = alphas[i]
            gy, gx = np.gradient(a)
            # how wrong the model's alpha may be here: a gentle ramp is only off by the model's small shift, a
            # ramp as steep as the model can draw is probably a sharper edge than it can draw, wrong by up to 1/2
            slope = np.sqrt(gx * gx + gy * gy)
            steep = np.clip((slope - 0.08) * 10.0, 0.0, 1.0)
            spread = np.maximum(SHIFT * slope + SHARP * steep * slope * slope, 0.002)
            # a partly transparent model pixel where the alpha varies may hide any mix of 0 and 1 at full resolution
            # (hair, thin strokes, small type): there the model knows the coverage, the source where it is
            lo, hi = _range(a, 1)
            spread = np.sqrt(spread * spread + FINE * a * (1.0 - a) * np.square(hi - lo)
                             + CORRECTED * np.square(a - drawn[i]))  # where the model was wrong, the source decides
            edge = (a > 0.004) & (a < 0.996)
            band = _dilate(edge, 2)
            # along a clean edge the source's evidence is pooled over a few pixels (the grain seen through a
            # partly transparent edge reads as alpha noise pixel by pixel): how much, in which of four directions,
            # from the model's alpha, its structure tensor (how straight) and whether it is a step
            jxx, jyy, jxy = _box(gx * gx, 1), _box(gy * gy, 1), _box(gx * gy, 1)
            mag = np.sqrt(np.square(jxx - jyy) + 4.0 * jxy * jxy)
            coh = mag / (jxx + jyy + 1e-6)
            # a step between two flat parts (a panel's edge), not a ridge (a line, a letter, a strand): the
            # gradients around all point one way
            way = np.sqrt(np.square(_box(gx, 2)) + np.square(_box(gy, 2))) / (_box(slope, 2) + 1e-6)
            coh = coh * np.clip((way - POOL_WAY) / (1.0 - POOL_WAY), 0.0, 1.0)
            c2, s2 = (jxx - jyy) / (mag + 1e-9), 2.0 * jxy / (mag + 1e-9)
            ws = [np.square(np.maximum(v, 0.0)) for v in (-c2, c2, -s2, s2)]
            tot = ws[0] + ws[1] + ws[2] + ws[3] + 1e-9
            tangent = (Image.fromarray(_to8(np.stack([coh * w / tot for w in ws], axis=-1)), "CMYK"),
                       _dilate(coh > 0.05, 1))
            weight = np.where(band, variance / (spread * spread), 1e6).astype(np.float32)
            t = 1.0 - above_c[i][..., 3:4]
            z0 = above_c[i] + t * below[i]
            z1 = above_c[i] + t * np.concatenate([colours[i], np.ones((h, w, 1), np.float32)], axis=-1)
            return (
                Image.fromarray(weight, "F"),
                Image.fromarray(_to8(z0), "CMYK"),
                Image.fromarray(_to8(z1), "CMYK"),
                Image.fromarray(_to8(np.concatenate([colours[i], a[..., None]], axis=-1)), "CMYK"),
                _dilate(a > 0, 1),
                _dilate(band, 1),
                ~_dilate(a < 1.0, 1),
                Image.fromarray(np.ascontiguousarray(_box(a, 3)), "F"),
                _hard_edges(a, slope),
                tangent,
            )

        for result in _parallel(maps, range(n)):
            for store, value in zip(
                (self.weight, self.without, self.opaque, self.pixels, self.active, self.band, self.solid, self.near,
                 self.hard, self.tangent),
                result,
            ):
                store.append(value)




_LINES = (  # mean over 2·POOL_R+1 pixels along x, y, the diagonal and the antidiagonal
    np.full((1, 2 * POOL_R + 1), 1.0 / (2 * POOL_R + 1), np.float32),
    np.full((2 * POOL_R + 1, 1), 1.0 / (2 * POOL_R + 1), np.float32),
    np.eye(2 * POOL_R + 1, dtype=np.float32) / (2 * POOL_R + 1),
    np.fliplr(np.eye(2 * POOL_R + 1, dtype=np.float32)) / (2 * POOL_R + 1),
)


def _pool_along(dn: np.ndarray, dd: np.ndarray, w4: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A pixel's evidence for its alpha (numerator and denominator of its least-squares fit) averaged with its
    neighbours' along the edge: over 2·POOL_R+1 pixels in each of four directions (along x, y, the diagonal and
    the antidiagonal) weighted by `w4`, whose weights sum to at most 1 (the rest stays the pixel's own)."""
    weights = np.ascontiguousarray(w4.transpose(2, 0, 1))
    keep = 1.0 - weights.sum(axis=0)
    if not (keep < 0.95).any():
        return dn, dd
    n_out, d_out = dn * keep, dd * keep
    for wk, kernel in zip(weights, _LINES):
        if (wk > 0.02).any():
            n_out += wk * cv2.filter2D(dn, -1, kernel, borderType=cv2.BORDER_REPLICATE)
            d_out += wk * cv2.filter2D(dd, -1, kernel, borderType=cv2.BORDER_REPLICATE)
    return n_out, d_out


def _to8(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8))


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
    if any(layer.ndim != 3 or layer.shape[2] != 4 or layer.dtype != np.uint8 for layer in layers):
        raise ValueError("model layers must be (h, w, 4) uint8 arrays")
    if any(layer.shape != layers[0].shape for layer in layers) or 0 in layers[0].shape:
        raise ValueError("model layers must all have one, non-empty size")
    source = np.ascontiguousarray(source)
    H, W = source.shape[:2]
    prep = _Prepared(source, layers)
    h, w = prep.h, prep.w
    n = len(layers)
    sx, sy = w / W, h / H

    # which layers may have pixels in each tile: those whose model alpha reaches it, and where none does but the
    # source shows, the bottom layer (it takes the source as it is)
    jobs = []  # per tile: its corner, the model region it reads, the layers it writes
    extent = [[H, W, 0, 0] for _ in range(n)]  # y0, x0, y1, x1: the tiles a layer may write
    for Y0 in range(0, H, TILE):
        for X0 in range(0, W, TILE):
            Y1, X1 = min(H, Y0 + TILE), min(W, X0 + TILE)
            ly0, ly1 = max(0, int(Y0 * sy) - 1), min(h, int(np.ceil(Y1 * sy)) + 1)
            lx0, lx1 = max(0, int(X0 * sx) - 1), min(w, int(np.ceil(X1 * sx)) + 1)
            region = (slice(ly0, ly1), slice(lx0, lx1))
            idx = [i for i in range(n) if prep.active[i][region].any()]
            jobs.append(((Y0, X0), region, idx))
            for i in idx or ([0] if source[Y0:Y1, X0:X1, 3].any() else []):
                e = extent[i]
                e[0], e[1], e[2], e[3] = min(e[0], Y0), min(e[1], X0), max(e[2], Y1), max(e[3], X1)
    # one buffer per layer over those tiles only: a canvas-sized one would be resident far beyond the layer's
    # pixels, as numpy backs large arrays with huge pages that span whole rows of the canvas
    out = [_Canvas(e) for e in extent]

    def tiles(jobs: list[tuple[tuple[int, int], tuple[slice, slice], list[int]]]) -> list[list[int]]:
        bounds = [[H, W, 0, 0] for _ in range(n)]  # y0, x0, y1, x1 of non-zero alpha
        for (Y0, X0), region, idx in jobs:
            Y1, X1 = min(H, Y0 + TILE), min(W, X0 + TILE)
            box = (X0 * sx, Y0 * sy, X1 * sx, Y1 * sy)
            src = source[Y0:Y1, X0:X1]
            if idx:
                _tile(src, idx, prep, region, box, out, (Y0, Y1, X0, X1), bounds)
            elif src[..., 3].any():
                # no layer reaches here: the bottom layer takes the source as it is
                out[0].at(Y0, Y1, X0, X1)[...] = np.where(src[..., 3:4] > 0, src, 0)
                _grow_bounds(bounds[0], src[..., 3], Y0, X0)
        return bounds

    # tiles are independent and numpy and Pillow release the GIL while they work: one thread per core, each
    # taking every so-many-th tile (neighbouring tiles cost alike, so the shares are even)
    workers = max(1, min(_cores(), len(jobs)))
    if workers == 1:
        parts = [tiles(jobs)]
    else:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(tiles, [jobs[k::workers] for k in range(workers)]))
    bounds = [
        [min(p[i][0] for p in parts), min(p[i][1] for p in parts), max(p[i][2] for p in parts), max(p[i][3] for p in parts)]
        for i in range(n)
    ]

    placed = []
    for i in range(n):
        y0, x0, y1, x1 = bounds[i]
        canvas, out[i] = out[i], None
        if y1 <= y0:
            placed.append(PlacedLayer(names[i], 0, 0, np.zeros((0, 0, 4), np.uint8)))
            continue
        placed.append(PlacedLayer(names[i], x0, y0, canvas.crop(y0, x0, y1, x1)))
        del canvas
    return placed


Rect = tuple[int, int, int, int]  # Y0, Y1, X0, X1 on the canvas
Bounds = list[list[int]]  # per layer: y0, x0, y1, x1 of its non-zero alpha


class _Canvas:
    """One layer's pixels over the tiles it may write (zeroed, each tile written once)."""

    def __init__(self, extent: list[int]) -> None:
        self.y, self.x = extent[0], extent[1]
        self.pixels = np.zeros((max(0, extent[2] - extent[0]), max(0, extent[3] - extent[1]), 4), np.uint8)

    def at(self, Y0: int, Y1: int, X0: int, X1: int) -> np.ndarray:
        return self.pixels[Y0 - self.y : Y1 - self.y, X0 - self.x : X1 - self.x]

    def crop(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """The pixels of [y0, y1) × [x0, x1) as a contiguous array in this buffer, which then shrinks to it: a copy
        would hold a second buffer of up to the layer's size next to it. The canvas is not usable afterwards."""
        full, self.pixels = self.pixels, None
        height, width = full.shape[:2]
        top, left = y0 - self.y, x0 - self.x
        if (top, left, y1 - y0, x1 - x0) == (0, 0, height, width):
            return full
        row = (x1 - x0) * 4
        flat = full.reshape(-1)
        # each row moves to a lower address than any row still to be read, so none is overwritten before it moves
        for r in range(y1 - y0):
            start = ((top + r) * width + left) * 4
            flat[r * row : (r + 1) * row] = flat[start : start + row]
        del flat
        full.resize((y1 - y0) * row, refcheck=False)  # realloc: the pages past the crop go back to the system
        return full.reshape(y1 - y0, x1 - x0, 4)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _parallel(fn: Callable[[Any], Any], items: Iterable[Any]) -> list:
    """fn over items on one thread per core (numpy and Pillow release the GIL while they work), in order."""
    items = list(items)
    workers = max(1, min(_cores(), len(items)))
    if workers == 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def _grow_bounds(b: list[int], alpha: np.ndarray, Y0: int, X0: int) -> None:
    """Widen the bounds `b` (y0, x0, y1, x1) to the non-zero `alpha` of a tile placed at (Y0, X0)."""
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return
    cols = np.flatnonzero(alpha.any(axis=0))
    b[0] = min(b[0], Y0 + int(rows[0]))
    b[1] = min(b[1], X0 + int(cols[0]))
    b[2] = max(b[2], Y0 + int(rows[-1]) + 1)
    b[3] = max(b[3], X0 + int(cols[-1]) + 1)


def _write(out: list[_Canvas], bounds: Bounds, i: int, rect: Rect, a8: np.ndarray, rgb8: np.ndarray, raw: np.ndarray,
           own: np.ndarray, c8: np.ndarray) -> None:
    """Write one layer's tile into its (zeroed, written once) canvas: its colour (`rgb8`, a view of the
    upsampled RGBA `raw` if unchanged), the owner's colour (`c8`, RGBA) where it owns the pixel, no colour under
    alpha 0. Whole pixels are moved as 32-bit words."""
    if not a8.any():
        return
    if rgb8.base is raw:
        px = raw.copy()
    else:
        px = np.empty(a8.shape + (4,), np.uint8)
        px[..., :3] = rgb8
    if own.any():
        px = np.where(own[..., None], c8.view(np.uint32), px.view(np.uint32)).view(np.uint8)
    px[..., 3] = a8
    _write_rgba(out, bounds, i, rect, px)


def _write_rgba(out: list[_Canvas], bounds: Bounds, i: int, rect: Rect, px: np.ndarray) -> None:
    """`_write` for a ready RGBA tile."""
    a8 = px[..., 3]
    if not a8.any():
        return
    Y0, Y1, X0, X1 = rect
    dst = out[i].at(Y0, Y1, X0, X1)
    if a8.all():
        dst[...] = px
        b = bounds[i]
        b[0], b[1], b[2], b[3] = min(b[0], Y0), min(b[1], X0), max(b[2], Y1), max(b[3], X1)
    else:  # the canvas is zero and written once: clear the colour under alpha 0 here, then copy
        dst.view(np.uint32)[...] = px.view(np.uint32) * (a8 != 0)[..., None]
        _grow_bounds(bounds[i], a8, Y0, X0)


def _round_to_8bit(x: np.ndarray) -> np.ndarray:
    """Round to the 8-bit grid, staying in 0..1 floats."""
    return np.rint(x * np.float32(255.0)) * np.float32(1.0 / 255.0)


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.rint(x * np.float32(255.0)).astype(np.uint8)


def _tile(src: np.ndarray, idx: list[int], prep: _Prepared, region: tuple[slice, slice],
          box: tuple[float, float, float, float], out: list[_Canvas], rect: Rect, bounds: Bounds) -> None:
    """Restore one tile of the canvas for the layers `idx` that reach it, writing each into `out` and widening its
    `bounds`. `src`: the source's pixels at `rect` (Y0, Y1, X0, X1); `region`: the same place in the model's
    layers; `box`: it in the model's pixels, for upsampling."""
    Y0, Y1, X0, X1 = rect
    th, tw = Y1 - Y0, X1 - X0
    opaque_src = prep.opaque_source or bool(src[..., 3].min() == 255)
    solid = [bool(prep.solid[i][region].all()) for i in idx]

    # below the top-most solid layer nothing shows in an opaque tile: those layers keep the model's pixels
    start = 0
    if opaque_src and any(solid):
        start = max(j for j, f in enumerate(solid) if f)
        for j, i in enumerate(idx[:start]):
            px = _upsample(prep.pixels[i], box, tw, th)
            if solid[j]:
                px = px.copy()
                px[..., 3] = 255
            _write_rgba(out, bounds, i, rect, px)
        if start == len(idx) - 1:
            _write_rgba(out, bounds, idx[start], rect, src)
            return
    idx, solid = idx[start:], solid[start:]
    m = len(idx)

    s = src.astype(np.float32) * INV255
    s_alpha = s[..., 3]
    if not opaque_src:
        s[..., :3] *= s_alpha[..., None]
    s_pre = s[..., :3]

    # alpha: the model's, except along its edges where the source says where the edge is: per pixel, the alpha
    # that best explains the source given the layer's colour and what lies above and below it (as the model
    # sees them), weighed against the model's alpha
    alpha = []
    colour = []
    qc = []
    raw = []
    for j, i in enumerate(idx):
        px = _upsample(prep.pixels[i], box, tw, th)
        raw.append(px)
        pf = px.astype(np.float32)
        pf *= INV255
        colour.append(px[..., :3])
        qc.append(pf[..., :3])
        if solid[j]:
            alpha.append(np.ones((th, tw), np.float32))
            continue
        prior = pf[..., 3]
        if prep.band[i][region].any():
            hard, where = prep.hard[i]
            if where[region].any():
                prior = _sharpen(prior, _upsample(hard, box, tw, th), prep.scale)
            weight = _upsample(prep.weight[i], box, tw, th)
            z0 = _upsample(prep.without[i], box, tw, th).astype(np.float32)
            z0 *= INV255
            dz = _upsample(prep.opaque[i], box, tw, th) * INV255
            dz -= z0
            dn = np.einsum("...c,...c->...", dz, s - z0)
            dd = np.einsum("...c,...c->...", dz, dz)
            along, where = prep.tangent[i]
            if where[region].any():
                dn, dd = _pool_along(dn, dd, _upsample(along, box, tw, th) * INV255)
            prior = (dn + weight * prior) / (dd + weight)
        alpha.append(np.clip(prior, F0, F1))
    if not opaque_src:
        gone = s_alpha <= 0
        for a in alpha:
            a[gone] = 0.0

    # the stack's alpha must equal the source's: in an opaque document the bottom-most clearly present layer is
    # made opaque; in a transparent one (even where a tile of it is opaque: hidden layers keep their own alpha)
    # one clearly present layer takes up the difference
    q = [_round_to_8bit(a) for a in alpha]
    if m == 1:
        absorber = np.zeros((th, tw), np.int8)
    else:
        absorber = np.full((th, tw), -1, np.int8)
        if prep.opaque_source:
            for j in range(m - 1, -1, -1):
                absorber[alpha[j] >= 0.5] = j
        else:
            # of the layers clearly present, the one whose alpha the stack's alpha depends on most (the least
            # covered by the others; the lowest of equals): a layer mostly covered by others would take up their
            # small alpha errors divided by what shows of it, and lose its own alpha where it is hidden
            through = [np.ones((th, tw), np.float32)]  # transmittance of the layers below each one
            for j in range(m - 1):
                through.append(through[-1] * (F1 - alpha[j]))
            over = np.ones((th, tw), np.float32)  # ... and of those above
            best = np.full((th, tw), -1.0, np.float32)
            for j in range(m - 1, -1, -1):
                shows = through[j] * over
                take = (alpha[j] >= 0.5) & (shows >= best - ABSORB_TIE)
                absorber[take] = j
                best = np.where(take, np.maximum(shows, best), best)
                over = over * (F1 - alpha[j])
        loose = absorber < 0
        if loose.any():  # no layer clearly present: the one with the most alpha, or the nearest one
            best = np.zeros((th, tw), np.float32)
            pick = np.zeros((th, tw), np.int8)
            for j in range(m):
                more = alpha[j] > best
                best = np.where(more, alpha[j], best)
                pick[more] = j
            orphan = loose & (best <= 0) & (s_alpha > 0)
            if orphan.any():
                near = [_upsample(prep.near[i], box, tw, th) for i in idx]
                best = near[0].copy()
                for j in range(1, m):
                    more = orphan & (near[j] > best)
                    best = np.where(more, near[j], best)
                    pick[more] = j
            absorber = np.where(loose, pick, absorber)
    onehot = [absorber == j for j in range(m)]
    need = F1 - s_alpha  # required total transmittance
    if prep.opaque_source:
        for j in range(m):
            q[j][onehot[j]] = 1.0
    else:
        others = np.ones((th, tw), np.float32)  # transmittance of all but the absorber
        for j in range(m):
            others *= np.where(onehot[j], F1, F1 - q[j])
        # others already too opaque: thin them (scale their optical depth) so that alone they reach the source
        over = others < need - 1e-6
        if over.any():
            k = np.log(np.maximum(need, 1e-6)) / np.log(np.clip(others, 1e-3**m, 1 - 1e-7))
            others = np.ones((th, tw), np.float32)
            for j in range(m):
                thin = _round_to_8bit(1.0 - np.maximum(1.0 - q[j], 1e-3) ** k)
                q[j] = np.where(onehot[j] | ~over, q[j], thin).astype(np.float32)
                others *= np.where(onehot[j], F1, F1 - q[j])
        solved = _round_to_8bit(np.clip(F1 - need / np.maximum(others, 1e-4), F0, F1))
        for j in range(m):
            q[j] = np.where(onehot[j] & (others > 1e-4), solved, q[j])

    # colour: everyone keeps the model's colour but the owner, whose colour is solved against the others'
    # quantised values; the owner is the lowest layer that shows enough: detail behind a semi-transparent
    # layer or an anti-aliased edge belongs to what is behind, and the layer in front keeps its model colour
    vis = [None] * m
    above = np.ones((th, tw), np.float32)
    for j in range(m - 1, -1, -1):
        vis[j] = q[j] * above
        above *= F1 - q[j]
    if m == 1:
        owner = np.zeros((th, tw), np.int8)
    else:
        owner = np.full((th, tw), -1, np.int8)
        best = np.zeros((th, tw), np.float32)
        pick = np.zeros((th, tw), np.int8)
        for j in range(m - 1, -1, -1):
            owner[vis[j] >= OWNER_SHARE] = j
            more = vis[j] > best
            best = np.where(more, vis[j], best)
            pick[more] = j
        owner = np.where(owner < 0, pick, owner)
    owned = [owner == j for j in range(m)]
    # colours channel first, (3, th, tw): per-pixel weights then broadcast over the leading axis (fast in numpy)
    sc = np.ascontiguousarray(s_pre.transpose(2, 0, 1))
    qc = [np.ascontiguousarray(c.transpose(2, 0, 1)) for c in qc]
    changed = [False] * m
    v_own = np.zeros((th, tw), np.float32)
    rest = np.zeros((3, th, tw), np.float32)  # what the other layers show
    if m > 1:
        # what the model's stack misses is shared by the visible layers as a least-squares guess would: each
        # takes a part in proportion to its visible share times its fine energy (texture behind a flat
        # semi-transparent layer stays behind it, a textured one keeps its own); the owner takes the rest
        miss = sc.copy()
        total = np.full((th, tw), 1e-12, np.float32)
        for j in range(m):
            miss -= vis[j] * qc[j]
            total += vis[j] * vis[j] * prep.energy[idx[j]]
        miss /= total
        for j in range(m):
            k = np.where(owned[j], F0, vis[j] * prep.energy[idx[j]])
            if (k > 1e-6).any():
                qc[j] = _round_to_8bit(np.clip(qc[j] + k * miss, F0, F1))
                changed[j] = True
    for j in range(m):
        v_own = np.where(owned[j], vis[j], v_own)
        rest += np.where(owned[j], F0, vis[j]) * qc[j]
    safe = np.maximum(v_own, 1e-6)
    c_new = _round_to_8bit(np.clip((sc - rest) / safe, F0, F1))
    err = sc - rest - v_own * c_new
    # where the owner could not take everything (its colour clipped) the other visible layers take the rest
    bad = np.maximum(np.maximum(np.abs(err[0]), np.abs(err[1])), np.abs(err[2])) > 1.0 / 255.0
    if bad.any():
        for j in range(m):
            sel = bad & ~owned[j] & (vis[j] > 1.0 / 255.0)
            if not sel.any():
                continue
            changed[j] = True
            if 8 * int(np.count_nonzero(sel)) > sel.size:  # many pixels: whole-tile operations are cheaper
                v = np.where(sel, vis[j], F1)
                nj = _round_to_8bit(np.clip(qc[j] + err / v, 0.0, 1.0))
                step = np.where(sel, v * (nj - qc[j]), F0)
                err -= step
                rest += step
                qc[j] = np.where(sel, nj, qc[j])
                continue
            cj = qc[j][:, sel]
            vj = vis[j][sel]
            nj = _round_to_8bit(np.clip(cj + err[:, sel] / vj, 0.0, 1.0))
            err[:, sel] -= vj * (nj - cj)
            rest[:, sel] += vj * (nj - cj)
            qc[j][:, sel] = nj
        c_new = _round_to_8bit(np.clip((sc - rest) / safe, F0, F1))  # the owner absorbs the rounding once more

    c8 = np.zeros((th, tw, 4), np.uint8)
    c8[..., :3] = _to_u8(c_new).transpose(1, 2, 0)
    for j, i in enumerate(idx):
        rgb8 = _to_u8(qc[j]).transpose(1, 2, 0) if changed[j] else colour[j]
        _write(out, bounds, i, rect, _to_u8(q[j]), rgb8, raw[j], owned[j], c8)
