// Text blocks as text layers (src/plan.js, src/fonts.js, src/layers.js) against the Photoshop double:
// the createTextLayer calls, the hidden pixels below each, one history step, cancel, an older
// Photoshop; and the blocks that the real text engine (`python -m backend text`) reads in a picture.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const host = require("../src/host.js");
const { insertLayers, readSource, HISTORY_NAME } = require("../src/layers.js");
const { chooseFont, fontIndex } = require("../src/fonts.js");
const { textLine } = require("../src/ui.js");
const { Photoshop, DEFAULT_FONTS, pattern } = require("./support/photoshop-double.js");

const REPO = path.resolve(__dirname, "..", "..");
const PYTHON = [path.join(REPO, ".venv", "bin", "python")].find((p) => fs.existsSync(p)); // the test set-up's venv

function setUp({ version, fonts, resolution = 72 } = {}) {
  const ps = new Photoshop({ version, fonts });
  const doc = ps.newDocument({ width: 40, height: 30, title: "Poster.psd", resolution });
  doc.addLayer({ name: "Background", at: { left: 0, top: 0, width: 40, height: 30 }, rgba: pattern(40, 30, 3), background: true });
  host.setHost({ photoshop: ps.module(), uxp: {} });
  return { ps, doc };
}

const solid = (w, h, rgba) => {
  const out = new Uint8Array(w * h * 4);
  for (let i = 0; i < w * h; i++) out.set(rgba, i * 4);
  return out;
};

/**
 * A result of a background and one layer 30×12 at (5, 10) holding a red two-line centred text block in
 * its left part (x 5..20 of the layer) and a green shape right of it (x 24..30).
 */
function textResult() {
  const w = 30;
  const h = 12;
  const px = new Uint8Array(w * h * 4);
  for (let y = 1; y < 11; y++) for (let x = 1; x < 19; x++) px.set([200, 30, 40, 255], (y * w + x) * 4);
  for (let y = 2; y < 8; y++) for (let x = 24; x < 30; x++) px.set([30, 160, 90, 255], (y * w + x) * 4);
  const block = {
    text: "Summer\nSale", box: { x: 6, y: 11, width: 18, height: 10 },
    lines: [
      { text: "Summer", box: { x: 6, y: 11, width: 18, height: 4 }, baseline: 15 },
      { text: "Sale", box: { x: 9, y: 17, width: 12, height: 4 }, baseline: 21 },
    ],
    size: 6.5, color: "#c81e28", align: "center",
    font: { family: "Liberation Sans", class: "sans-serif", bold: true, italic: false }, editable: true,
  };
  const curved = { ...block, text: "Wavy", lines: [{ ...block.lines[0], text: "Wavy" }], editable: false };
  return {
    name: "Poster",
    canvas: { width: 40, height: 30 },
    layers: [
      { index: 0, name: "Background", x: 0, y: 0, width: 40, height: 30, bytes: 4800, pixels: solid(40, 30, [250, 250, 250, 255]), text: [] },
      { index: 1, name: "Headline", x: 5, y: 10, width: w, height: h, bytes: px.length, pixels: px, text: [block, curved] },
    ],
  };
}

/** The document's visible composite as rgba8 (pixel layers only). */
function composite(doc) {
  return Uint8Array.from(doc.composite(), (v, i) => Math.round(v * (i % 4 === 3 ? 255 : 255)));
}

