// The panel's Photoshop-facing code (src/layers.js) against the in-memory Photoshop double.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const host = require("../src/host.js");
const { readSource, insertLayers, HISTORY_NAME } = require("../src/layers.js");
const { Photoshop, SRGB, constants, pattern } = require("./support/photoshop-double.js");

function setUp(options) {
  const ps = new Photoshop();
  const doc = ps.newDocument(options);
  host.setHost({ photoshop: ps.module(), uxp: {} });
  return { ps, doc };
}

/** A result as the client hands it over: layers with `pixels`, bottom (index 0) to top. */
function fakeResult(width, height) {
  const bg = pattern(width, height, 3);
  const a = pattern(4, 3, 5, 200);
  const b = pattern(2, 2, 7, 255);
  return {
    type: "result",
    name: "Poster",
    canvas: { width, height },
    layers: [
      { index: 0, name: "Background", x: 0, y: 0, width, height, bytes: bg.length, pixels: bg },
      { index: 1, name: "Layer 1", x: 2, y: 1, width: 4, height: 3, bytes: a.length, pixels: a },
      { index: 2, name: "Layer 2", x: 0, y: 0, width: 0, height: 0, bytes: 0, pixels: new Uint8Array(0) },
      { index: 3, name: "Layer 3", x: width - 2, y: height - 2, width: 2, height: 2, bytes: b.length, pixels: b },
    ],
  };
}

function names(list) {
  return list.map((l) => l.name);
}

/** Reads back a layer's pixels at the document's depth, as rgba8 for comparison. */
function layerRgba8(doc, layer) {
  const { data } = layer.pixels;
  if (doc.depth === 8) return Uint8Array.from(data);
  return Uint8Array.from(data, (v) => Math.round((v * 255) / 32768));
}

test("reading a composite with a selection: trimmed answer padded back, sRGB, native depth, disposed", async () => {
  const { ps, doc } = setUp({ width: 12, height: 10, title: "Poster.psd" });
  // A layer covering only part of the canvas: getPixels trims to it, the panel pads back.
  const rgba = pattern(5, 4, 1);
  doc.addLayer({ name: "Art", at: { left: 4, top: 3, width: 5, height: 4 }, rgba });
  doc.selection.bounds = { left: 2, top: 2, right: 11, bottom: 9 };

  const source = await readSource("document");
  assert.deepEqual(ps.lastGetPixels.sourceBounds, { left: 2, top: 2, right: 11, bottom: 9 });
  assert.equal(ps.lastGetPixels.colorProfile, SRGB);
  assert.equal(ps.lastGetPixels.componentSize, undefined, "native depth: no componentSize");
  assert.equal(ps.liveImageData.size, 0, "image data disposed");
  assert.equal(source.name, "Poster");
  assert.deepEqual(source.origin, { left: 2, top: 2 });
  assert.equal(source.width, 9);
  assert.equal(source.height, 7);
  assert.equal(source.layerID, null);
  const expected = new Uint8Array(9 * 7 * 4);
  for (let y = 0; y < 4; y++) {
    for (let x = 0; x < 5; x++) {
      const from = (y * 5 + x) * 4;
      expected.set(rgba.subarray(from, from + 4), ((y + 1) * 9 + (x + 2)) * 4);
    }
  }
  assert.deepEqual(source.data, expected);
  assert.deepEqual(doc.history, ["Open"], "reading changes nothing");
});

test("an area over the server's limits is refused before any pixel is read", async () => {
  const { ps, doc } = setUp({ width: 300, height: 200 });
  doc.addLayer({ name: "Art", at: { left: 0, top: 0, width: 300, height: 200 }, rgba: pattern(300, 200, 2) });
  await assert.rejects(readSource("document", { max_pixels: 50000, max_side: 30000, max_aspect: 100 }),
    (e) => e.code === "image_too_large" && /300 × 200/.test(e.message));
  assert.ok(!ps.calls.includes("imaging.getPixels"), ps.calls.join(", "));
  const source = await readSource("document", { max_pixels: 60000, max_side: 30000, max_aspect: 100 });
  assert.equal(source.width * source.height, 60000);
  assert.ok(ps.calls.includes("imaging.getPixels"));
});

test("a document with only a Background layer answers 3 components: alpha becomes opaque", async () => {
  const { ps, doc } = setUp({ width: 6, height: 4 });
  const rgba = pattern(6, 4, 2);
  doc.addLayer({ name: "Background", at: { left: 0, top: 0, width: 6, height: 4 }, rgba, background: true });
  const source = await readSource("document");
  assert.equal(ps.liveImageData.size, 0);
  assert.deepEqual(source.data, rgba);
});

