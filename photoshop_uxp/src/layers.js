// Photoshop side of a decomposition: read the source pixels, and insert the result (src/plan.js: nested
// groups, pixel layers, text layers over their hidden pixels) as one group in a single history step,
// in the source's document or, when that was closed meanwhile, in a new one like it; and Split layer:
// a layer replaced by a group of its elements in one history step. Reading and inserting run inside
// core.executeAsModal; the network wait in between does not, so Photoshop stays usable while the
// server works.
"use strict";

const host = require("./host.js");
const { LayerBridgeError } = require("./protocol.js");
const {
  SRGB, checkArea, checkDepth, depthOf, fromRgba8, isTransparent, normBounds, padTo, sourceArea, toRgba8,
} = require("./pixels.js");
const { layerPlan, maxFontSize } = require("./plan.js");
const { fontIndex } = require("./fonts.js");

const HISTORY_NAME = "Layer Decomposition";
const SPLIT_HISTORY_NAME = "Split Layer";
const JUSTIFICATION = { center: "CENTER", right: "RIGHT" }; // constants.Justification; LEFT is the default

// Only one plugin call at a time may hold Photoshop's modal state, and before Photoshop 25.10 a second
// executeAsModal fails at once ("host is in a modal state"). A split finishing while a decomposition
// is being inserted waits here for its turn instead.
let modalQueue = Promise.resolve();

/** core.executeAsModal, one of this panel's calls at a time. */
function exclusive(target, options) {
  const { core } = host.photoshop();
  const run = modalQueue.then(() => core.executeAsModal(target, options));
  modalQueue = run.catch(() => {});
  return run;
}

// Document.mode values (constants.DocumentMode). Photoshop's Imaging API handles RGB, Grayscale and
// Lab image data, converting to the sRGB pixels the panel asks for and from the sRGB layers it puts;
// it has no support for the other modes.
const IMAGING_MODES = new Set(["RGBColorMode", "grayscaleMode", "labColorMode"]);
const COPY = "duplicate the document (Image > Duplicate)";
const OTHER_MODES = {
  CMYKColorMode: ["CMYK", `${COPY}, convert the copy with Image > Mode > RGB Color`],
  indexedColorMode: ["Indexed Color", `${COPY}, convert the copy with Image > Mode > RGB Color`],
  duotoneMode: ["Duotone", `${COPY}, convert the copy with Image > Mode > RGB Color`],
  bitmapMode: ["Bitmap", `${COPY}, convert the copy with Image > Mode > Grayscale`],
  multichannelMode: ["Multichannel", `${COPY}, make the copy an RGB or Grayscale document`],
};

// A new document for a closed source's layers keeps the source's mode (Document.mode and
// NewDocumentMode name these three alike): putPixels converts the sRGB layers into a Grayscale or
// Lab document as it does into the source itself, so nothing needs an RGB copy.
const NEW_MODES = { RGBColorMode: "RGB", grayscaleMode: "GRAYSCALE", labColorMode: "LAB" };

function cancelled() {
  return new LayerBridgeError("cancelled", "Cancelled; the document was left as it was.");
}

/** After a cancel on Photoshop's progress bar, its next API call throws an error of its own: that is the cancel. */
function asCancel(context, error) {
  return context.isCancelled ? cancelled() : error;
}

/** Refuses a colour mode the Imaging API does not handle, with what to do about it. */
function checkMode(mode) {
  if (!mode || IMAGING_MODES.has(mode)) return;
  const [name, fix] = OTHER_MODES[mode] || [`"${mode}"`, `${COPY}, convert the copy with Image > Mode > RGB Color`];
  throw new LayerBridgeError("unsupported_image", `Photoshop's imaging API does not work with ${name} documents: ${fix}, and decompose that.`);
}

function baseName(title) {
  return String(title || "").replace(/\.[A-Za-z0-9]{1,5}$/, "");
}

/** createLayerGroup and createPixelLayer resolve with null when Photoshop could not make the layer. */
function created(layer) {
  if (!layer) throw new LayerBridgeError("internal", "Photoshop could not create a layer in this document.");
  return layer;
}

