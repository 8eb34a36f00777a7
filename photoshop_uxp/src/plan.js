// What to create for a result, before anything is created: a tree of groups, pixel layers and text
// layers, bottom to top, at their places in the document. Pure (no Photoshop): layers.js walks it.
//
// The result's `layers` are one flat list where a group entry is followed by its children and each
// entry names its `parent` (docs/protocol.md, Result). A layer's editable text blocks (`text`) become
// text layers: the block's pixels are cut out of the layer into a hidden pixel layer named after the
// text, directly below its text layer, so that hiding the text layer and showing those pixels gives
// back the exact picture; whatever else the layer holds stays a visible pixel layer below them.
"use strict";

const { LayerBridgeError } = require("./protocol.js");
const { chooseFont } = require("./fonts.js");

// The ink box the server gives is the glyphs' own bounds; their anti-aliased edges may reach a pixel
// or so further, and go with the text.
const TEXT_MARGIN = 2;
// TextItem's documented font size range is 0.01..1296 px for a 72 ppi document, scaled by resolution.
const MIN_FONT_SIZE = 0.01;
const MAX_FONT_SIZE_72PPI = 1296;
const NAME_CHARACTERS = 60;

/** A layer name from a block's text: its lines on one line, at most NAME_CHARACTERS characters. */
function textName(text) {
  const flat = String(text || "").replace(/\s+/g, " ").trim();
  return flat.length <= NAME_CHARACTERS ? flat : `${flat.slice(0, NAME_CHARACTERS - 1).trimEnd()}…`;
}

/** The largest font size Photoshop takes in a document of this resolution (ppi). */
function maxFontSize(resolution) {
  return MAX_FONT_SIZE_72PPI * ((resolution > 0 ? resolution : 72) / 72);
}

/** A result entry checked and placed: {index, name, group, parent, left, top, width, height, empty, pixels, text}. */
function entryOf(l, origin) {
  const group = l.group === true;
  const empty = group || !(l.width > 0 && l.height > 0);
  if (!empty && l.pixels && l.pixels.byteLength !== l.width * l.height * 4) {
    throw new LayerBridgeError("invalid_result", `layer ${l.index} has ${l.pixels.byteLength} bytes for ${l.width}×${l.height}`);
  }
  return {
    index: l.index,
    name: String(l.name || `Layer ${l.index}`),
    group,
    parent: Number.isInteger(l.parent) ? l.parent : null,
    left: origin.left + (l.x || 0),
    top: origin.top + (l.y || 0),
    width: empty ? 0 : l.width,
    height: empty ? 0 : l.height,
    empty,
    pixels: group ? null : l.pixels || null,
    text: Array.isArray(l.text) ? l.text : [],
  };
}

/** Copies the pixels of `entry` inside `box` (document pixels) into a new crop, clearing them in `rest`. */
function cutOut(entry, rest, box) {
  const left = Math.max(entry.left, box.left);
  const top = Math.max(entry.top, box.top);
  const right = Math.min(entry.left + entry.width, box.right);
  const bottom = Math.min(entry.top + entry.height, box.bottom);
  if (right <= left || bottom <= top) return null;
  const w = right - left;
  const h = bottom - top;
  const out = new Uint8Array(w * h * 4);
  let any = false;
  for (let y = 0; y < h; y++) {
    const from = ((top - entry.top + y) * entry.width + (left - entry.left)) * 4;
    const row = rest.subarray(from, from + w * 4);
    out.set(row, y * w * 4);
    for (let i = 3; i < row.length; i += 4) if (row[i]) { any = true; break; }
    row.fill(0);
  }
  return any ? { left, top, width: w, height: h, pixels: out } : null;
}

function hasPixels(rgba) {
  for (let i = 3; i < rgba.length; i += 4) if (rgba[i]) return true;
  return false;
}

/**
 * A block's text layer as createTextLayer and TextItem take it: contents with lines joined by "\r"
 * (Photoshop's paragraph break), the first line's baseline as the point text's position (the Text
 * tool's click point: the left end, middle or right end of the baseline by alignment), the leading
 * from the lines' baselines. Null when the block cannot be set (no font, size out of range).
 */
function textNode(block, origin, fonts, maxSize) {
  const lines = Array.isArray(block.lines) && block.lines.length ? block.lines : null;
  const box = block.box;
  const size = Number(block.size);
  if (!lines || !box || !(size >= MIN_FONT_SIZE && size <= maxSize)) return { node: null, why: "size" };
  const contents = lines.map((l) => String(l.text || "")).join("\r");
  const font = chooseFont(fonts, block.font || {}, contents);
  if (!font) return { node: null, why: "font" };
  const align = ["left", "center", "right"].includes(block.align) ? block.align : "left";
  const x = { left: box.x, center: box.x + box.width / 2, right: box.x + box.width }[align];
  const baselines = lines.map((l) => Number(l.baseline));
  const gaps = baselines.slice(1).map((b, i) => b - baselines[i]).filter((g) => g > 0);
  const leading = gaps.length ? gaps.reduce((a, b) => a + b, 0) / gaps.length : null;
  const color = /^#[0-9a-f]{6}$/i.test(block.color || "") ? block.color.toLowerCase() : "#000000";
  return {
    node: {
      kind: "text",
      name: textName(block.text || contents),
      contents,
      fontName: font.postScriptName,
      fontSize: size,
      position: { x: origin.left + x, y: origin.top + baselines[0] },
      color,
      justification: align,
      leading,
      fauxBold: font.fauxBold,
      fauxItalic: font.fauxItalic,
      font: { wanted: (block.font && block.font.family) || "", used: font.family, substituted: font.substituted },
    },
    why: null,
  };
}

