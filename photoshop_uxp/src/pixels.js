// Pixel arithmetic between Photoshop's imaging data and the protocol's rgba8 layout:
// bounds, padding of trimmed reads, bit-depth conversion. Pure functions.
"use strict";

const { LayerBridgeError } = require("./protocol.js");

const SRGB = "sRGB IEC61966-2.1";
const MAX16 = 32768; // Photoshop's 16-bit range is 0..32768 unless fullRange is asked for

/** {left, top, right, bottom} from either that form or {left, top, width, height}; whole pixels, outward. */
function normBounds(b) {
  if (!b) return null;
  const left = Math.floor(Number(b.left));
  const top = Math.floor(Number(b.top));
  const right = Math.ceil(b.right !== undefined ? Number(b.right) : Number(b.left) + Number(b.width));
  const bottom = Math.ceil(b.bottom !== undefined ? Number(b.bottom) : Number(b.top) + Number(b.height));
  if (![left, top, right, bottom].every(Number.isFinite)) return null;
  return { left, top, right, bottom };
}

function width(b) {
  return b.right - b.left;
}

function height(b) {
  return b.bottom - b.top;
}

/** Intersection of two bounds, or null when they do not overlap. */
function intersect(a, b) {
  if (!a || !b) return null;
  const r = {
    left: Math.max(a.left, b.left),
    top: Math.max(a.top, b.top),
    right: Math.min(a.right, b.right),
    bottom: Math.min(a.bottom, b.bottom),
  };
  return r.right > r.left && r.bottom > r.top ? r : null;
}

/**
 * The area to send: the canvas, narrowed to the layer's bounds (Decompose layer) and to the
 * selection's bounds when there is a selection. Throws when nothing is left.
 */
function sourceArea({ canvas, selection = null, layer = null }) {
  let area = { left: 0, top: 0, right: canvas.width, bottom: canvas.height };
  if (layer) {
    area = intersect(area, normBounds(layer));
    if (!area) throw new LayerBridgeError("empty_source", "The selected layer has no pixels on the canvas.");
  }
  if (selection) {
    area = intersect(area, normBounds(selection));
    if (!area) throw new LayerBridgeError("empty_source", "The selection does not overlap the image" + (layer ? " of the selected layer." : "."));
  }
  return area;
}

/**
 * Refuses an area the server would refuse, from its `limits` (hello; docs/protocol.md), before any
 * pixel is read: a 150-megapixel read takes seconds and memory only to be turned down.
 */
function checkArea(area, limits) {
  const w = area.right - area.left;
  const h = area.bottom - area.top;
  const { max_pixels: maxPixels, max_side: maxSide, max_aspect: maxAspect } = limits || {};
  const fix = "Select a smaller area or scale a copy of the image down.";
  if (maxPixels && w * h > maxPixels) {
    throw new LayerBridgeError("image_too_large",
      `The area is ${w} × ${h} = ${(w * h / 1e6).toFixed(1)} megapixels; the server accepts at most ${Math.round(maxPixels / 1e6)}. ${fix}`);
  }
  if (maxSide && Math.max(w, h) > maxSide) {
    throw new LayerBridgeError("image_too_large", `The area is ${w} × ${h}; the server accepts at most ${maxSide} pixels a side. ${fix}`);
  }
  if (maxAspect && Math.max(w, h) > maxAspect * Math.min(w, h)) {
    throw new LayerBridgeError("invalid_image",
      `The area is ${w} × ${h}: its long side may be at most ${maxAspect} times its short side. Select a less elongated area.`);
  }
}

/** Bits per channel (8, 16, 32) from Document.bitsPerChannel ("bitDepth16") or a number. */
function depthOf(bitsPerChannel) {
  if (typeof bitsPerChannel === "number") return bitsPerChannel;
  const m = /(\d+)/.exec(String(bitsPerChannel));
  return m ? Number(m[1]) : NaN;
}