// What Document.colorProfileName answers for a document without a profile (colorProfileType neither
// CUSTOM nor WORKING): no profile's name, so it is not handed to Documents.add; the working space is used.
const NO_PROFILE = "None";

/** What it takes to make a document like the source's, should that be closed before the layers arrive. */
function documentInfo(doc, depth) {
  const profile = doc.colorProfileName;
  return {
    name: baseName(doc.title || doc.name) || "Untitled",
    width: doc.width,
    height: doc.height,
    resolution: doc.resolution,
    mode: doc.mode,
    depth,
    profile: typeof profile === "string" && profile && profile !== NO_PROFILE ? profile : null,
  };
}

/** DocumentCreateOptions for a transparent document like the source's, named "<name> (layers)". */
function newDocumentOptions(info) {
  const { constants } = host.photoshop();
  const options = {
    name: `${info.name} (layers)`,
    width: info.width,
    height: info.height,
    mode: constants.NewDocumentMode[NEW_MODES[info.mode] || "RGB"],
    depth: info.depth,
    fill: constants.DocumentFill.TRANSPARENT,
  };
  if (info.resolution > 0) options.resolution = info.resolution;
  if (info.profile) options.profile = info.profile; // the same colours when the group is moved back
  return options;
}

function findDocument(app, documentID) {
  const docs = Array.from(app.documents || []);
  return docs.find((d) => d.id === documentID) || null;
}

function findLayer(layers, id) {
  for (const layer of Array.from(layers || [])) {
    if (layer.id === id) return layer;
    const inner = layer.layers ? findLayer(layer.layers, id) : null;
    if (inner) return inner;
  }
  return null;
}

/**
 * Reads the pixels to decompose from the active document: its composite (`mode: "document"`) or
 * the one selected layer (`mode: "layer"`), cut to the selection's bounds when there is one; or, for
 * Split layer (`mode: "split"`), the selected pixel layer whole, whatever the selection.
 * Resolves with {documentID, layerID, name, depth, document, origin, width, height, data (rgba8)};
 * `document` is the document's {name, width, height, resolution, mode, depth, profile}. With the server's
 * `limits` (its hello), an area it would refuse is refused before any pixel is read.
 */
async function readSource(mode = "document", limits = null) {
  const { app, imaging, constants } = host.photoshop();
  const doc = app.activeDocument;
  if (!doc) throw new LayerBridgeError("no_document", "Open a document first.");
  checkMode(doc.mode);
  const depth = checkDepth(depthOf(doc.bitsPerChannel));
  const split = mode === "split";
  let layer = null;
  if (mode === "layer" || split) {
    const verb = split ? "split" : "decompose";
    const active = Array.from(doc.activeLayers || []);
    if (active.length !== 1) throw new LayerBridgeError("no_layer", `Select exactly one layer to ${verb}.`);
    [layer] = active;
    if (layer.layers) throw new LayerBridgeError("no_layer", `"${layer.name}" is a group; select a pixel layer.`);
    if (split && layer.isBackgroundLayer) {
      throw new LayerBridgeError("no_layer", "The Background layer cannot be split: it is one opaque piece. Decompose it instead, or split a layer above it.");
    }
    if (split && constants.LayerKind && layer.kind !== constants.LayerKind.NORMAL) {
      throw new LayerBridgeError("no_layer", `"${layer.name}" is not a pixel layer; Split layer works on pixel layers (rasterize it first).`);
    }
  }
  const selection = doc.selection && !split ? doc.selection.bounds : null;
  const area = sourceArea({
    canvas: { width: doc.width, height: doc.height },
    selection: selection || null,
    layer: layer ? layer.boundsNoEffects || layer.bounds : null,
  });
  checkArea(area, limits);

  const data = await exclusive(async (context) => {
    // No componentSize: asking 8 bits of a 16-bit document fails on recent versions; convert here.
    // colorSpace and colorProfile: Grayscale and Lab documents are converted to sRGB by Photoshop.
    const options = { documentID: doc.id, sourceBounds: area, colorSpace: "RGB", colorProfile: SRGB };
    if (layer) options.layerID = layer.id;
    let image = null;
    try {
      const answer = await imaging.getPixels(options);
      image = answer.imageData;
      const got = normBounds(answer.sourceBounds);
      if (!got || image.width === 0 || image.height === 0) return null;
      const raw = await image.getData({ chunky: true });
      const rgba = toRgba8(raw, image);
      return padTo(rgba, got, area);
    } catch (error) {
      throw asCancel(context, error);
    } finally {
      if (image) image.dispose();
    }
  }, { commandName: split ? "Reading pixels for Split Layer" : "Reading pixels for Layer Decomposition" });

  if (!data || isTransparent(data)) {
    throw new LayerBridgeError("empty_source", `There is nothing to ${split ? "split" : "decompose"} here: the area is fully transparent.`);
  }
  return {
    documentID: doc.id,
    layerID: layer ? layer.id : null,
    name: layer ? layer.name : baseName(doc.title || doc.name),
    depth,
    document: documentInfo(doc, depth),
    origin: { left: area.left, top: area.top },
    width: area.right - area.left,
    height: area.bottom - area.top,
    data,
  };
}