test("16-bit documents: read at native depth and converted, written back at 16 bits", async () => {
  const { ps, doc } = setUp({ width: 8, height: 6, depth: 16 });
  const rgba = pattern(8, 6, 4);
  doc.addLayer({ name: "Background", at: { left: 0, top: 0, width: 8, height: 6 }, rgba, background: true });
  const source = await readSource("document");
  assert.deepEqual(source.data, rgba);
  assert.equal(source.depth, 16);

  const result = fakeResult(8, 6);
  await insertLayers(source, result);
  const group = doc.layers[0];
  const top = group.layers[0];
  assert.equal(top.name, "Layer 3");
  assert.ok(top.pixels.data instanceof Uint16Array, "written at the document's depth");
  assert.equal(top.pixels.data[3], 32768);
  assert.deepEqual(layerRgba8(doc, top), result.layers[3].pixels);
  assert.equal(ps.liveImageData.size, 0);
});

test("asking 8 bits of a 16-bit document fails in Photoshop (the double too), so the panel never asks", async () => {
  const { ps, doc } = setUp({ width: 2, height: 2, depth: 16 });
  doc.addLayer({ name: "Background", at: { left: 0, top: 0, width: 2, height: 2 }, rgba: pattern(2, 2), background: true });
  const { core, imaging } = ps.module();
  await assert.rejects(core.executeAsModal(() => imaging.getPixels({ componentSize: 8 }), { commandName: "t" }), /componentSize 8/);
});

test("32-bit documents are refused with a clear message before any read", async () => {
  const { ps, doc } = setUp({ width: 4, height: 4, depth: 32 });
  doc.addLayer({ name: "Background", at: { left: 0, top: 0, width: 4, height: 4 }, rgba: pattern(4, 4), background: true });
  await assert.rejects(readSource("document"), (e) => e.code === "unsupported_image" && /32-bit/.test(e.message));
  assert.equal(ps.calls.length, 0);
});

/** rgba8 pixels as a gray document holds them: r = g = b, alpha kept (as the double converts). */
function grayOf(rgba) {
  const out = Uint8Array.from(rgba);
  for (let i = 0; i < out.length; i += 4) {
    const y = Math.round(0.2126 * out[i] + 0.7152 * out[i + 1] + 0.0722 * out[i + 2]);
    out[i] = y; out[i + 1] = y; out[i + 2] = y;
  }
  return out;
}

function isGray(rgba) {
  for (let i = 0; i < rgba.length; i += 4) if (rgba[i] !== rgba[i + 1] || rgba[i] !== rgba[i + 2]) return false;
  return true;
}

for (const depth of [8, 16]) {
  test(`Grayscale documents (${depth}-bit): read as sRGB RGB, layers inserted as sRGB that Photoshop turns gray`, async () => {
    const { ps, doc } = setUp({ width: 12, height: 10, depth, mode: constants.DocumentMode.GRAYSCALE, title: "Scan.psd" });
    assert.equal(doc.mode, "grayscaleMode");
    doc.addLayer({ name: "Background", at: { left: 0, top: 0, width: 12, height: 10 }, rgba: pattern(12, 10, 6), background: true });
    const ink = doc.addLayer({ name: "Ink", at: { left: 2, top: 1, width: 5, height: 4 }, rgba: pattern(5, 4, 8, 128) });
    doc.activeLayers = [ink];

    const source = await readSource("layer");
    assert.equal(ps.lastGetPixels.colorSpace, "RGB", "RGB pixels asked of a gray document");
    assert.equal(ps.lastGetPixels.colorProfile, SRGB);
    assert.deepEqual(source.data, grayOf(pattern(5, 4, 8, 128)), "r = g = b, alpha kept");

    const result = { ...fakeResult(5, 4), name: "Ink" };
    await insertLayers(source, result);
    assert.deepEqual(doc.history, ["Open", HISTORY_NAME]);
    assert.deepEqual(names(doc.layers), ["Ink layers", "Ink", "Background"]);
    const group = doc.layers[0];
    assert.deepEqual(names(group.layers), ["Layer 3", "Layer 2", "Layer 1", "Background"]);
    const l1 = group.layers[2];
    assert.deepEqual(l1.pixels.bounds, { left: 4, top: 2, right: 8, bottom: 5 });
    const written = layerRgba8(doc, l1);
    assert.ok(isGray(written), "the document holds gray");
    assert.deepEqual(written, grayOf(result.layers[1].pixels));
    assert.equal(ps.liveImageData.size, 0);
  });
}

