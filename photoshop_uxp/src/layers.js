// Photoshop side of a decomposition: read the source pixels, and insert the result as one group
// of pixel layers in a single history step, in the source's document or, when that was closed
// meanwhile, in a new one like it. Both run inside core.executeAsModal; the network wait in
// between does not, so Photoshop stays usable while the server works.
"use strict";

const host = require("./host.js");
const { LayerBridgeError } = require("./protocol.js");
const {
  SRGB, checkArea, checkDepth, depthOf, fromRgba8, isTransparent, normBounds, padTo, sourceArea, toRgba8,
} = require("./pixels.js");

const HISTORY_NAME = "Layer Decomposition";

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

/**
 * What to create, bottom to top: one entry per result layer, with its place on the canvas.
 * `origin` is where the sent image's top-left corner sits in the document.
 */
function layerPlan(result, origin, size) {
  if (!result || !Array.isArray(result.layers) || result.layers.length === 0) {
    throw new LayerBridgeError("invalid_result", "The server returned no layers.");
  }
  if (result.canvas && (result.canvas.width !== size.width || result.canvas.height !== size.height)) {
    throw new LayerBridgeError("invalid_result",
      `The result is ${result.canvas.width}×${result.canvas.height} but ${size.width}×${size.height} was sent.`);
  }
  const layers = [...result.layers].sort((a, b) => a.index - b.index).map((l) => {
    const empty = !(l.width > 0 && l.height > 0);
    if (!empty && l.pixels && l.pixels.byteLength !== l.width * l.height * 4) {
      throw new LayerBridgeError("invalid_result", `layer ${l.index} has ${l.pixels.byteLength} bytes for ${l.width}×${l.height}`);
    }
    return {
      index: l.index,
      name: String(l.name || `Layer ${l.index}`),
      left: origin.left + (l.x || 0),
      top: origin.top + (l.y || 0),
      width: empty ? 0 : l.width,
      height: empty ? 0 : l.height,
      empty,
      pixels: l.pixels || null,
    };
  });
  const name = String(result.name || "").trim();
  return { groupName: name ? `${name} layers` : "Decomposed layers", layers };
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
 * the one selected layer (`mode: "layer"`), cut to the selection's bounds when there is one.
 * Resolves with {documentID, layerID, name, depth, document, origin, width, height, data (rgba8)};
 * `document` is the document's {name, width, height, resolution, mode, depth, profile}. With the server's
 * `limits` (its hello), an area it would refuse is refused before any pixel is read.
 */
async function readSource(mode = "document", limits = null) {
  const { app, core, imaging } = host.photoshop();
  const doc = app.activeDocument;
  if (!doc) throw new LayerBridgeError("no_document", "Open a document first.");
  checkMode(doc.mode);
  const depth = checkDepth(depthOf(doc.bitsPerChannel));
  let layer = null;
  if (mode === "layer") {
    const active = Array.from(doc.activeLayers || []);
    if (active.length !== 1) throw new LayerBridgeError("no_layer", "Select exactly one layer to decompose.");
    [layer] = active;
    if (layer.layers) throw new LayerBridgeError("no_layer", `"${layer.name}" is a group; select a pixel layer.`);
  }
  const selection = doc.selection ? doc.selection.bounds : null;
  const area = sourceArea({
    canvas: { width: doc.width, height: doc.height },
    selection: selection || null,
    layer: layer ? layer.boundsNoEffects || layer.bounds : null,
  });
  checkArea(area, limits);

  const data = await core.executeAsModal(async (context) => {
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
  }, { commandName: "Reading pixels for Layer Decomposition" });

  if (!data || isTransparent(data)) {
    throw new LayerBridgeError("empty_source", "There is nothing to decompose here: the area is fully transparent.");
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
 * Adds the result as a group above the source in one history step. A failure or a cancel
 * (Photoshop's progress bar or `isCancelled()`) throws inside the modal scope, which rolls the
 * document back to how it was. When the source's document was closed meanwhile, the group goes
 * into a new document like it (see intoNewDocument), which is then the active one.
 * Resolves with the plan; its `newDocument` is that document's name, or null.
 */
async function insertLayers(source, result, { isCancelled = () => false, onProgress = () => {} } = {}) {
  const { app, core } = host.photoshop();
  const plan = { ...layerPlan(result, source.origin, source), newDocument: null };

  await core.executeAsModal(async (context) => {
    const stop = () => context.isCancelled || isCancelled();
    const doc = findDocument(app, source.documentID);
    if (!doc) {
      plan.newDocument = await intoNewDocument(context, source, plan, stop, onProgress);
      return;
    }
    // New layers go to the active document: the source's is made active while they are added, and the
    // one the user switched to meanwhile gets the focus back afterwards.
    const previous = app.activeDocument;
    const switched = !previous || previous.id !== doc.id;
    if (switched) app.activeDocument = doc;
    try {
      const above = () => (source.layerID !== null ? findLayer(doc.layers, source.layerID) : Array.from(doc.layers)[0]);
      await addLayers(context, doc, plan, { above }, stop, onProgress);
    } finally {
      if (switched && previous && !context.isCancelled && findDocument(app, previous.id)) app.activeDocument = previous;
    }
  }, { commandName: "Adding decomposed layers" });
  return plan;
}

/**
 * Makes a transparent document like the closed source's and adds the group there, the document's
 * own empty layer removed. A failure or a cancel leaves no document behind: the panel closes it,
 * and Photoshop does when the modal scope ends if it was the user who cancelled (no document
 * change is allowed after that). Resolves with the document's name.
 */
async function intoNewDocument(context, source, plan, stop, onProgress) {
  const { app } = host.photoshop();
  const { hostControl } = context;
  const options = newDocumentOptions(source.document);
  const doc = await app.documents.add(options);
  if (!doc) throw new LayerBridgeError("internal", "Photoshop could not create a document for the layers.");
  try {
    await hostControl.registerAutoCloseDocument(doc.id);
    // With a transparent fill Photoshop makes one empty ordinary layer; a document cannot be left
    // without layers, so it goes once the group is in.
    await addLayers(context, doc, plan, { blank: Array.from(doc.layers) }, stop, onProgress);
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
 * The group (moved above the layer `above()` finds once the group exists, if any) and its layers,
 * inside one suspended history state that a failure or a cancel rolls back; the `blank` layers are
 * deleted in that same state.
 */
async function addLayers(context, doc, plan, { above = () => null, blank = [] }, stop, onProgress) {
  const { imaging, constants } = host.photoshop();
  const { PLACEBEFORE, PLACEINSIDE } = constants.ElementPlacement;
  checkMode(doc.mode); // it may have changed while the server worked
  const depth = checkDepth(depthOf(doc.bitsPerChannel));
  const suspension = await context.hostControl.suspendHistory({ documentID: doc.id, name: HISTORY_NAME });
  try {
    const group = created(await doc.createLayerGroup({ name: plan.groupName }));
    const anchor = above();
    if (anchor && anchor.id !== group.id) await group.move(anchor, PLACEBEFORE);

    let below = null;
    for (let i = 0; i < plan.layers.length; i++) {
      if (stop()) throw cancelled();
      const item = plan.layers[i];
      const fraction = i / plan.layers.length;
      context.reportProgress({ value: fraction, commandName: `Adding layer ${i + 1} of ${plan.layers.length}` });
      onProgress(fraction, item);
      const layer = created(await doc.createPixelLayer({ name: item.name }));
      // The first goes into the group; each next one directly above the previous, so the
      // background ends at the bottom whatever the new layer's starting place was.
      if (below) await layer.move(below, PLACEBEFORE);
      else await layer.move(group, PLACEINSIDE);
      if (!item.empty) {
        const buffer = fromRgba8(item.pixels, depth);
        const imageData = await imaging.createImageDataFromBuffer(buffer, {
          width: item.width, height: item.height, components: 4, chunky: true, colorProfile: SRGB, colorSpace: "RGB",
        });
        try {
          await imaging.putPixels({
            documentID: doc.id, layerID: layer.id, imageData, replace: true,
            targetBounds: { left: item.left, top: item.top },
          });
        } finally {
          imageData.dispose();
        }
      }
      below = layer;
    }
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

module.exports = { HISTORY_NAME, layerPlan, readSource, insertLayers };
