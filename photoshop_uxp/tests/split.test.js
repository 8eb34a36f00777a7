// The result hierarchy of split_elements (nested groups) and Split layer (src/layers.js) against the
// Photoshop double: groups and their elements at their places in one history step, the layer replaced
// by a group of its elements, nothing to split, cancel, and a split finishing while a decomposition's
// layers are being inserted.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const host = require("../src/host.js");
const { insertLayers, readSource, splitLayer, HISTORY_NAME, SPLIT_HISTORY_NAME } = require("../src/layers.js");
const { Photoshop, pattern } = require("./support/photoshop-double.js");

const names = (list) => list.map((l) => l.name);

function solid(w, h, rgba) {
  const out = new Uint8Array(w * h * 4);
  for (let i = 0; i < w * h; i++) out.set(rgba, i * 4);
  return out;
}

function setUp() {
  const ps = new Photoshop();
  const doc = ps.newDocument({ width: 40, height: 30, title: "Poster.psd" });
  doc.addLayer({ name: "Background", at: { left: 0, top: 0, width: 40, height: 30 }, rgba: pattern(40, 30, 3), background: true });
  host.setHost({ photoshop: ps.module(), uxp: {} });
  return { ps, doc };
}

/** A decomposition with split_elements: a background, "Logo" split into two elements (a group), "Sky" whole. */
function hierarchyResult() {
  const entry = (index, name, x, y, w, h, parent, rgba) => ({
    index, name, x, y, width: w, height: h, bytes: w * h * 4, pixels: solid(w, h, rgba), group: false, parent, text: [],
  });
  return {
    name: "Poster",
    canvas: { width: 40, height: 30 },
    layers: [
      entry(0, "Background", 0, 0, 40, 30, null, [240, 240, 240, 255]),
      { index: 1, name: "Logo", group: true, children: [2, 3], parent: null, x: 2, y: 3, width: 20, height: 6, bytes: 0, text: [] },
      entry(2, "Logo 1", 2, 3, 4, 4, 1, [200, 0, 0, 255]),
      entry(3, "Logo 2", 16, 5, 6, 4, 1, [0, 0, 200, 255]),
      entry(4, "Sky", 0, 0, 40, 2, null, [100, 150, 250, 255]),
    ],
  };
}

test("a result with groups: nested layer groups, each element at its place, in one history step", async () => {
  const { ps, doc } = setUp();
  doc.selection.bounds = { left: 0, top: 0, right: 40, bottom: 30 };
  const source = await readSource("document");
  const progress = [];
  const plan = await insertLayers(source, hierarchyResult(), { onProgress: (f, node) => progress.push(node && node.name) });

  assert.deepEqual(doc.history, ["Open", HISTORY_NAME]);
  const top = doc.layers[0];
  assert.deepEqual(names(top.layers), ["Sky", "Logo", "Background"]);
  const logo = top.layers[1];
  assert.equal(logo.kind, "group");
  assert.deepEqual(names(logo.layers), ["Logo 2", "Logo 1"], "bottom to top inside the group");
  assert.deepEqual(logo.layers[0].pixels.bounds, { left: 16, top: 5, right: 22, bottom: 9 });
  assert.deepEqual(logo.layers[1].pixel(2, 3), [200, 0, 0, 255]);
  assert.equal(plan.steps, 5, "four pixel layers and one group");
  assert.equal(plan.layers.length, 4, "the pixel layers");
  assert.deepEqual(progress, ["Background", "Logo", "Logo 1", "Logo 2", "Sky", null]);
  assert.equal(ps.liveImageData.size, 0);
});

test("a result whose hierarchy does not hold together is refused before any change", async () => {
  const { doc } = setUp();
  const source = await readSource("document");
  const bad = hierarchyResult();
  bad.layers[2].parent = 4; // "Sky" is no group
  await assert.rejects(insertLayers(source, bad), { code: "invalid_result" });
  const later = hierarchyResult();
  later.layers[2].parent = 3; // a layer is no group, and comes after
  await assert.rejects(insertLayers(source, later), { code: "invalid_result" });
  assert.deepEqual([doc.history, names(doc.layers)], [["Open"], ["Background"]]);
});

test("cancel while the groups are made leaves the document as it was", async () => {
  for (const after of [2, 5, 9]) {
    const { ps, doc } = setUp();
    const source = await readSource("document");
    ps.userCancelsAfter(after);
    await assert.rejects(insertLayers(source, hierarchyResult()), { code: "cancelled" });
    assert.deepEqual([doc.history, names(doc.layers)], [["Open"], ["Background"]], `after ${after} changes`);
  }
});

/** A document with a folder holding "Badge": two squares 6 px apart, at 60 % opacity, multiply. */
function badgeDocument() {
  const { ps, doc } = setUp();
  const folder = doc.addGroup({ name: "Art" });
  const rgba = new Uint8Array(14 * 4 * 4);
  for (let y = 0; y < 4; y++) for (const x0 of [0, 10]) for (let x = x0; x < x0 + 4; x++) rgba.set([250, 200, 20, 255], (y * 14 + x) * 4);
  const badge = doc.addLayer({ name: "Badge", at: { left: 10, top: 12, width: 14, height: 4 }, rgba, parent: folder });
  doc.addLayer({ name: "Note", at: { left: 0, top: 0, width: 2, height: 2 }, rgba: pattern(2, 2, 1), parent: folder });
  badge.opacity = 60;
  badge.blendMode = "multiply";
  doc.activeLayers = [badge];
  doc.selection.bounds = { left: 0, top: 0, right: 5, bottom: 5 }; // Split layer takes the whole layer anyway
  return { ps, doc, folder, badge, rgba };
}