test("Lab documents: read as sRGB RGB, layers inserted as sRGB RGBA into the document", async () => {
  const { ps, doc } = setUp({ width: 12, height: 10, mode: constants.DocumentMode.LAB, title: "Print.tif" });
  assert.equal(doc.mode, "labColorMode");
  const rgba = pattern(12, 10, 2);
  doc.addLayer({ name: "Background", at: { left: 0, top: 0, width: 12, height: 10 }, rgba, background: true });
  doc.selection.bounds = { left: 1, top: 2, right: 9, bottom: 8 };

  const source = await readSource("document");
  assert.equal(ps.lastGetPixels.colorSpace, "RGB", "RGB pixels asked of a Lab document");
  assert.equal(ps.lastGetPixels.colorProfile, SRGB);
  assert.equal(source.name, "Print");
  assert.equal(source.data.length, 8 * 6 * 4);
  assert.deepEqual([...source.data.subarray(0, 4)], [...rgba.subarray((2 * 12 + 1) * 4, (2 * 12 + 1) * 4 + 4)]);

  const result = fakeResult(8, 6);
  await insertLayers(source, result);
  assert.deepEqual(doc.history, ["Open", HISTORY_NAME]);
  assert.deepEqual(names(doc.layers), ["Poster layers", "Background"]);
  const top = doc.layers[0].layers[0];
  assert.equal(top.name, "Layer 3");
  assert.deepEqual(top.pixels.bounds, { left: 7, top: 6, right: 9, bottom: 8 });
  assert.deepEqual(layerRgba8(doc, top), result.layers[3].pixels);
  assert.equal(ps.liveImageData.size, 0);
});

test("the double: a gray document answers its own pixels in 1 or 2 components, RGB when asked", async () => {
  const { ps, doc } = setUp({ width: 2, height: 1, mode: constants.DocumentMode.GRAYSCALE });
  doc.addLayer({ name: "Background", at: { left: 0, top: 0, width: 2, height: 1 }, rgba: Uint8Array.from([255, 0, 0, 255, 0, 0, 255, 255]), background: true });
  const { core, imaging } = ps.module();
  const read = (options) => core.executeAsModal(async () => {
    const { imageData } = await imaging.getPixels(options);
    const out = { data: [...(await imageData.getData())], components: imageData.components, format: imageData.pixelFormat, space: imageData.colorSpace };
    imageData.dispose();
    return out;
  }, { commandName: "t" });
  assert.deepEqual(await read({}), { data: [54, 18], components: 1, format: "Grayscale", space: "Grayscale" });
  assert.deepEqual(await read({ colorSpace: "RGB" }), { data: [54, 54, 54, 18, 18, 18], components: 3, format: "RGB", space: "RGB" });
  await assert.rejects(read({ colorSpace: "Lab" }), /not modelled/);
  const part = doc.addLayer({ name: "Green", at: { left: 0, top: 0, width: 1, height: 1 }, rgba: Uint8Array.from([0, 255, 0, 100]) });
  assert.deepEqual(await read({ layerID: part.id }), { data: [182, 100], components: 2, format: "GrayscaleAlpha", space: "Grayscale" });
  assert.equal(ps.liveImageData.size, 0);
});

const REFUSED = [
  [constants.DocumentMode.CMYK, "CMYK", /Image > Mode > RGB Color/, 8],
  [constants.DocumentMode.INDEXEDCOLOR, "Indexed Color", /Image > Mode > RGB Color/, 8],
  [constants.DocumentMode.DUOTONE, "Duotone", /Image > Mode > RGB Color/, 16],
  [constants.DocumentMode.BITMAP, "Bitmap", /Image > Mode > Grayscale/, 1],
  [constants.DocumentMode.MULTICHANNEL, "Multichannel", /RGB or Grayscale/, 8],
];

test("CMYK, Indexed, Duotone, Bitmap and Multichannel documents are refused with what to do, before any read", async () => {
  for (const [mode, name, fix, depth] of REFUSED) {
    const { ps, doc } = setUp({ width: 4, height: 4, mode, depth });
    for (const which of ["document", "layer"]) {
      await assert.rejects(readSource(which), (e) => {
        assert.equal(e.code, "unsupported_image");
        assert.match(e.message, new RegExp(`does not work with ${name} documents: duplicate the document \\(Image > Duplicate\\)`));
        assert.match(e.message, fix);
        return true;
      }, `${mode} (${which})`);
    }
    assert.deepEqual(ps.calls, [], `${mode}: nothing read`);
    assert.deepEqual(doc.history, ["Open"]);
    // The Imaging API itself has no such modes (the double neither).
    await assert.rejects(ps.module().core.executeAsModal(() => ps.module().imaging.getPixels({}), { commandName: "t" }), /RGB, Grayscale and Lab/);
  }
});

test("a document converted to CMYK or Indexed while the server worked: refused, left as it was", async () => {
  for (const mode of [constants.DocumentMode.CMYK, constants.DocumentMode.INDEXEDCOLOR]) {
    const { ps, doc } = readyDocument();
    const source = await readSource("document");
    doc.mode = mode;
    await assert.rejects(insertLayers(source, fakeResult(12, 10)), (e) => e.code === "unsupported_image" && /Image > Mode > RGB Color/.test(e.message));
    await assertUntouched(ps, doc, ["Background"]);
    assert.deepEqual(ps.calls.filter((c) => c !== "imaging.getPixels" && c !== "app.activeDocument="), [], "nothing created");
  }
});