test("fonts: the family itself, a metric-compatible one, one of its class; faux bold for a missing face; CJK", () => {
  const index = fontIndex(new Photoshop().module().app.fonts);
  assert.deepEqual(chooseFont(index, { family: "DejaVu Sans", class: "sans-serif", bold: true, italic: false }),
    { postScriptName: "DejaVuSans-Bold", family: "DejaVu Sans", style: "Bold", fauxBold: false, fauxItalic: false, substituted: false });
  assert.equal(chooseFont(index, { family: "Liberation Sans", class: "sans-serif", bold: true }).postScriptName, "Arial-BoldMT");
  assert.equal(chooseFont(index, { family: "Liberation Serif", class: "serif", bold: false }).postScriptName, "TimesNewRomanPSMT");
  const faux = chooseFont(index, { family: "Courier New", class: "monospace", bold: true, italic: false });
  assert.deepEqual([faux.postScriptName, faux.fauxBold, faux.substituted], ["CourierNewPSMT", true, false]);
  assert.equal(chooseFont(index, { family: "Nowhere Grotesk", class: "display", bold: false }), null, "no display font installed");
  assert.equal(chooseFont(index, { family: "Nowhere Serif", class: "serif", bold: false }).postScriptName, "TimesNewRomanPSMT");
  const cjk = fontIndex([...DEFAULT_FONTS, ["Noto Sans CJK SC", "Regular", "NotoSansCJKsc-Regular"]].map(([family, style, postScriptName]) => ({ family, style, postScriptName })));
  assert.equal(chooseFont(cjk, { family: "Noto Sans", class: "sans-serif" }, "夏季促销").postScriptName, "NotoSansCJKsc-Regular");
});

test("an editable block becomes a text layer over its hidden pixels, in one history step", async () => {
  const { ps, doc } = setUp();
  const source = await readSource("document");
  const plan = await insertLayers(source, textResult(), { textLayers: true });

  assert.deepEqual(doc.history, ["Open", HISTORY_NAME], "one history step");
  const group = doc.layers[0];
  assert.deepEqual(group.layers.map((l) => [l.name, l.kind, l.visible]), [
    ["Summer Sale", "text", true],
    ["Summer Sale", "pixel", false],
    ["Headline", "pixel", true],
    ["Background", "pixel", true],
  ], "text layer directly above its hidden pixels; the rest of the layer stays visible below");
  assert.equal(ps.textLayers.length, 1, "the non-editable block stays pixels");
  const call = ps.textLayers[0];
  assert.deepEqual({ ...call, documentID: undefined }, {
    name: "Summer Sale", contents: "Summer\rSale", fontName: "Arial-BoldMT", fontSize: 6.5,
    position: { x: 15, y: 15 }, textColor: "C81E28", documentID: undefined,
  }, "lines joined by \\r; centred: the first baseline's middle; Liberation Sans set in Arial");
  const item = group.layers[0].textItem;
  assert.equal(item.paragraphStyle.justification, "center");
  assert.equal(item.characterStyle.useAutoLeading, false);
  assert.equal(item.characterStyle.leading, 6, "the lines' baseline gap");
  assert.equal(item.characterStyle.fauxBold, false, "Arial has a bold face");

  // The hidden pixels are the text's; the visible rest is the shape; together they are the layer.
  const [, hidden, rest] = group.layers;
  assert.deepEqual(hidden.pixels.bounds, { left: 5, top: 10, right: 26, bottom: 22 }, "the block's box and 2 px, within the layer");
  assert.deepEqual(hidden.pixel(10, 12).slice(0, 3), [200, 30, 40]);
  assert.deepEqual(rest.pixel(10, 12), [0, 0, 0, 0], "the text's pixels left the layer");
  assert.deepEqual(rest.pixel(30, 13), [30, 160, 90, 255], "the shape stayed");
  assert.equal(textLine(plan.text), "1 editable text layer; fonts not installed: Liberation Sans set in Arial.");
  assert.equal(ps.liveImageData.size, 0);
});

test("hiding the text layer and showing its pixels gives back the exact picture", async () => {
  const { doc } = setUp();
  const source = await readSource("document");
  const plain = setUp();
  const plainSource = await readSource("document");
  await insertLayers(plainSource, textResult(), { textLayers: false });
  host.setHost({ photoshop: doc.app.module(), uxp: {} });
  await insertLayers(source, textResult(), { textLayers: true });
  doc.allLayers().forEach((l) => { l.shown = true; });
  assert.deepEqual(composite(doc), composite(plain.doc));
  assert.deepEqual(plain.ps.textLayers, [], "the option off: no text layer");
  assert.deepEqual(plain.doc.layers[0].layers.map((l) => l.name), ["Headline", "Background"]);
});