/**
 * How text blocks become text layers in `doc`, or null where they stay pixels. `wanted` false (the
 * panel's option off): null. A Photoshop without Document.createTextLayer (24.2): null, and
 * `report.unavailable` says so.
 */
function textSetup(doc, wanted, report) {
  if (!wanted) return null;
  const { app } = host.photoshop();
  if (typeof doc.createTextLayer !== "function" || typeof app.SolidColor !== "function") {
    report.unavailable = true;
    return null;
  }
  // Read once, when a first block needs a font: each property of each of the computer's fonts is a call to
  // Photoshop.
  let index = null;
  return {
    get fonts() {
      if (!index) index = fontIndex(app.fonts);
      return index;
    },
    maxFontSize: maxFontSize(doc.resolution),
  };
}

/** The plan for `doc`: text layers when asked for and possible (see textSetup). */
function planFor(doc, source, result, textLayers) {
  const status = { unavailable: false };
  const plan = layerPlan(result, source.origin, source, { text: textSetup(doc, textLayers, status) });
  plan.text.unavailable = status.unavailable;
  return plan;
}

/**
 * Adds the result as a group above the source in one history step: nested groups as the result's
 * hierarchy has them, and with `textLayers`, each editable text block as a text layer over its hidden
 * pixels (src/plan.js). A failure or a cancel (Photoshop's progress bar or `isCancelled()`) throws
 * inside the modal scope, which rolls the document back to how it was. When the source's document
 * was closed meanwhile, the group goes into a new document like it (see intoNewDocument), which is
 * then the active one. Resolves with the plan; its `newDocument` is that document's name, or null;
 * its `text` says what became of the text blocks.
 */
async function insertLayers(source, result, { isCancelled = () => false, onProgress = () => {}, textLayers = false } = {}) {
  const { app } = host.photoshop();
  let plan = { ...layerPlan(result, source.origin, source), newDocument: null }; // checked before any change

  await exclusive(async (context) => {
    const stop = () => context.isCancelled || isCancelled();
    const doc = findDocument(app, source.documentID);
    const make = (target) => {
      plan = { ...planFor(target, source, result, textLayers), newDocument: null };
      return plan;
    };
    if (!doc) {
      const name = await intoNewDocument(context, source, make, stop, onProgress);
      plan.newDocument = name; // `plan` is the one make() made
      return;
    }
    // New layers go to the active document: the source's is made active while they are added, and the
    // one the user switched to meanwhile gets the focus back afterwards.
    const previous = app.activeDocument;
    const switched = !previous || previous.id !== doc.id;
    if (switched) app.activeDocument = doc;
    try {
      const above = () => (source.layerID !== null ? findLayer(doc.layers, source.layerID) : Array.from(doc.layers)[0]);
      await addLayers(context, doc, make(doc), { above }, stop, onProgress);
    } finally {
      if (switched && previous && !context.isCancelled && findDocument(app, previous.id)) app.activeDocument = previous;
    }
  }, { commandName: "Adding decomposed layers" });
  return plan;
}