test("CMYK documents and empty areas are refused", async () => {
  const { doc } = setUp({ width: 4, height: 4, mode: "CMYKColorMode" });
  doc.addLayer({ name: "Background", at: { left: 0, top: 0, width: 4, height: 4 }, rgba: pattern(4, 4), background: true });
  await assert.rejects(readSource("document"), (e) => e.code === "unsupported_image" && /RGB/.test(e.message));

  const second = setUp({ width: 10, height: 10 });
  second.doc.addLayer({ name: "Dot", at: { left: 0, top: 0, width: 2, height: 2 }, rgba: pattern(2, 2) });
  second.doc.selection.bounds = { left: 5, top: 5, right: 9, bottom: 9 };
  await assert.rejects(readSource("document"), { code: "empty_source" });
  assert.equal(second.ps.liveImageData.size, 0);
});

test("inserting: one history step, a named group above the source, layers bottom to top at their offsets", async () => {
  const { ps, doc } = setUp({ width: 12, height: 10 });
  doc.addLayer({ name: "Background", at: { left: 0, top: 0, width: 12, height: 10 }, rgba: pattern(12, 10), background: true });
  const above = doc.addLayer({ name: "Logo", at: { left: 1, top: 1, width: 2, height: 2 }, rgba: pattern(2, 2, 9) });
  doc.activeLayers = [doc.layers[1]]; // the Background is active: new layers would land below Logo
  doc.selection.bounds = { left: 3, top: 2, right: 11, bottom: 9 };
  const source = await readSource("document");
  const result = fakeResult(source.width, source.height);

  const progress = [];
  const plan = await insertLayers(source, result, { onProgress: (f) => progress.push(f) });

  assert.deepEqual(doc.history, ["Open", HISTORY_NAME], "exactly one history entry");
  assert.deepEqual(names(doc.layers), ["Poster layers", "Logo", "Background"], "group on top of the source");
  assert.equal(doc.layers[1], above);
  const group = doc.layers[0];
  assert.deepEqual(names(group.layers), ["Layer 3", "Layer 2", "Layer 1", "Background"], "background at the bottom");
  for (const item of plan.layers) {
    const layer = group.layers.find((l) => l.name === item.name);
    if (item.empty) {
      assert.equal(layer.pixels, null, "a fully transparent result layer is an empty layer");
      continue;
    }
    const spec = result.layers.find((l) => l.name === item.name);
    assert.deepEqual(layer.pixels.bounds, {
      left: 3 + spec.x, top: 2 + spec.y, right: 3 + spec.x + spec.width, bottom: 2 + spec.y + spec.height,
    });
    assert.deepEqual(layerRgba8(doc, layer), spec.pixels, `${item.name}: exact bytes`);
  }
  assert.equal(ps.liveImageData.size, 0, "every image data disposed");
  assert.deepEqual(progress, [0, 0.25, 0.5, 0.75, 1]);
  assert.equal(ps.progress.length, 4);
  assert.match(ps.progress[3].commandName, /Adding layer 4 of 4/);
});

test("decompose layer: the group lands right above the selected layer, inside its parent", async () => {
  const { doc } = setUp({ width: 10, height: 10, title: "Scene.psd" });
  doc.addLayer({ name: "Background", at: { left: 0, top: 0, width: 10, height: 10 }, rgba: pattern(10, 10), background: true });
  const folder = doc.addGroup({ name: "Characters" });
  doc.addLayer({ name: "Hat", at: { left: 0, top: 0, width: 3, height: 3 }, rgba: pattern(3, 3, 2), parent: folder });
  const hero = doc.addLayer({ name: "Hero", at: { left: 4, top: 2, width: 5, height: 6 }, rgba: pattern(5, 6, 3), parent: folder });
  doc.addLayer({ name: "Sky", at: { left: 0, top: 0, width: 10, height: 3 }, rgba: pattern(10, 3, 4) });
  doc.activeLayers = [hero];

  const source = await readSource("layer");
  assert.equal(source.layerID, hero.id);
  assert.equal(source.name, "Hero");
  assert.deepEqual([source.origin.left, source.origin.top, source.width, source.height], [4, 2, 5, 6]);
  assert.deepEqual(source.data, pattern(5, 6, 3), "only the layer's own pixels");

  await insertLayers(source, { ...fakeResult(5, 6), name: "Hero" });
  assert.deepEqual(names(doc.layers), ["Sky", "Characters", "Background"]);
  assert.deepEqual(names(folder.layers), ["Hero layers", "Hero", "Hat"]);
  assert.deepEqual(doc.history, ["Open", HISTORY_NAME]);
  const l1 = folder.layers[0].layers.find((l) => l.name === "Layer 1");
  assert.deepEqual(l1.pixels.bounds, { left: 6, top: 3, right: 10, bottom: 6 });
});