test("cancel while the text layers are made leaves the document as it was", async () => {
  for (const when of [3, 6, 8]) {
    const { ps, doc } = setUp();
    const source = await readSource("document");
    ps.userCancelsAfter(when);
    await assert.rejects(insertLayers(source, textResult(), { textLayers: true }), { code: "cancelled" }, `after ${when}`);
    assert.deepEqual(doc.history, ["Open"]);
    assert.deepEqual(doc.layers.map((l) => l.name), ["Background"]);
    assert.equal(ps.liveImageData.size, 0);
  }
  const { ps, doc } = setUp();
  const source = await readSource("document");
  let seen = 0;
  await assert.rejects(insertLayers(source, textResult(), {
    textLayers: true, onProgress: (f, node) => { if (node) seen++; }, isCancelled: () => seen >= 4,
  }), { code: "cancelled" });
  assert.deepEqual([doc.history, doc.layers.map((l) => l.name)], [["Open"], ["Background"]]);
  assert.equal(ps.textLayers.length, 1, "the text layer was made, then rolled back");
});

test("a Photoshop without createTextLayer (before 24.2) keeps pixel layers and says so", async () => {
  const { ps, doc } = setUp({ version: "24.1.0" });
  assert.equal(doc.createTextLayer, undefined);
  const source = await readSource("document");
  const plan = await insertLayers(source, textResult(), { textLayers: true });
  assert.deepEqual(doc.layers[0].layers.map((l) => [l.name, l.visible]), [["Headline", true], ["Background", true]]);
  assert.deepEqual(ps.textLayers, []);
  assert.match(textLine(plan.text), /cannot make text layers/);
});

test("no installed font of the class, or a size beyond Photoshop's range: that block stays pixels", async () => {
  const { ps, doc } = setUp({ fonts: [["Zapfino", "Regular", "Zapfino"]] });
  const source = await readSource("document");
  const plan = await insertLayers(source, textResult(), { textLayers: true });
  assert.deepEqual(ps.textLayers, []);
  assert.deepEqual(doc.layers[0].layers.map((l) => l.name), ["Headline", "Background"]);
  assert.equal(textLine(plan.text), "1 text block kept as pixels (no matching font is installed).");

  const big = setUp();
  const result = textResult();
  result.layers[1].text[0].size = 1300; // over 1296 px at 72 ppi
  const plan2 = await insertLayers(await readSource("document"), result, { textLayers: true });
  assert.deepEqual(big.ps.textLayers, []);
  assert.equal(plan2.text.kept.size, 1);

  const fine = setUp({ resolution: 300 }); // 5400 px allowed at 300 ppi
  await insertLayers(await readSource("document"), result, { textLayers: true });
  assert.equal(fine.ps.textLayers[0].fontSize, 1300);
});

test("the double follows TextLayerCreateOptions: unknown names, foreign fonts, out-of-range sizes refused", async () => {
  const { ps, doc } = setUp();
  const { core, app } = ps.module();
  const make = (options) => core.executeAsModal(() => doc.createTextLayer(options), { commandName: "t" });
  await assert.rejects(make({ font: "ArialMT" }), /"font" is not one of its options/);
  await assert.rejects(make({ fontName: "Helvetica" }), /no installed font/);
  await assert.rejects(make({ fontSize: 2000 }), RangeError);
  await assert.rejects(make({ textColor: "#ff0000" }), /SolidColor/);
  await assert.rejects(doc.createTextLayer({}), /executeAsModal/);
  const color = new app.SolidColor();
  assert.throws(() => { color.rgb.red = 256; }, RangeError);
  const layer = await make({ contents: "Hi", textColor: color });
  assert.equal(layer.kind, "text");
  assert.equal(layer.textItem.characterStyle.font, "MyriadPro-Regular", "the documented default");
  assert.throws(() => { layer.textItem.paragraphStyle.justification = "middle"; }, /executeAsModal/);
  assert.deepEqual(app.fonts.getByName("ArialMT").family, "Arial");
});