/**
 * Split layer: replaces the source layer by a group of its elements (the split task's result), named
 * and placed as the layer was, with its opacity and blend mode, in one history step ("Split Layer")
 * that a failure or a cancel rolls back. A result of one element changes nothing. Resolves with the
 * plan ({..., elements, nothing: true when there was nothing to split}).
 */
async function splitLayer(source, result, { isCancelled = () => false, onProgress = () => {}, textLayers = false } = {}) {
  const { app } = host.photoshop();
  let plan = layerPlan({ ...result, name: source.name }, source.origin, source);
  const elements = plan.layers.filter((l) => !l.empty).length;
  if (elements <= 1) return { ...plan, elements, nothing: true };

  await exclusive(async (context) => {
    const stop = () => context.isCancelled || isCancelled();
    const doc = findDocument(app, source.documentID);
    const layer = doc ? findLayer(doc.layers, source.layerID) : null;
    if (!layer) throw new LayerBridgeError("no_layer", `“${source.name}” was closed or deleted meanwhile; nothing was changed.`);
    plan = { ...planFor(doc, source, { ...result, name: source.name }, textLayers), elements, nothing: false };
    const previous = app.activeDocument;
    const switched = !previous || previous.id !== doc.id;
    if (switched) app.activeDocument = doc;
    try {
      const group = { name: source.name, opacity: layer.opacity, blendMode: layer.blendMode };
      await addLayers(context, doc, plan, {
        group, history: SPLIT_HISTORY_NAME, above: () => layer, blank: [layer],
      }, stop, onProgress);
    } finally {
      if (switched && previous && !context.isCancelled && findDocument(app, previous.id)) app.activeDocument = previous;
    }
  }, { commandName: "Splitting layer" });
  return plan;
}

/**
 * Makes a transparent document like the closed source's and adds the group there, the document's
 * own empty layer removed. A failure or a cancel leaves no document behind: the panel closes it,
 * and Photoshop does when the modal scope ends if it was the user who cancelled (no document
 * change is allowed after that). Resolves with the document's name.
 */
async function intoNewDocument(context, source, makePlan, stop, onProgress) {
  const { app } = host.photoshop();
  const { hostControl } = context;
  const options = newDocumentOptions(source.document);
  const doc = await app.documents.add(options);
  if (!doc) throw new LayerBridgeError("internal", "Photoshop could not create a document for the layers.");
  try {
    await hostControl.registerAutoCloseDocument(doc.id);
    // With a transparent fill Photoshop makes one empty ordinary layer; a document cannot be left
    // without layers, so it goes once the group is in.
    await addLayers(context, doc, makePlan(doc), { blank: Array.from(doc.layers) }, stop, onProgress);
    await hostControl.unregisterAutoCloseDocument(doc.id);
  } catch (error) {
    if (!context.isCancelled) await discard(hostControl, doc);
    throw asCancel(context, error);
  }
  return doc.title || options.name;
}

/** Closes a half-made document without saving; it stays registered for automatic closing until that worked. */
async function discard(hostControl, doc) {
  try {
    await doc.closeWithoutSaving();
  } catch (_) {
    return; // still registered: Photoshop closes it when the modal scope ends
  }
  try {
    await hostControl.unregisterAutoCloseDocument(doc.id);
  } catch (_) {
    // already closed; nothing is left to close
  }
}

/**
 * The group (named `group.name`, moved above the layer `above()` finds once the group exists, if any)
 * and the plan's tree in it, inside one suspended history state that a failure or a cancel rolls back;
 * the `blank` layers are deleted in that same state.
 */
async function addLayers(context, doc, plan, { group = null, history = HISTORY_NAME, above = () => null, blank = [] }, stop, onProgress) {
  const { constants } = host.photoshop();
  const { PLACEBEFORE } = constants.ElementPlacement;
  checkMode(doc.mode); // it may have changed while the server worked
  const depth = checkDepth(depthOf(doc.bitsPerChannel));
  const suspension = await context.hostControl.suspendHistory({ documentID: doc.id, name: history });
  try {
    const options = { name: plan.groupName, ...(group || {}) };
    for (const key of Object.keys(options)) if (options[key] === undefined) delete options[key];
    const root = created(await doc.createLayerGroup(options));
    const anchor = above();
    if (anchor && anchor.id !== root.id) await root.move(anchor, PLACEBEFORE);
    const counter = { done: 0, total: plan.steps };
    await addNodes(context, doc, plan.tree, root, depth, counter, stop, onProgress);
    for (const layer of blank) await layer.delete();
    if (stop()) throw cancelled();
    await context.hostControl.resumeHistory(suspension, true);
    onProgress(1, null);
  } catch (error) {
    try {
      await context.hostControl.resumeHistory(suspension, false);
    } catch (_) {
      // Photoshop cancels a suspension left open when the modal function throws.
    }
    throw asCancel(context, error);
  }
}