test("decompose layer needs exactly one pixel layer", async () => {
  const { doc } = setUp({ width: 4, height: 4 });
  const group = doc.addGroup({ name: "G" });
  doc.activeLayers = [group];
  await assert.rejects(readSource("layer"), { code: "no_layer" });
  doc.activeLayers = [];
  await assert.rejects(readSource("layer"), { code: "no_layer" });
});

async function assertUntouched(ps, doc, before) {
  assert.deepEqual(names(doc.layers), before);
  assert.deepEqual(doc.history, ["Open"], "no history entry");
  assert.equal(doc.allLayers().filter((l) => /layers$|^Layer \d$/.test(l.name)).length, 0, "nothing half-made");
  assert.equal(ps.liveImageData.size, 0);
}

function readyDocument() {
  const { ps, doc } = setUp({ width: 12, height: 10 });
  doc.addLayer({ name: "Background", at: { left: 0, top: 0, width: 12, height: 10 }, rgba: pattern(12, 10), background: true });
  return { ps, doc };
}

test("cancel on Photoshop's progress bar midway leaves the document as it was", async () => {
  const { ps, doc } = readyDocument();
  const source = await readSource("document");
  ps.userCancelsAfter(5); // group, move, layer, move, put… then the user cancels
  // Photoshop's next call throws its own error; the panel reports it as the cancel it is.
  await assert.rejects(insertLayers(source, fakeResult(12, 10)), { code: "cancelled" });
  await assertUntouched(ps, doc, ["Background"]);
});

test("cancel on Photoshop's progress bar while the pixels are read is a cancel, not an error", async () => {
  const { ps } = readyDocument();
  ps.userCancelsReading();
  await assert.rejects(readSource("document"), { code: "cancelled" });
  assert.equal(ps.liveImageData.size, 0);
});

test("the user switched to another document while the server worked: the layers go to the source's", async () => {
  const { ps, doc } = readyDocument();
  const source = await readSource("document");
  const other = ps.newDocument({ width: 5, height: 5, title: "Other.psd" }); // now the active one
  other.addLayer({ name: "Sketch", at: { left: 0, top: 0, width: 5, height: 5 }, rgba: pattern(5, 5) });

  await insertLayers(source, fakeResult(12, 10));

  assert.deepEqual(names(doc.layers), ["Poster layers", "Background"]);
  assert.equal(doc.layers[0].layers.length, 4);
  assert.deepEqual(doc.history, ["Open", HISTORY_NAME]);
  assert.deepEqual(names(other.layers), ["Sketch"], "the other document is untouched");
  assert.deepEqual(other.history, ["Open"]);
  assert.equal(ps.activeDocument, other, "the user's document has the focus back");
});

test("Photoshop answering null for a new layer is a clear error, and nothing is left behind", async () => {
  const { ps, doc } = readyDocument();
  const source = await readSource("document");
  const module = ps.module();
  const original = Object.getPrototypeOf(doc).createPixelLayer;
  let made = 0;
  doc.createPixelLayer = async function (options) {
    return ++made === 2 ? null : original.call(this, options);
  };
  host.setHost({ photoshop: module, uxp: {} });
  await assert.rejects(insertLayers(source, fakeResult(12, 10)), { code: "internal", message: /could not create a layer/ });
  await assertUntouched(ps, doc, ["Background"]);
});

test("cancel from the panel (isCancelled) leaves the document as it was", async () => {
  const { ps, doc } = readyDocument();
  const source = await readSource("document");
  let layersSeen = 0;
  await assert.rejects(
    insertLayers(source, fakeResult(12, 10), { isCancelled: () => layersSeen >= 2, onProgress: () => { layersSeen++; } }),
    { code: "cancelled" },
  );
  await assertUntouched(ps, doc, ["Background"]);
});

test("a failure midway (bad pixels) rolls everything back", async () => {
  const { ps, doc } = readyDocument();
  const source = await readSource("document");
  const result = fakeResult(12, 10);
  result.layers[3].pixels = new Uint8Array(result.layers[3].pixels.length); // still valid size
  result.layers[3].width = 1; // …but now it lies about its width
  result.layers[3].height = 16;
  await assert.rejects(insertLayers(source, result), { code: "invalid_result" });
  await assertUntouched(ps, doc, ["Background"]);

  const ps2 = readyDocument();
  const source2 = await readSource("document");
  const original = ps2.ps.module().imaging.putPixels;
  let calls = 0;
  const broken = ps2.ps.module();
  broken.imaging.putPixels = async (o) => { if (++calls === 2) throw new Error("disk full"); return original(o); };
  host.setHost({ photoshop: broken, uxp: {} });
  await assert.rejects(insertLayers(source2, fakeResult(12, 10)), /disk full/);
  await assertUntouched(ps2.ps, ps2.doc, ["Background"]);
});