test("the real text engine's blocks (python -m backend text) become text layers at their baselines", { skip: PYTHON ? false : "no Python venv", timeout: 120000 }, async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "lb-text-"));
  try {
    const png = path.join(tmp, "poster.png");
    const script = `
from PIL import Image, ImageDraw, ImageFont
img = Image.new("RGBA", (480, 200), (0, 0, 0, 0))
d = ImageDraw.Draw(img)
d.text((30, 30), "Summer Sale", font=ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", 56), fill=(200, 30, 40, 255))
d.text((30, 130), "Open every day", font=ImageFont.truetype("/usr/share/fonts/truetype/liberation/LiberationSerif-Regular.ttf", 36), fill=(20, 40, 90, 255))
img.save(${JSON.stringify(png)})
import numpy, sys
sys.stdout.buffer.write(numpy.asarray(img).tobytes())`;
    const rgba = new Uint8Array(execFileSync(PYTHON, ["-c", script], { maxBuffer: 1 << 24 }));
    const read = JSON.parse(execFileSync(PYTHON, ["-m", "backend", "text", png, "--json", "-"], {
      cwd: REPO, env: { ...process.env, PYTHONPATH: REPO }, maxBuffer: 1 << 24, stdio: ["ignore", "pipe", "ignore"],
    }).toString());
    assert.deepEqual(read.blocks.map((b) => b.text), ["Summer Sale", "Open every day"]);

    const ps = new Photoshop();
    const doc = ps.newDocument({ width: 600, height: 300, title: "Poster.psd" });
    host.setHost({ photoshop: ps.module(), uxp: {} });
    const source = { documentID: doc.id, layerID: null, name: "Poster", origin: { left: 50, top: 40 }, width: 480, height: 200 };
    const result = { name: "Poster", canvas: { width: 480, height: 200 }, layers: [
      { index: 0, name: "Background", x: 0, y: 0, width: 0, height: 0, bytes: 0, pixels: new Uint8Array(0), text: [] },
      { index: 1, name: "Text", x: 0, y: 0, width: 480, height: 200, bytes: rgba.length, pixels: rgba, text: read.blocks },
    ] };
    const plan = await insertLayers(source, result, { textLayers: true });

    assert.deepEqual(doc.history, ["Open", HISTORY_NAME]);
    const [headline, body] = ps.textLayers;
    assert.equal(headline.contents, "Summer Sale");
    assert.equal(headline.fontName, "DejaVuSans-Bold", "the family the server matched, installed here");
    assert.ok(Math.abs(headline.fontSize - 56) <= 56 * 0.1, `size ${headline.fontSize}`);
    const { box, align } = read.blocks[0];
    assert.equal(headline.position.x, 50 + { left: box.x, center: box.x + box.width / 2, right: box.x + box.width }[align],
      `${align}: the baseline's ${align} end`);
    assert.equal(doc.layers[0].layers[0].textItem.paragraphStyle.justification, read.blocks[1].align);
    assert.equal(headline.position.y, 40 + read.blocks[0].lines[0].baseline, "the first baseline");
    assert.equal(headline.textColor, read.blocks[0].color.slice(1).toUpperCase());
    assert.equal(body.fontName, "TimesNewRomanPSMT", "Liberation Serif set in Times New Roman");
    assert.deepEqual(doc.layers[0].layers.map((l) => [l.name, l.kind, l.visible]), [
      ["Open every day", "text", true], ["Open every day", "pixel", false],
      ["Summer Sale", "text", true], ["Summer Sale", "pixel", false], ["Background", "pixel", true],
    ], "the layer held only text: nothing of it is left visible but the text layers");
    assert.equal(plan.text.layers, 2);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