/** The split task's answer for Badge: its two elements, in the sent image's pixels. */
function splitResult(name = "Badge") {
  const square = solid(4, 4, [250, 200, 20, 255]);
  const element = (index, x) => ({ index, name: `${name} ${index + 1}`, x, y: 0, width: 4, height: 4, bytes: 64, pixels: square.slice(),
    group: false, parent: null, text: [] });
  return { name, canvas: { width: 14, height: 4 }, layers: [element(0, 0), element(1, 10)], seed: null, caption: "", restored: false };
}

test("Split layer: the layer becomes a group of its elements where it was, in one history step", async () => {
  const { ps, doc, folder, badge } = badgeDocument();
  const before = doc.composite();
  const source = await readSource("split");
  assert.deepEqual([source.origin, source.width, source.height, source.name], [{ left: 10, top: 12 }, 14, 4, "Badge"], "the whole layer");
  assert.equal(source.layerID, badge.id);

  const plan = await splitLayer(source, splitResult());

  assert.equal(plan.elements, 2);
  assert.deepEqual(doc.history, ["Open", SPLIT_HISTORY_NAME]);
  assert.deepEqual(names(folder.layers), ["Note", "Badge"], "the group takes the layer's place");
  const group = folder.layers[1];
  assert.equal(group.kind, "group");
  assert.deepEqual([group.opacity, group.blendMode], [60, "multiply"], "the layer's opacity and blend mode");
  assert.deepEqual(names(group.layers), ["Badge 2", "Badge 1"]);
  assert.deepEqual(group.layers.map((l) => l.pixels.bounds), [
    { left: 20, top: 12, right: 24, bottom: 16 }, { left: 10, top: 12, right: 14, bottom: 16 },
  ]);
  assert.ok(!doc.allLayers().includes(badge), "the layer itself is gone");
  assert.deepEqual(doc.composite(), before, "the picture is the same");
  assert.equal(ps.liveImageData.size, 0);
});

test("Split layer: one element changes nothing; cancel leaves the layer; a deleted layer is said", async () => {
  const { doc, badge } = badgeDocument();
  const source = await readSource("split");
  const one = splitResult();
  one.layers = one.layers.slice(0, 1);
  const plan = await splitLayer(source, one);
  assert.equal(plan.nothing, true);
  assert.deepEqual(doc.history, ["Open"]);

  for (const after of [1, 3, 5]) {
    const fresh = badgeDocument();
    const src = await readSource("split");
    fresh.ps.userCancelsAfter(after);
    await assert.rejects(splitLayer(src, splitResult()), { code: "cancelled" });
    assert.deepEqual(fresh.doc.history, ["Open"]);
    assert.deepEqual(names(fresh.folder.layers), ["Note", "Badge"]);
    assert.equal(fresh.folder.layers[1], fresh.badge);
  }

  const gone = badgeDocument();
  const src = await readSource("split");
  gone.folder.layers.splice(gone.folder.layers.indexOf(gone.badge), 1); // the user deleted it meanwhile
  await assert.rejects(splitLayer(src, splitResult()), { code: "no_layer" });
  assert.deepEqual(gone.doc.history, ["Open"]);
  assert.ok(badge);
});

test("Split layer refuses the Background layer, groups and several layers, before reading", async () => {
  const { ps, doc, folder, badge } = badgeDocument();
  doc.activeLayers = [doc.layers[doc.layers.length - 1]];
  await assert.rejects(readSource("split"), (e) => e.code === "no_layer" && /Background/.test(e.message));
  doc.activeLayers = [folder];
  await assert.rejects(readSource("split"), (e) => e.code === "no_layer" && /group/.test(e.message));
  doc.activeLayers = [badge, folder];
  await assert.rejects(readSource("split"), { code: "no_layer" });
  assert.ok(!ps.calls.includes("imaging.getPixels"));
});

test("a split finishing while a decomposition is being inserted waits for its turn", async () => {
  const { ps, doc, folder } = badgeDocument();
  const splitSource = await readSource("split");
  doc.activeLayers = [doc.layers[0]];
  doc.selection.bounds = null;
  const source = await readSource("document");
  // Both start at once; Photoshop (before 25.10) refuses a second modal scope outright.
  const [plan] = await Promise.all([insertLayers(source, hierarchyResult()), splitLayer(splitSource, splitResult())]);
  assert.equal(plan.layers.length, 4);
  assert.deepEqual(doc.history, ["Open", HISTORY_NAME, SPLIT_HISTORY_NAME]);
  assert.deepEqual(names(folder.layers), ["Note", "Badge"]);
  assert.equal(folder.layers[1].kind, "group");
  const { core } = ps.module();
  await assert.rejects(Promise.all([
    core.executeAsModal(async () => new Promise((r) => setTimeout(r, 5)), { commandName: "a" }),
    core.executeAsModal(async () => null, { commandName: "b" }),
  ]), /modal state/, "the double refuses two modal scopes at once, as Photoshop does");
});