/** A source document at 300 ppi next to another open document, and the source read with a selection. */
async function closedSource({ mode = constants.DocumentMode.RGB, depth = 8, which = "document", profile = null } = {}) {
  const { ps, doc } = setUp({ width: 12, height: 10, depth, mode, resolution: 300, title: "Poster.psd", profile });
  doc.addLayer({ name: "Background", at: { left: 0, top: 0, width: 12, height: 10 }, rgba: pattern(12, 10), background: true });
  const art = doc.addLayer({ name: "Art", at: { left: 2, top: 1, width: 9, height: 8 }, rgba: pattern(9, 8, 4) });
  doc.activeLayers = [art];
  doc.selection.bounds = { left: 3, top: 2, right: 11, bottom: 9 };
  const source = await readSource(which);
  const other = ps.newDocument({ width: 5, height: 5, title: "Other.psd" });
  other.addLayer({ name: "Sketch", at: { left: 0, top: 0, width: 5, height: 5 }, rgba: pattern(5, 5) });
  const before = { layers: names(other.layers), history: [...other.history], pixels: other.layers[0].pixels.data.slice() };
  doc.userCloses();
  ps.calls = [];
  return { ps, source, other, before };
}

function assertOtherUntouched(other, before) {
  assert.deepEqual(names(other.layers), before.layers, "the other document's layers");
  assert.deepEqual(other.history, before.history, "the other document's history");
  assert.deepEqual(other.layers[0].pixels.data, before.pixels, "the other document's pixels");
}

test("the document closed while the server worked: the layers open in a new document like it", async () => {
  const { ps, source, other, before } = await closedSource({ profile: "Adobe RGB (1998)" });
  assert.deepEqual(source.document, {
    name: "Poster", width: 12, height: 10, resolution: 300, mode: "RGBColorMode", depth: 8, profile: "Adobe RGB (1998)",
  });
  const result = fakeResult(source.width, source.height);

  const plan = await insertLayers(source, result);

  assert.equal(ps.documents.length, 2, "one new document");
  const made = ps.documents[1];
  assert.equal(plan.newDocument, "Poster (layers)");
  assert.equal(made.title, "Poster (layers)");
  assert.deepEqual([made.width, made.height, made.resolution], [12, 10, 300]);
  assert.deepEqual([made.mode, made.bitsPerChannel], ["RGBColorMode", "bitDepth8"]);
  assert.equal(made.colorProfileName, "Adobe RGB (1998)", "the source's profile");
  assert.equal(ps.activeDocument, made, "the new document is in front");
  assert.deepEqual(names(made.layers), ["Poster layers"], "only the group: the document's own empty layer is gone");
  const group = made.layers[0];
  assert.deepEqual(names(group.layers), ["Layer 3", "Layer 2", "Layer 1", "Background"]);
  for (const spec of result.layers) {
    const layer = group.layers.find((l) => l.name === spec.name);
    if (!(spec.width > 0)) {
      assert.equal(layer.pixels, null, `${spec.name}: empty`);
      continue;
    }
    assert.deepEqual(layer.pixels.bounds, {
      left: 3 + spec.x, top: 2 + spec.y, right: 3 + spec.x + spec.width, bottom: 2 + spec.y + spec.height,
    }, `${spec.name}: where it was sent from`);
    assert.deepEqual(layerRgba8(made, layer), spec.pixels, `${spec.name}: exact bytes`);
  }
  assert.deepEqual(made.history, ["New", HISTORY_NAME], "one history step");
  assertOtherUntouched(other, before);
  assert.equal(ps.liveImageData.size, 0);
  assert.deepEqual(ps.lastCreateOptions, {
    name: "Poster (layers)", width: 12, height: 10, resolution: 300, mode: "RGBColorMode", depth: 8, fill: "transparent",
    profile: "Adobe RGB (1998)",
  });
});

