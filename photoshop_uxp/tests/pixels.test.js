"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const px = require("../src/pixels.js");
const { layerPlan } = require("../src/layers.js");

test("bounds: both forms, whole pixels outward, intersection", () => {
  assert.deepEqual(px.normBounds({ left: 1, top: 2, width: 3, height: 4 }), { left: 1, top: 2, right: 4, bottom: 6 });
  assert.deepEqual(px.normBounds({ left: 0.5, top: 1.2, right: 9.1, bottom: 9.9 }), { left: 0, top: 1, right: 10, bottom: 10 });
  assert.equal(px.normBounds(null), null);
  assert.deepEqual(px.intersect({ left: 0, top: 0, right: 10, bottom: 10 }, { left: 5, top: -5, right: 20, bottom: 5 }),
    { left: 5, top: 0, right: 10, bottom: 5 });
  assert.equal(px.intersect({ left: 0, top: 0, right: 10, bottom: 10 }, { left: 10, top: 0, right: 20, bottom: 10 }), null);
});

test("source area: canvas, narrowed by layer and by a selection that may pass the canvas", () => {
  const canvas = { width: 100, height: 50 };
  assert.deepEqual(px.sourceArea({ canvas }), { left: 0, top: 0, right: 100, bottom: 50 });
  assert.deepEqual(px.sourceArea({ canvas, selection: { left: -20, top: 10, right: 30, bottom: 80 } }),
    { left: 0, top: 10, right: 30, bottom: 50 });
  assert.deepEqual(px.sourceArea({ canvas, layer: { left: 90, top: 40, right: 130, bottom: 60 }, selection: { left: 95, top: 0, right: 100, bottom: 45 } }),
    { left: 95, top: 40, right: 100, bottom: 45 });
  assert.throws(() => px.sourceArea({ canvas, selection: { left: 200, top: 0, right: 300, bottom: 10 } }), { code: "empty_source" });
  assert.throws(() => px.sourceArea({ canvas, layer: { left: -50, top: 0, right: -1, bottom: 10 } }), { code: "empty_source" });
});

test("area limits: the server's megapixels, side and aspect, refused with the size", () => {
  const limits = { max_pixels: 100e6, max_side: 30000, max_aspect: 100 };
  const area = (w, h) => ({ left: 5, top: 7, right: 5 + w, bottom: 7 + h });
  px.checkArea(area(20000, 5000), limits);
  px.checkArea(area(20000, 200), limits);
  px.checkArea(area(30001, 3000), { max_pixels: 100e6 }); // a server that does not say
  px.checkArea(area(30001, 3000), null);
  assert.throws(() => px.checkArea(area(20000, 10000), limits), (e) => e.code === "image_too_large" && /20000 × 10000 = 200.0 megapixels/.test(e.message));
  assert.throws(() => px.checkArea(area(30001, 3000), limits), (e) => e.code === "image_too_large" && /30000 pixels a side/.test(e.message));
  assert.throws(() => px.checkArea(area(20000, 150), limits), (e) => e.code === "invalid_image" && /100 times/.test(e.message));
});

test("depth: names, 32-bit refused with what to do", () => {
  assert.equal(px.depthOf("bitDepth16"), 16);
  assert.equal(px.depthOf(8), 8);
  assert.equal(px.checkDepth(8), 8);
  assert.throws(() => px.checkDepth(32), (e) => e.code === "unsupported_image" && /16 Bits\/Channel/.test(e.message));
  assert.throws(() => px.checkDepth(1), { code: "unsupported_image" });
});

test("to rgba8: 3 components get opaque alpha, 16-bit 0..32768 scales to 0..255", () => {
  const rgb = px.toRgba8(Uint8Array.from([1, 2, 3, 4, 5, 6]), { width: 2, height: 1, components: 3, componentSize: 8 });
  assert.deepEqual([...rgb], [1, 2, 3, 255, 4, 5, 6, 255]);
  const rgba16 = px.toRgba8(Uint16Array.from([0, 16384, 32768, 32768, 128, 129, 32767, 0]), { width: 2, height: 1, components: 4, componentSize: 16 });
  assert.deepEqual([...rgba16], [0, 128, 255, 255, 1, 1, 255, 0]);
  const rgb16 = px.toRgba8(Uint16Array.from([32768, 0, 0]), { width: 1, height: 1, components: 3, componentSize: 16 });
  assert.deepEqual([...rgb16], [255, 0, 0, 255]);
  assert.throws(() => px.toRgba8(new Float32Array(4), { width: 1, height: 1, components: 4, componentSize: 32 }), { code: "unsupported_image" });
  assert.throws(() => px.toRgba8(new Uint8Array(3), { width: 1, height: 1, components: 4, componentSize: 8 }), { code: "invalid_image" });
  assert.throws(() => px.toRgba8(new Uint8Array(2), { width: 1, height: 1, components: 2, componentSize: 8 }), { code: "unsupported_image" });
});