/**
 * Creates `nodes` (bottom to top) inside `parent`: the first moved into it, each next one directly
 * above the previous, so the bottom one ends at the bottom whatever a new layer's starting place was.
 */
async function addNodes(context, doc, nodes, parent, depth, counter, stop, onProgress) {
  const { constants } = host.photoshop();
  const { PLACEBEFORE, PLACEINSIDE } = constants.ElementPlacement;
  let below = null;
  for (const node of nodes) {
    if (stop()) throw cancelled();
    const fraction = counter.done / counter.total;
    counter.done += 1;
    context.reportProgress({ value: fraction, commandName: `Adding layer ${counter.done} of ${counter.total}` });
    onProgress(fraction, node);
    let layer;
    if (node.kind === "group") layer = created(await doc.createLayerGroup({ name: node.name }));
    else if (node.kind === "text") layer = await addText(doc, node);
    else layer = created(await doc.createPixelLayer({ name: node.name }));
    if (below) await layer.move(below, PLACEBEFORE);
    else await layer.move(parent, PLACEINSIDE);
    if (node.kind === "pixels" && !node.empty) await putPixels(doc, layer, node, depth);
    if (node.hidden) layer.visible = false;
    if (node.kind === "group") await addNodes(context, doc, node.children, layer, depth, counter, stop, onProgress);
    below = layer;
  }
}

/** A pixel node's rgba8 pixels into `layer`, at the document's depth, in sRGB. */
async function putPixels(doc, layer, node, depth) {
  const { imaging } = host.photoshop();
  const buffer = fromRgba8(node.pixels, depth);
  const imageData = await imaging.createImageDataFromBuffer(buffer, {
    width: node.width, height: node.height, components: 4, chunky: true, colorProfile: SRGB, colorSpace: "RGB",
  });
  try {
    await imaging.putPixels({
      documentID: doc.id, layerID: layer.id, imageData, replace: true,
      targetBounds: { left: node.left, top: node.top },
    });
  } finally {
    imageData.dispose();
  }
}

/**
 * A text node as a point text layer (Document.createTextLayer, Photoshop 24.2), then what
 * TextLayerCreateOptions has no field for, through its TextItem: the paragraph's justification, the
 * leading of a block of several lines, faux bold or italic where the chosen font lacks that face.
 */
async function addText(doc, node) {
  const { app, constants } = host.photoshop();
  const textColor = new app.SolidColor();
  const hex = node.color.slice(1);
  textColor.rgb.red = parseInt(hex.slice(0, 2), 16);
  textColor.rgb.green = parseInt(hex.slice(2, 4), 16);
  textColor.rgb.blue = parseInt(hex.slice(4, 6), 16);
  const layer = created(await doc.createTextLayer({
    name: node.name,
    contents: node.contents,
    fontName: node.fontName,
    fontSize: node.fontSize,
    position: { x: node.position.x, y: node.position.y },
    textColor,
  }));
  const { characterStyle, paragraphStyle } = layer.textItem;
  if (JUSTIFICATION[node.justification]) paragraphStyle.justification = constants.Justification[JUSTIFICATION[node.justification]];
  if (node.leading) {
    characterStyle.useAutoLeading = false;
    characterStyle.leading = node.leading;
  }
  if (node.fauxBold) characterStyle.fauxBold = true;
  if (node.fauxItalic) characterStyle.fauxItalic = true;
  return layer;
}

module.exports = { HISTORY_NAME, SPLIT_HISTORY_NAME, layerPlan, readSource, insertLayers, splitLayer };