test("a closed Grayscale, Lab or 16-bit source: the new document keeps its mode and depth; Decompose layer too", async () => {
  const cases = [
    [constants.DocumentMode.GRAYSCALE, 8, "document"],
    [constants.DocumentMode.LAB, 8, "layer"],
    [constants.DocumentMode.RGB, 16, "layer"],
    [constants.DocumentMode.GRAYSCALE, 16, "document"],
  ];
  for (const [mode, depth, which] of cases) {
    const label = `${mode} ${depth}-bit (${which})`;
    const { ps, source, other, before } = await closedSource({ mode, depth, which });
    const result = { ...fakeResult(source.width, source.height), name: which === "layer" ? "Art" : "Poster" };

    const plan = await insertLayers(source, result);

    const made = ps.documents[1];
    assert.equal(plan.newDocument, "Poster (layers)", label);
    assert.deepEqual([made.mode, made.depth, made.resolution], [mode, depth, 300], label);
    // Lab: Document.colorProfileName answers "None", which is no profile name to make a document with.
    assert.equal(source.document.profile, mode === constants.DocumentMode.LAB ? null : made.colorProfileName, label);
    assert.equal(made.colorProfileName, mode === constants.DocumentMode.LAB ? "None" : source.document.profile, label);
    assert.ok(!("profile" in ps.lastCreateOptions) || mode !== constants.DocumentMode.LAB, label);
    assert.deepEqual(names(made.layers), [plan.groupName], label);
    const top = made.layers[0].layers[0];
    assert.equal(top.name, "Layer 3", label);
    const spec = result.layers[3];
    const left = source.origin.left + spec.x;
    const topY = source.origin.top + spec.y;
    assert.deepEqual(top.pixels.bounds, { left, top: topY, right: left + 2, bottom: topY + 2 }, label);
    const expected = mode === constants.DocumentMode.GRAYSCALE ? grayOf(spec.pixels) : spec.pixels;
    assert.deepEqual(layerRgba8(made, top), expected, label);
    assert.deepEqual(made.history, ["New", HISTORY_NAME], label);
    assertOtherUntouched(other, before);
    assert.equal(ps.liveImageData.size, 0, label);
  }
});

test("a closed untagged source (colorProfileName \"None\"): the new document gets the working space, not \"None\"", async () => {
  const { ps, source, other, before } = await closedSource({ profile: "None" });
  assert.equal(source.document.profile, null, "Document.colorProfileName's \"None\" is no profile");

  const plan = await insertLayers(source, fakeResult(source.width, source.height));

  assert.equal(plan.newDocument, "Poster (layers)");
  assert.ok(!("profile" in ps.lastCreateOptions), "no profile option");
  const made = ps.documents[1];
  assert.equal(made.colorProfileName, "sRGB IEC61966-2.1", "the RGB working space");
  assert.deepEqual(names(made.layers), [plan.groupName]);
  assertOtherUntouched(other, before);

  // The double refuses "None" as a profile name, as Photoshop has no profile of that name.
  const { app, core } = ps.module();
  await assert.rejects(core.executeAsModal(() => app.documents.add({ profile: "None" }), { commandName: "t" }), /not a profile name/);
});

test("a closed source and the user's cancel as the new document is finished: reported as a cancel, no document left", async () => {
  const { ps, source, other, before } = await closedSource();
  // The cancel lands after the last layer, so unregisterAutoCloseDocument is the call that fails.
  const module = ps.module();
  const original = module.core.executeAsModal;
  module.core.executeAsModal = (target, options) => original(async (context, descriptor) => {
    const hostControl = {
      ...context.hostControl,
      async unregisterAutoCloseDocument() {
        ps.modal.cancelled = true;
        throw new Error("Event: user cancelled the modal operation");
      },
    };
    const wrapped = new Proxy(context, { get: (t, key) => (key === "hostControl" ? hostControl : t[key]) });
    return target(wrapped, descriptor);
  }, options);
  host.setHost({ photoshop: module, uxp: {} });

  await assert.rejects(insertLayers(source, fakeResult(source.width, source.height)), { code: "cancelled" });
  assert.ok(!ps.calls.includes("Document.closeWithoutSaving"), "no change is allowed after the user's cancel");
  assert.deepEqual(ps.documents.map((d) => d.title), ["Other.psd"], "closed by Photoshop as the modal scope ended");
  assertOtherUntouched(other, before);
  assert.equal(ps.liveImageData.size, 0);
});

test("a closed source and a failure midway: no new document is left open", async () => {
  // Bad layer bytes: refused before anything is made.
  const first = await closedSource();
  const bad = fakeResult(first.source.width, first.source.height);
  bad.layers[1].pixels = new Uint8Array(7);
  await assert.rejects(insertLayers(first.source, bad), { code: "invalid_result" });
  assert.deepEqual(first.ps.documents.map((d) => d.title), ["Other.psd"]);
  assert.ok(!first.ps.calls.includes("Documents.add"));

  // Photoshop fails on the second layer's pixels: the half-made document is closed without saving.
  const { ps, source, other, before } = await closedSource();
  const broken = ps.module();
  const original = broken.imaging.putPixels;
  let calls = 0;
  broken.imaging.putPixels = async (o) => { if (++calls === 2) throw new Error("disk full"); return original(o); };
  host.setHost({ photoshop: broken, uxp: {} });
  await assert.rejects(insertLayers(source, fakeResult(source.width, source.height)), /disk full/);
  assert.ok(ps.calls.includes("Documents.add"));
  assert.ok(ps.calls.includes("Document.closeWithoutSaving"), "closed by the panel");
  assert.deepEqual(ps.documents.map((d) => d.title), ["Other.psd"], "no new document open");
  assert.equal(ps.activeDocument, other);
  assertOtherUntouched(other, before);
  assert.equal(ps.liveImageData.size, 0);
});