/**
 * One result layer's nodes, bottom to top: the pixel layer itself, or with `text`, what is left of it
 * (if anything), then for each editable block its pixels (hidden) and its text layer.
 */
function pixelNodes(entry, origin, text, report) {
  const plain = [{ kind: "pixels", index: entry.index, name: entry.name, left: entry.left, top: entry.top,
    width: entry.width, height: entry.height, empty: entry.empty, pixels: entry.pixels, hidden: false }];
  const editable = entry.text.filter((b) => b && b.editable === true && b.box);
  if (!editable.length || entry.empty || !entry.pixels) return plain;
  report.editable += editable.length;
  if (!text) return plain;
  const rest = entry.pixels.slice();
  const above = [];
  for (const block of editable) {
    const { node, why } = textNode(block, origin, text.fonts, text.maxFontSize);
    if (!node) {
      report.kept[why] += 1;
      continue;
    }
    const b = block.box;
    const cut = cutOut(entry, rest, {
      left: origin.left + b.x - TEXT_MARGIN, top: origin.top + b.y - TEXT_MARGIN,
      right: origin.left + b.x + b.width + TEXT_MARGIN, bottom: origin.top + b.y + b.height + TEXT_MARGIN,
    });
    if (cut) above.push({ kind: "pixels", index: entry.index, name: node.name, ...cut, empty: false, hidden: true });
    above.push({ ...node, index: entry.index });
    report.layers += 1;
    if (node.font.substituted) report.substituted.set(node.font.wanted || "?", node.font.used);
  }
  if (!above.length) return plain;
  const below = hasPixels(rest)
    ? [{ ...plain[0], pixels: rest }]
    : [];
  return [...below, ...above];
}

/**
 * What to create, bottom to top: {groupName, layers, tree, steps, text}. `layers` are the result's
 * pixel entries (placed at `origin`, where the sent image's top-left corner sits in the document);
 * `tree` the nodes to create ({kind: "group", name, children} | {kind: "pixels", ...} | {kind:
 * "text", ...}); `steps` how many layers that makes; `text` what became of the text blocks.
 * @param {object} result  the protocol's result, each layer with `pixels`
 * @param {{left: number, top: number}} origin
 * @param {{width: number, height: number}} size  the sent image's size
 * @param {object} [options]
 * @param {{fonts: object, maxFontSize: number}|null} [options.text]  make text layers, from these fonts (app.fonts);
 *   null: every layer stays pixels
 */
function layerPlan(result, origin, size, { text = null } = {}) {
  if (!result || !Array.isArray(result.layers) || result.layers.length === 0) {
    throw new LayerBridgeError("invalid_result", "The server returned no layers.");
  }
  if (result.canvas && (result.canvas.width !== size.width || result.canvas.height !== size.height)) {
    throw new LayerBridgeError("invalid_result",
      `The result is ${result.canvas.width}×${result.canvas.height} but ${size.width}×${size.height} was sent.`);
  }
  const entries = [...result.layers].sort((a, b) => a.index - b.index).map((l) => entryOf(l, origin));
  const report = { layers: 0, editable: 0, kept: { font: 0, size: 0 }, substituted: new Map() };
  const groups = new Map();
  const tree = [];
  for (const entry of entries) {
    let siblings = tree;
    if (entry.parent !== null) {
      const parent = groups.get(entry.parent);
      if (!parent) {
        throw new LayerBridgeError("invalid_result", `layer ${entry.index} is in ${entry.parent}, which is no group before it`);
      }
      siblings = parent.children;
    }
    if (entry.group) {
      const group = { kind: "group", index: entry.index, name: entry.name, children: [] };
      groups.set(entry.index, group);
      siblings.push(group);
    } else {
      siblings.push(...pixelNodes(entry, origin, text, report));
    }
  }
  const count = (nodes) => nodes.reduce((n, node) => n + 1 + (node.children ? count(node.children) : 0), 0);
  const name = String(result.name || "").trim();
  return {
    groupName: name ? `${name} layers` : "Decomposed layers",
    layers: entries.filter((e) => !e.group),
    tree,
    steps: count(tree),
    text: report,
  };
}

module.exports = { layerPlan, textName, maxFontSize, TEXT_MARGIN };