/** Refuses what the panel cannot round-trip faithfully, with what to do about it. */
function checkDepth(depth) {
  if (depth === 8 || depth === 16) return depth;
  if (depth === 32) {
    throw new LayerBridgeError("unsupported_image",
      "32-bit documents are not supported. Convert a copy to 16 bits (Image > Mode > 16 Bits/Channel) and decompose that.");
  }
  throw new LayerBridgeError("unsupported_image", `${depth}-bit documents are not supported; use 8 or 16 bits per channel.`);
}

/**
 * Converts chunky image data as Photoshop returns it (3 or 4 components, 8 or 16 bits) to rgba8.
 * `data` is a Uint8Array (8-bit) or Uint16Array (16-bit, 0..32768).
 */
function toRgba8(data, { width: w, height: h, components, componentSize }) {
  if (componentSize === 32) checkDepth(32);
  if (componentSize !== 8 && componentSize !== 16) checkDepth(componentSize);
  if (components !== 3 && components !== 4) {
    throw new LayerBridgeError("unsupported_image", `expected RGB or RGBA pixels, got ${components} components`);
  }
  const n = w * h;
  if (data.length !== n * components) {
    throw new LayerBridgeError("invalid_image", `pixel buffer holds ${data.length} values, expected ${n * components}`);
  }
  const out = new Uint8Array(n * 4);
  if (componentSize === 8 && components === 4) {
    out.set(data);
    return out;
  }
  const scale = componentSize === 16 ? 255 / MAX16 : 1;
  for (let i = 0, j = 0, k = 0; i < n; i++, j += components, k += 4) {
    out[k] = Math.round(Math.min(data[j], MAX16) * scale);
    out[k + 1] = Math.round(Math.min(data[j + 1], MAX16) * scale);
    out[k + 2] = Math.round(Math.min(data[j + 2], MAX16) * scale);
    out[k + 3] = components === 4 ? Math.round(Math.min(data[j + 3], MAX16) * scale) : 255;
  }
  return out;
}

/** Converts rgba8 to the typed array createImageDataFromBuffer wants at a document depth. */
function fromRgba8(rgba, depth) {
  checkDepth(depth);
  if (depth === 8) return rgba;
  const out = new Uint16Array(rgba.length);
  for (let i = 0; i < rgba.length; i++) out[i] = Math.round((rgba[i] * MAX16) / 255);
  return out;
}

/**
 * getPixels trims its answer to the part of the request that has pixels. Places the rgba8 pixels
 * that came back (at `got`) into a transparent image the size of what was asked (`want`).
 */
function padTo(rgba, got, want) {
  const gw = width(got);
  const gh = height(got);
  if (rgba.length !== gw * gh * 4) throw new LayerBridgeError("invalid_image", "pixel buffer does not match its bounds");
  const ww = width(want);
  const wh = height(want);
  if (got.left === want.left && got.top === want.top && gw === ww && gh === wh) return rgba;
  const out = new Uint8Array(ww * wh * 4);
  const clip = intersect(got, want);
  if (!clip) return out;
  const rowBytes = width(clip) * 4;
  for (let y = clip.top; y < clip.bottom; y++) {
    const from = ((y - got.top) * gw + (clip.left - got.left)) * 4;
    const to = ((y - want.top) * ww + (clip.left - want.left)) * 4;
    out.set(rgba.subarray(from, from + rowBytes), to);
  }
  return out;
}

/** True when every pixel is fully transparent. */
function isTransparent(rgba) {
  for (let i = 3; i < rgba.length; i += 4) if (rgba[i] !== 0) return false;
  return true;
}

module.exports = {
  SRGB,
  MAX16,
  normBounds,
  intersect,
  sourceArea,
  checkArea,
  width,
  height,
  depthOf,
  checkDepth,
  toRgba8,
  fromRgba8,
  padTo,
  isTransparent,
};