test("a closed source and a cancel midway (Photoshop's progress bar, or the panel): no new document is left open", async () => {
  const { ps, source, other, before } = await closedSource();
  ps.userCancelsAfter(4); // new document, group, layer, move… then the user cancels
  await assert.rejects(insertLayers(source, fakeResult(source.width, source.height)), { code: "cancelled" });
  assert.ok(!ps.calls.includes("Document.closeWithoutSaving"), "no change is allowed after the user's cancel");
  assert.deepEqual(ps.documents.map((d) => d.title), ["Other.psd"], "closed by Photoshop as the modal scope ended");
  assertOtherUntouched(other, before);

  const second = await closedSource();
  let seen = 0;
  await assert.rejects(
    insertLayers(second.source, fakeResult(second.source.width, second.source.height), { isCancelled: () => seen >= 2, onProgress: () => { seen++; } }),
    { code: "cancelled" },
  );
  assert.ok(second.ps.calls.includes("Document.closeWithoutSaving"));
  assert.deepEqual(second.ps.documents.map((d) => d.title), ["Other.psd"]);
  assertOtherUntouched(second.other, second.before);
  assert.equal(second.ps.liveImageData.size, 0);
});

test("the double: Documents.add follows DocumentCreateOptions and its defaults, needs the modal scope", async () => {
  const { ps } = setUp({ width: 4, height: 4 });
  const { app, core } = ps.module();
  const modal = (fn) => core.executeAsModal(fn, { commandName: "t" });
  await assert.rejects(app.documents.add({ width: 10, height: 10 }), /executeAsModal/);

  const plain = await modal(() => app.documents.add());
  assert.deepEqual([plain.width, plain.height, plain.resolution, plain.mode, plain.depth], [2100, 1500, 300, "RGBColorMode", 8]);
  assert.deepEqual(names(plain.layers), ["Background"], "white: a Background layer");
  assert.ok(plain.layers[0].isBackgroundLayer);
  assert.equal(ps.activeDocument, plain);

  const clear = await modal(() => app.documents.add({ width: 6, height: 3, resolution: 150, mode: "labColorMode", depth: 16, fill: "transparent", name: "X" }));
  assert.deepEqual([clear.title, clear.width, clear.height, clear.resolution, clear.mode, clear.bitsPerChannel], ["X", 6, 3, 150, "labColorMode", "bitDepth16"]);
  assert.equal(clear.layers.length, 1, "transparent: one empty ordinary layer");
  assert.equal(clear.layers[0].isBackgroundLayer, false);
  assert.equal(clear.layers[0].pixels, null);

  await assert.rejects(modal(() => app.documents.add({ width: 6, height: 3, bitsPerChannel: 16 })), /not a DocumentCreateOptions property/);
  await assert.rejects(modal(() => app.documents.add({ mode: "RGB" })), /not a NewDocumentMode/);
  await assert.rejects(modal(() => app.documents.add({ fill: "none" })), /not a DocumentFill/);
  await assert.rejects(modal(() => app.documents.add({ preset: "Web Large" })), /not modelled/);

  // A document keeps a layer; deleting and closing need the modal scope too.
  await assert.rejects(modal(() => clear.layers[0].delete()), /only layer/);
  assert.throws(() => clear.layers[0].delete(), /executeAsModal/);
  assert.throws(() => clear.closeWithoutSaving(), /executeAsModal/);
  await modal(() => clear.closeWithoutSaving());
  assert.ok(!ps.documents.includes(clear));
});

test("the double: a document registered for automatic closing is closed without saving when the modal scope ends", async () => {
  const { ps } = setUp({ width: 4, height: 4 });
  const { app, core } = ps.module();
  let kept = null;
  await core.executeAsModal(async (context) => {
    const gone = await app.documents.add({ name: "gone" });
    kept = await app.documents.add({ name: "kept" });
    await context.hostControl.registerAutoCloseDocument(gone.id);
    await context.hostControl.registerAutoCloseDocument(kept.id);
    await context.hostControl.unregisterAutoCloseDocument(kept.id);
    await assert.rejects(context.hostControl.unregisterAutoCloseDocument(kept.id), /not registered/);
  }, { commandName: "t" });
  assert.deepEqual(ps.documents.map((d) => d.title), ["Untitled-1.psd", "kept"]);
  assert.equal(kept.layers.length, 1);
});

test("the double is strict: changes outside executeAsModal fail", async () => {
  const { ps, doc } = readyDocument();
  await assert.rejects(doc.createPixelLayer({ name: "x" }), /executeAsModal/);
  await assert.rejects(ps.module().imaging.getPixels({}), /executeAsModal/);
});