test("from rgba8: 8 bits as is, 16 bits round-trips every value exactly", () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  assert.equal(px.fromRgba8(all, 8), all);
  const wide = px.fromRgba8(all, 16);
  assert.ok(wide instanceof Uint16Array);
  assert.equal(wide[255], 32768);
  assert.deepEqual(px.toRgba8(wide, { width: 64, height: 1, components: 4, componentSize: 16 }), all);
  assert.throws(() => px.fromRgba8(all, 32), { code: "unsupported_image" });
});

test("padding: a trimmed answer goes back to its place in the area asked for", () => {
  const got = { left: 3, top: 2, right: 5, bottom: 3 }; // 2×1
  const want = { left: 2, top: 1, right: 6, bottom: 4 }; // 4×3
  const out = px.padTo(Uint8Array.from([1, 1, 1, 1, 2, 2, 2, 2]), got, want);
  assert.equal(out.length, 4 * 3 * 4);
  const at = (x, y) => [...out.subarray((y * 4 + x) * 4, (y * 4 + x) * 4 + 4)];
  assert.deepEqual(at(1, 1), [1, 1, 1, 1]);
  assert.deepEqual(at(2, 1), [2, 2, 2, 2]);
  assert.deepEqual(at(0, 0), [0, 0, 0, 0]);
  assert.deepEqual(at(3, 2), [0, 0, 0, 0]);
  const same = Uint8Array.from([9, 9, 9, 9]);
  assert.equal(px.padTo(same, { left: 0, top: 0, right: 1, bottom: 1 }, { left: 0, top: 0, right: 1, bottom: 1 }), same);
  assert.ok(px.isTransparent(px.padTo(new Uint8Array(0), { left: 0, top: 0, right: 0, bottom: 0 }, want)));
  assert.equal(px.isTransparent(out), false);
});

test("layer plan: bottom to top, offsets from the origin, empty layers kept, size checked", () => {
  const result = {
    name: "Poster",
    canvas: { width: 10, height: 8 },
    layers: [
      { index: 2, name: "Layer 2", x: 0, y: 0, width: 0, height: 0, bytes: 0 },
      { index: 0, name: "Background", x: 0, y: 0, width: 10, height: 8, bytes: 320, pixels: new Uint8Array(320) },
      { index: 1, name: "Layer 1", x: 3, y: 4, width: 2, height: 1, bytes: 8, pixels: new Uint8Array(8) },
    ],
  };
  const plan = layerPlan(result, { left: 100, top: 50 }, { width: 10, height: 8 });
  assert.equal(plan.groupName, "Poster layers");
  assert.deepEqual(plan.layers.map((l) => [l.name, l.left, l.top, l.width, l.height, l.empty]), [
    ["Background", 100, 50, 10, 8, false],
    ["Layer 1", 103, 54, 2, 1, false],
    ["Layer 2", 100, 50, 0, 0, true],
  ]);
  assert.throws(() => layerPlan(result, { left: 0, top: 0 }, { width: 11, height: 8 }), { code: "invalid_result" });
  assert.throws(() => layerPlan({ layers: [] }, { left: 0, top: 0 }, { width: 1, height: 1 }), { code: "invalid_result" });
  const bad = { layers: [{ index: 0, name: "x", x: 0, y: 0, width: 2, height: 2, pixels: new Uint8Array(4) }] };
  assert.throws(() => layerPlan(bad, { left: 0, top: 0 }, { width: 2, height: 2 }), { code: "invalid_result" });
  assert.equal(layerPlan({ layers: [{ index: 0, x: 0, y: 0, width: 0, height: 0 }] }, { left: 0, top: 0 }, {}).groupName, "Decomposed layers");
});
