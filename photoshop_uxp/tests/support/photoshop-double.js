// A small in-memory double of the parts of Photoshop's UXP API the panel uses, following the
// documented behaviour of Photoshop 25.x (UXP 7.x): the Imaging API page (getPixels trims its
// answer to the area with pixels and reports the real sourceBounds; 3 components when the source
// has no alpha; 16-bit data is 0..32768; image data must be disposed), the executeAsModal page
// (history suspension; a target function that throws cancels open suspensions; isCancelled and
// APIs failing after a user cancel), and the DOM pages for Document, Layer, Selection (25.0) and
// constants (ElementPlacement, BitsPerChannelType, DocumentMode, NewDocumentMode, DocumentFill;
// app.activeDocument is read-write), Documents.add with DocumentCreateOptions (defaults: 2100×1500
// pixels, 300 ppi, RGB, white), Layer.delete and Document.closeWithoutSaving (both return nothing),
// the executeAsModal page's automatic document closing (registerAutoCloseDocument), and
// Document.colorProfileName, which answers "None" for a document without a profile.
// Colour modes follow the Imaging API page: image data is RGB, Grayscale or Lab, getPixels converts
// to a requested colorSpace/colorProfile, putPixels converts the data to the document's mode; the
// other modes (CMYK, Indexed, Bitmap, Duotone, Multichannel) are not supported by the Imaging API.
// A Grayscale document holds one gray value per pixel, kept here as r = g = b (sRGB data coming in
// becomes its luma: the point is the panel's behaviour, not colour science); a Lab document's pixels
// are kept as the sRGB they convert to, and its own Lab encoding is not modelled.
// Text (Photoshop 24.2 and later): Document.createTextLayer with TextLayerCreateOptions (fontName a
// PostScript name, fontSize in pixels, position the point text's click point: the left end of the
// first baseline, textColor a SolidColor made with app.SolidColor), Layer.textItem (24.2) with its
// characterStyle and paragraphStyle (24.1; sizes in pixels within the documented ranges, which scale
// with resolution / 72; a value outside one is a RangeError), constants.Justification and LayerKind,
// app.fonts (TextFonts, 23.0: indexable, length, getByName) of TextFont {family, name, postScriptName,
// style}. `new Photoshop({version: "24.1"})` is a Photoshop without createTextLayer and textItem.
// Layer.visible, opacity and blendMode are read-write; GroupLayerCreateOptions names, opacity and
// blendMode a new group. A text layer's glyphs are not rendered: composite() shows pixel layers only.
// Where the documentation says nothing, the double is strict (it refuses) rather than permissive,
// and says so in its errors. So a new layer or group is made in the active document whichever
// Document it is asked of, as batchPlay's commands act on the active element when given no target.
"use strict";

const SRGB = "sRGB IEC61966-2.1";
const DEPTH_NAMES = { 1: "bitDepth1", 8: "bitDepth8", 16: "bitDepth16", 32: "bitDepth32" };
const MAX = { 8: 255, 16: 32768, 32: 1 };

const constants = {
  ElementPlacement: {
    PLACEAFTER: "placeAfter",
    PLACEBEFORE: "placeBefore",
    PLACEINSIDE: "placeInside",
    PLACEATBEGINNING: "placeAtBeginning",
    PLACEATEND: "placeAtEnd",
  },
  BitsPerChannelType: { ONE: "bitDepth1", EIGHT: "bitDepth8", SIXTEEN: "bitDepth16", THIRTYTWO: "bitDepth32" },
  DocumentMode: {
    BITMAP: "bitmapMode",
    CMYK: "CMYKColorMode",
    DUOTONE: "duotoneMode",
    GRAYSCALE: "grayscaleMode",
    INDEXEDCOLOR: "indexedColorMode",
    LAB: "labColorMode",
    MULTICHANNEL: "multichannelMode",
    RGB: "RGBColorMode",
  },
  NewDocumentMode: {
    BITMAP: "bitmapMode",
    CMYK: "CMYKColorMode",
    GRAYSCALE: "grayscaleMode",
    LAB: "labColorMode",
    RGB: "RGBColorMode",
  },
  DocumentFill: {
    BACKGROUNDCOLOR: "backgroundColor",
    BLACK: "black",
    COLOR: "color",
    TRANSPARENT: "transparent",
    WHITE: "white",
  },
  Justification: {
    CENTER: "center",
    CENTERJUSTIFIED: "centerJustified",
    FULLYJUSTIFIED: "fullyJustified",
    LEFT: "left",
    LEFTJUSTIFIED: "leftJustified",
    RIGHT: "right",
    RIGHTJUSTIFIED: "rightJustified",
  },
  LayerKind: { NORMAL: "pixel", GROUP: "group", TEXT: "text", SMARTOBJECT: "smartObject", SOLIDCOLOR: "solidColor" },
  BlendMode: {
    NORMAL: "normal", PASSTHROUGH: "passThrough", MULTIPLY: "multiply", SCREEN: "screen", OVERLAY: "overlay",
    DARKEN: "darken", LIGHTEN: "lighten", DISSOLVE: "dissolve",
  },
};

/** Version strings compared as numbers: "24.10" after "24.2". */
function atLeast(version, wanted) {
  const a = String(version).split(".").map(Number);
  const b = String(wanted).split(".").map(Number);
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if ((a[i] || 0) !== (b[i] || 0)) return (a[i] || 0) > (b[i] || 0);
  }
  return true;
}

// A few installed fonts: {family, style, postScriptName}; name is "family style" as Photoshop shows it.
const DEFAULT_FONTS = [
  ["Myriad Pro", "Regular", "MyriadPro-Regular"], ["Myriad Pro", "Bold", "MyriadPro-Bold"],
  ["Minion Pro", "Regular", "MinionPro-Regular"],
  ["Arial", "Regular", "ArialMT"], ["Arial", "Bold", "Arial-BoldMT"], ["Arial", "Italic", "Arial-ItalicMT"],
  ["Arial", "Bold Italic", "Arial-BoldItalicMT"],
  ["Times New Roman", "Regular", "TimesNewRomanPSMT"], ["Times New Roman", "Bold", "TimesNewRomanPS-BoldMT"],
  ["Courier New", "Regular", "CourierNewPSMT"],
  ["DejaVu Sans", "Book", "DejaVuSans"], ["DejaVu Sans", "Bold", "DejaVuSans-Bold"],
];

class RGBColor {
  constructor() {
    this.values = { red: 255, green: 255, blue: 255 };
  }

  get typename() {
    return "RGBColor";
  }

  get hexValue() {
    return ["red", "green", "blue"].map((c) => Math.round(this.values[c]).toString(16).padStart(2, "0")).join("").toUpperCase();
  }
}
for (const channel of ["red", "green", "blue"]) {
  Object.defineProperty(RGBColor.prototype, channel, {
    get() { return this.values[channel]; },
    set(v) {
      if (typeof v !== "number" || !(v >= 0 && v <= 255)) throw new RangeError(`RGBColor.${channel}: ${v} is not in 0..255`);
      this.values[channel] = v;
    },
  });
}

/** SolidColor (app.SolidColor): RGB only here; its rgb defaults to white. */
class SolidColor {
  constructor() {
    this.rgb = new RGBColor();
  }

  get typename() {
    return "SolidColor";
  }
}

/** A setting of a TextItem style: needs the modal scope, checks its range, changes the document. */
function styleProperty(target, name, initial, check) {
  let value = initial;
  Object.defineProperty(target, name, {
    enumerable: true,
    get() { return value; },
    set(v) {
      target.layer.doc.app.guard(`TextItem.${target.kind}.${name}`);
      check(v);
      value = v;
      target.layer.doc.changed("Edit Type");
    },
  });
}

/** A text layer's TextItem: contents, characterStyle and paragraphStyle as created. */
function textItem(layer, options, resolution) {
  const scale = resolution / 72; // "for a 72ppi document"
  const inRange = (what, min, max) => (v) => {
    if (typeof v !== "number" || !(v >= min * scale && v <= max * scale)) {
      throw new RangeError(`${what}: ${v} is outside ${min * scale}..${max * scale} px at ${resolution} ppi`);
    }
  };
  const bool = (what) => (v) => { if (typeof v !== "boolean") throw new TypeError(`${what}: ${v} is not a boolean`); };
  const characterStyle = { layer, kind: "characterStyle" };
  styleProperty(characterStyle, "font", options.fontName, (v) => {
    if (!layer.doc.app.fontByName(v)) throw new Error(`characterStyle.font: no installed font "${v}"`);
  });
  styleProperty(characterStyle, "size", options.fontSize, inRange("characterStyle.size", 0.01, 1296));
  styleProperty(characterStyle, "color", options.textColor, (v) => { if (!(v instanceof SolidColor)) throw new TypeError("characterStyle.color: a SolidColor"); });
  styleProperty(characterStyle, "leading", null, inRange("characterStyle.leading", 0, 4999.99));
  styleProperty(characterStyle, "useAutoLeading", true, bool("characterStyle.useAutoLeading"));
  styleProperty(characterStyle, "fauxBold", false, bool("characterStyle.fauxBold"));
  styleProperty(characterStyle, "fauxItalic", false, bool("characterStyle.fauxItalic"));
  const paragraphStyle = { layer, kind: "paragraphStyle" };
  styleProperty(paragraphStyle, "justification", constants.Justification.LEFT, (v) => {
    if (!Object.values(constants.Justification).includes(v)) throw new Error(`paragraphStyle.justification: ${v} is not a Justification`);
  });
  return {
    typename: "TextItem",
    contents: options.contents,
    isPointText: true,
    isParagraphText: false,
    textClickPoint: { ...options.position },
    characterStyle,
    paragraphStyle,
  };
}

const TEXT_OPTIONS = ["blendMode", "color", "contents", "fontName", "fontSize", "group", "mode", "name", "opacity", "position", "textColor"];
const GROUP_OPTIONS = ["blendMode", "color", "fromLayers", "mode", "name", "opacity"];

/** Refuses option names the page does not list, and opacity or blendMode values outside theirs. */
function checkLayerOptions(what, options, names) {
  for (const key of Object.keys(options)) {
    if (!names.includes(key)) throw new Error(`${what}: "${key}" is not one of its options`);
  }
  if (options.opacity !== undefined && !(typeof options.opacity === "number" && options.opacity >= 0 && options.opacity <= 100)) {
    throw new RangeError(`${what}: opacity ${options.opacity}`);
  }
  if (options.blendMode !== undefined && !Object.values(constants.BlendMode).includes(options.blendMode)) {
    throw new Error(`${what}: blendMode ${options.blendMode} is not a BlendMode`);
  }
}

/** The image data colour space of each mode the Imaging API reads and writes. */
const SPACE_OF = {
  [constants.DocumentMode.RGB]: "RGB",
  [constants.DocumentMode.GRAYSCALE]: "Grayscale",
  [constants.DocumentMode.LAB]: "Lab",
};
const PIXEL_FORMATS = { RGB: ["RGB", "RGBA"], Grayscale: ["Grayscale", "GrayscaleAlpha"], Lab: ["LAB", "LABAlpha"] };

function imagingSpace(doc, what) {
  const space = SPACE_OF[doc.mode];
  if (!space) throw new Error(`${what}: the Imaging API supports RGB, Grayscale and Lab documents, not ${doc.mode}`);
  return space;
}

/** Rec. 709 luma of 4-component pixels, written back as r = g = b (alpha kept). */
function toGray(data) {
  const out = data.slice();
  for (let i = 0; i < out.length; i += 4) {
    const luma = 0.2126 * out[i] + 0.7152 * out[i + 1] + 0.0722 * out[i + 2];
    const y = out instanceof Float32Array ? luma : Math.round(luma);
    out[i] = y; out[i + 1] = y; out[i + 2] = y;
  }
  return out;
}

function arrayFor(depth, n) {
  if (depth === 8) return new Uint8Array(n);
  if (depth === 16) return new Uint16Array(n);
  return new Float32Array(n);
}

function bounds(b) {
  const right = b.right !== undefined ? b.right : b.left + b.width;
  const bottom = b.bottom !== undefined ? b.bottom : b.top + b.height;
  return { left: b.left, top: b.top, right, bottom };
}

function intersect(a, b) {
  const r = { left: Math.max(a.left, b.left), top: Math.max(a.top, b.top), right: Math.min(a.right, b.right), bottom: Math.min(a.bottom, b.bottom) };
  return r.right > r.left && r.bottom > r.top ? r : null;
}

// Photoshop's default working spaces (North America General Purpose), by document mode.
const NO_PROFILE = "None"; // Document.colorProfileName when colorProfileType is neither CUSTOM nor WORKING
const WORKING_PROFILES = { RGBColorMode: "sRGB IEC61966-2.1", grayscaleMode: "Dot Gain 20%", CMYKColorMode: "U.S. Web Coated (SWOP) v2" };

const CREATE_OPTIONS = ["depth", "fill", "fillColor", "height", "mode", "name", "pixelScaleFactor", "preset", "presetJSON", "profile", "resolution", "width"];
const NOT_MODELLED = ["fillColor", "pixelScaleFactor", "preset", "presetJSON"];

/**
 * DocumentCreateOptions with the documented defaults filled in. Names the page does not list are
 * refused, so that a misspelt option cannot pass unnoticed, as are the options and values the
 * double does not model.
 */
function createOptions(options) {
  for (const key of Object.keys(options)) {
    if (!CREATE_OPTIONS.includes(key)) throw new Error(`Documents.add: "${key}" is not a DocumentCreateOptions property`);
    if (NOT_MODELLED.includes(key)) throw new Error(`double: Documents.add with "${key}" is not modelled`);
  }
  const o = { width: 2100, height: 1500, resolution: 300, mode: constants.NewDocumentMode.RGB, fill: constants.DocumentFill.WHITE, depth: 8, ...options };
  for (const key of ["width", "height"]) {
    if (!Number.isInteger(o[key]) || o[key] < 1) throw new Error(`Documents.add: ${key} ${o[key]} is not a number of pixels`);
  }
  if (!(typeof o.resolution === "number" && o.resolution > 0)) throw new Error(`Documents.add: resolution ${o.resolution}`);
  if (![8, 16, 32].includes(o.depth)) throw new Error(`Documents.add: depth ${o.depth} is not 8, 16 or 32`);
  if (!Object.values(constants.NewDocumentMode).includes(o.mode)) throw new Error(`Documents.add: mode ${o.mode} is not a NewDocumentMode`);
  if (o.mode === constants.NewDocumentMode.BITMAP) throw new Error("double: new Bitmap documents are not modelled");
  if (!Object.values(constants.DocumentFill).includes(o.fill)) throw new Error(`Documents.add: fill ${o.fill} is not a DocumentFill`);
  if (o.profile !== undefined && (typeof o.profile !== "string" || !o.profile || o.profile === NO_PROFILE)) {
    throw new Error(`Documents.add: profile ${JSON.stringify(o.profile)} is not a profile name`);
  }
  if (![constants.DocumentFill.WHITE, constants.DocumentFill.BLACK, constants.DocumentFill.TRANSPARENT].includes(o.fill)) {
    throw new Error(`double: Documents.add with fill ${o.fill} is not modelled`);
  }
  return o;
}

class ImageData {
  constructor(registry, { width, height, components, componentSize, data, colorProfile, colorSpace = "RGB" }) {
    this.registry = registry;
    this.width = width;
    this.height = height;
    this.components = components;
    this.componentSize = componentSize;
    this.colorSpace = colorSpace;
    this.colorProfile = colorProfile;
    const [opaque, withAlpha] = PIXEL_FORMATS[colorSpace] || [colorSpace, `${colorSpace}Alpha`];
    const alphaComponents = colorSpace === "Grayscale" ? 2 : 4;
    this.hasAlpha = components === alphaComponents;
    this.pixelFormat = this.hasAlpha ? withAlpha : opaque;
    this.isChunky = true;
    this.type = "image/uncompressed";
    this.data = data;
    this.disposed = false;
    registry.add(this);
  }

  async getData({ chunky = true, fullRange = false } = {}) {
    if (this.disposed) throw new Error("image data was disposed");
    if (!chunky) throw new Error("double: planar data is not modelled");
    if (fullRange && this.componentSize === 16) return Uint16Array.from(this.data, (v) => Math.round((v * 65535) / 32768));
    return this.data.slice();
  }

  dispose() {
    this.disposed = true;
    this.registry.delete(this);
  }
}

class Layer {
  constructor(doc, { name, kind = "pixel", background = false, visible = true, opacity = 100, blendMode = null }) {
    this.doc = doc;
    this.id = doc.app.nextId++;
    this.name = name;
    this.kind = kind;
    this.isBackgroundLayer = background;
    this.shown = visible;
    this.opacity = opacity;
    this.blendMode = blendMode || (kind === "group" ? constants.BlendMode.PASSTHROUGH : constants.BlendMode.NORMAL);
    this.parent = null;
    this.layers = kind === "group" ? [] : undefined;
    this.pixels = null; // {bounds, data} in the document's depth, 4 components
  }

  get typename() {
    return "Layer";
  }

  /** Layer.visible (22.5, read-write): hiding or showing a layer is a change of the document. */
  get visible() {
    return this.shown;
  }

  set visible(value) {
    this.doc.app.guard("Layer.visible");
    if (typeof value !== "boolean") throw new TypeError(`Layer.visible: ${value} is not a boolean`);
    this.shown = value;
    this.doc.changed(value ? "Show Layer" : "Hide Layer");
  }

  /** Layer.textItem (24.2): for text layers only. */
  get textItem() {
    if (!atLeast(this.doc.app.version, "24.2")) return undefined;
    if (this.kind !== "text") throw new Error(`Layer.textItem: "${this.name}" is not a text layer`);
    return this.text;
  }

  get bounds() {
    const b = this.contentBounds() || { left: 0, top: 0, right: 0, bottom: 0 };
    return { ...b, width: b.right - b.left, height: b.bottom - b.top };
  }

  get boundsNoEffects() {
    return this.bounds;
  }

  /** Bounding box of pixels with alpha > 0 (what Photoshop calls the layer's bounds). */
  contentBounds() {
    if (this.kind === "group") {
      return this.layers.map((l) => l.contentBounds()).filter(Boolean).reduce((a, b) => (a
        ? { left: Math.min(a.left, b.left), top: Math.min(a.top, b.top), right: Math.max(a.right, b.right), bottom: Math.max(a.bottom, b.bottom) }
        : b), null);
    }
    if (!this.pixels) return null;
    const { bounds: pb, data } = this.pixels;
    const w = pb.right - pb.left;
    let box = null;
    for (let y = pb.top; y < pb.bottom; y++) {
      for (let x = pb.left; x < pb.right; x++) {
        if (data[((y - pb.top) * w + (x - pb.left)) * 4 + 3] > 0) {
          if (!box) box = { left: x, top: y, right: x + 1, bottom: y + 1 };
          else {
            box.left = Math.min(box.left, x); box.top = Math.min(box.top, y);
            box.right = Math.max(box.right, x + 1); box.bottom = Math.max(box.bottom, y + 1);
          }
        }
      }
    }
    return box;
  }

  /** One pixel as [r, g, b, a] in the document's depth, transparent outside the layer's pixels. */
  pixel(x, y) {
    if (!this.pixels) return [0, 0, 0, 0];
    const { bounds: pb, data } = this.pixels;
    if (x < pb.left || y < pb.top || x >= pb.right || y >= pb.bottom) return [0, 0, 0, 0];
    const i = ((y - pb.top) * (pb.right - pb.left) + (x - pb.left)) * 4;
    return [data[i], data[i + 1], data[i + 2], data[i + 3]];
  }

  async move(relative, placement) {
    this.doc.app.guard("Layer.move");
    const P = constants.ElementPlacement;
    if (this.isBackgroundLayer) throw new Error("the Background layer cannot be moved");
    for (let p = relative; p && p !== this.doc; p = p.parent) if (p === this) throw new Error("cannot move a layer into itself");
    this.doc.detach(this);
    if (placement === P.PLACEINSIDE) {
      if (relative.kind !== "group") throw new Error("PLACEINSIDE needs a group");
      this.doc.attach(this, relative, 0);
    } else if (placement === P.PLACEBEFORE || placement === P.PLACEAFTER) {
      const siblings = this.doc.childrenOf(relative.parent);
      const at = siblings.indexOf(relative) + (placement === P.PLACEAFTER ? 1 : 0);
      this.doc.attach(this, relative.parent, at);
    } else if (placement === P.PLACEATBEGINNING) {
      this.doc.attach(this, this.doc, 0);
    } else if (placement === P.PLACEATEND) {
      this.doc.attach(this, this.doc, this.doc.layers.length);
    } else {
      throw new Error(`unknown placement ${placement}`);
    }
    this.doc.changed("Move");
  }

  /** Returns nothing, as documented. A document keeps at least one layer, as in Photoshop's Layers panel. */
  delete() {
    this.doc.app.guard("Layer.delete");
    if (this.doc.layers.length === 1 && this.doc.layers[0] === this) throw new Error("double: a document's only layer cannot be deleted");
    this.doc.detach(this);
    this.doc.activeLayers = this.doc.activeLayers.filter((l) => l !== this);
    this.doc.changed("Delete Layer");
  }
}

class Document {
  constructor(app, { width, height, depth = 8, title = "Untitled-1.psd", mode = constants.DocumentMode.RGB, resolution = 72, opened = "Open",
    profile = null }) {
    this.app = app;
    this.id = app.nextId++;
    this.width = width;
    this.height = height;
    this.depth = depth;
    this.bitsPerChannel = DEPTH_NAMES[depth];
    this.mode = mode;
    this.resolution = resolution;
    // Document.colorProfileName: the embedded profile's name, the working space's for a document that
    // uses it, and "None" for one without a profile (colorProfileType NONE: untagged, or Lab here).
    // Set-up gives `profile: "None"` for an untagged document.
    this.colorProfileName = profile || WORKING_PROFILES[mode] || NO_PROFILE;
    this.title = title;
    this.name = title;
    this.layers = []; // top to bottom, as the DOM lists them
    this.activeLayers = [];
    this.selection = { bounds: null, docId: this.id }; // Selection.bounds is null without a selection (25.0)
    this.history = [opened]; // the first state's name is the double's own
    this.suspensions = new Map();
    if (!atLeast(app.version, "24.2")) this.createTextLayer = undefined; // added in 24.2
  }

  childrenOf(parent) {
    return parent === this ? this.layers : parent.layers;
  }

  detach(layer) {
    if (!layer.parent) return;
    const list = this.childrenOf(layer.parent);
    list.splice(list.indexOf(layer), 1);
    layer.parent = null;
  }

  attach(layer, parent, index) {
    this.childrenOf(parent).splice(index, 0, layer);
    layer.parent = parent;
  }

  /** Records a change: one history state, unless a suspension coalesces it. */
  changed(name) {
    const open = [...this.suspensions.values()];
    if (open.length) open.forEach((s) => { s.dirty = true; });
    else this.history.push(name);
  }

  allLayers(list = this.layers) {
    return list.flatMap((l) => [l, ...(l.layers ? this.allLayers(l.layers) : [])]);
  }

  /** Inserts a new layer where Photoshop does: above the active layer, in its parent. */
  insertNew(layer) {
    const active = this.activeLayers[0];
    if (active && active.parent) {
      const siblings = this.childrenOf(active.parent);
      this.attach(layer, active.parent, siblings.indexOf(active));
    } else {
      this.attach(layer, this, 0);
    }
    this.activeLayers = [layer];
  }

  async createLayerGroup(options = {}) {
    this.app.guard("Document.createLayerGroup");
    checkLayerOptions("createLayerGroup", options, GROUP_OPTIONS);
    if (options.fromLayers !== undefined || options.mode !== undefined || options.color !== undefined) {
      throw new Error("double: createLayerGroup with fromLayers, mode or color is not modelled");
    }
    const doc = this.app.activeDocument; // see the header: not necessarily this one
    const group = new Layer(doc, { name: options.name || "Group 1", kind: "group", opacity: options.opacity, blendMode: options.blendMode });
    doc.insertNew(group);
    doc.changed("New Group");
    return group;
  }

  async createPixelLayer(options = {}) {
    this.app.guard("Document.createPixelLayer");
    const doc = this.app.activeDocument;
    const layer = new Layer(doc, { name: options.name || "Layer 1" });
    doc.insertNew(layer);
    doc.changed("New Layer");
    return layer;
  }

  /**
   * Document.createTextLayer (24.2): a point text layer above the active layer. Strict where the page
   * is silent: a fontName that is no installed font's PostScript name is refused.
   */
  async createTextLayer(options = {}) {
    this.app.guard("Document.createTextLayer");
    checkLayerOptions("createTextLayer", options, TEXT_OPTIONS);
    if (options.group !== undefined || options.mode !== undefined || options.color !== undefined) {
      throw new Error("double: createTextLayer with group, mode or color is not modelled");
    }
    const doc = this.app.activeDocument;
    const o = {
      contents: "Lorem Ipsum", fontName: "MyriadPro-Regular", fontSize: 12,
      position: { x: doc.width / 2, y: doc.height / 2 }, textColor: null, ...options,
    };
    if (typeof o.contents !== "string") throw new TypeError("createTextLayer: contents is a string");
    if (!this.app.fontByName(o.fontName)) throw new Error(`createTextLayer: no installed font "${o.fontName}"`);
    const max = 1296 * (doc.resolution / 72);
    if (typeof o.fontSize !== "number" || !(o.fontSize >= 0.01 && o.fontSize <= max)) {
      throw new RangeError(`createTextLayer: fontSize ${o.fontSize} is outside 0.01..${max} px`);
    }
    if (!o.position || !Number.isFinite(o.position.x) || !Number.isFinite(o.position.y)) {
      throw new TypeError("createTextLayer: position is {x, y} in pixels");
    }
    if (o.textColor === null) o.textColor = new SolidColor(); // black by default
    if (!(o.textColor instanceof SolidColor)) throw new TypeError("createTextLayer: textColor is a SolidColor");
    this.app.textLayers.push({ ...o, textColor: o.textColor.rgb.hexValue, documentID: doc.id });
    const layer = new Layer(doc, { name: options.name || o.contents.split("\r")[0], kind: "text", opacity: options.opacity, blendMode: options.blendMode });
    layer.text = textItem(layer, o, doc.resolution);
    doc.insertNew(layer);
    doc.changed("Type Tool");
    return layer;
  }

  /** Test set-up: a pixel layer whose rgba8 pixels cover `at` (stored in the document's depth). */
  addLayer({ name, at, rgba, background = false, parent = null }) {
    const layer = new Layer(this, { name, background });
    const b = bounds(at);
    const data = arrayFor(this.depth, rgba.length);
    for (let i = 0; i < rgba.length; i++) data[i] = this.depth === 32 ? rgba[i] / 255 : Math.round((rgba[i] * MAX[this.depth]) / 255);
    layer.pixels = { bounds: b, data: this.mode === constants.DocumentMode.GRAYSCALE ? toGray(data) : data };
    const target = parent || this;
    this.attach(layer, target, target === this && background ? this.layers.length : 0);
    this.activeLayers = [layer];
    return layer;
  }

  addGroup({ name, parent = null }) {
    const group = new Layer(this, { name, kind: "group" });
    this.attach(group, parent || this, 0);
    return group;
  }

  /** Composite of the visible pixel layers ("normal" blending, straight alpha), 0..1 floats. */
  composite() {
    const w = this.width;
    const h = this.height;
    const out = new Float64Array(w * h * 4);
    const stack = this.allLayers().filter((l) => l.kind === "pixel" && l.visible).reverse(); // bottom first
    const max = MAX[this.depth];
    for (const layer of stack) {
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const [r, g, b, a8] = layer.pixel(x, y);
          const a = a8 / max;
          if (a === 0) continue;
          const i = (y * w + x) * 4;
          const da = out[i + 3];
          const oa = a + da * (1 - a);
          out[i] = (r / max * a + out[i] * da * (1 - a)) / oa;
          out[i + 1] = (g / max * a + out[i + 1] * da * (1 - a)) / oa;
          out[i + 2] = (b / max * a + out[i + 2] * da * (1 - a)) / oa;
          out[i + 3] = oa;
        }
      }
    }
    return out;
  }

  /** A deep copy of the layer tree and pixels, for rolling back a suspension. */
  snapshot() {
    const copy = (layer) => ({
      layer,
      parent: layer.parent,
      name: layer.name,
      shown: layer.shown,
      pixels: layer.pixels ? { bounds: { ...layer.pixels.bounds }, data: layer.pixels.data.slice() } : null,
      children: layer.layers ? layer.layers.map(copy) : null,
    });
    return { top: this.layers.map(copy), active: [...this.activeLayers] };
  }

  restore(snap) {
    const rebuild = (entry) => {
      const { layer } = entry;
      layer.parent = entry.parent;
      layer.name = entry.name;
      layer.shown = entry.shown;
      layer.pixels = entry.pixels;
      if (entry.children) layer.layers = entry.children.map(rebuild);
      return layer;
    };
    this.layers = snap.top.map(rebuild);
    this.activeLayers = snap.active;
  }

  /** Returns nothing, as documented; closing changes Photoshop's state, so it needs the modal scope. */
  closeWithoutSaving() {
    this.app.guard("Document.closeWithoutSaving");
    this.app.close(this);
  }

  /** Test set-up: the user closes the document in Photoshop. */
  userCloses() {
    this.app.close(this);
  }
}

class Photoshop {
  /**
   * @param {object} [options]
   * @param {string} [options.version]  the Photoshop version (createTextLayer and textItem from 24.2)
   * @param {Array<[string, string, string]>} [options.fonts]  installed fonts: [family, style, postScriptName]
   */
  constructor({ version = "25.0.0", fonts = DEFAULT_FONTS } = {}) {
    this.version = version;
    this.fonts = fonts.map(([family, style, postScriptName]) => ({ family, style, postScriptName, name: `${family} ${style}`, typename: "TextFont" }));
    this.textLayers = []; // every createTextLayer call's options, textColor as its hex value
    this.nextId = 1;
    this.documents = [];
    this.activeDocument = null;
    this.liveImageData = new Set();
    this.calls = [];
    this.modal = null;
    this.cancelAfterChanges = Infinity;
    this.cancelNextRead = false;
    this.changes = 0;
    this.progress = [];
    Object.defineProperty(this.documents, "add", { value: (options) => this.addDocument(options) });
  }

  fontByName(postScriptName) {
    return this.fonts.find((f) => f.postScriptName === postScriptName) || null;
  }

  newDocument(options) {
    const doc = new Document(this, options);
    this.documents.push(doc);
    this.activeDocument = doc;
    return doc;
  }

  /**
   * Documents.add: the new document becomes the active one, as with File > New. A transparent fill
   * gives one empty ordinary layer (Photoshop's "Transparent" background contents: no Background
   * layer); white or black, an opaque Background layer.
   */
  async addDocument(options = {}) {
    this.guard("Documents.add");
    this.lastCreateOptions = { ...options };
    const o = createOptions(options);
    this.untitled = (this.untitled || 0) + 1;
    const doc = this.newDocument({
      width: o.width, height: o.height, depth: o.depth, mode: o.mode, resolution: o.resolution, profile: o.profile,
      title: o.name !== undefined ? String(o.name) : `Untitled-${this.untitled}`, opened: "New",
    });
    const layer = new Layer(doc, { name: o.fill === constants.DocumentFill.TRANSPARENT ? "Layer 1" : "Background", background: o.fill !== constants.DocumentFill.TRANSPARENT });
    if (layer.isBackgroundLayer) {
      const value = o.fill === constants.DocumentFill.WHITE ? MAX[o.depth] : 0;
      const data = arrayFor(o.depth, o.width * o.height * 4).fill(value);
      for (let i = 3; i < data.length; i += 4) data[i] = MAX[o.depth];
      layer.pixels = { bounds: { left: 0, top: 0, right: o.width, bottom: o.height }, data };
    }
    doc.attach(layer, doc, 0);
    doc.activeLayers = [layer];
    return doc;
  }

  close(doc) {
    const list = this.documents;
    if (!list.includes(doc)) throw new Error("the document is not open");
    list.splice(list.indexOf(doc), 1);
    if (this.activeDocument === doc) this.activeDocument = list[list.length - 1] || null;
  }

  /** Makes the user press Cancel on Photoshop's progress bar after `n` more document changes. */
  userCancelsAfter(n) {
    this.cancelAfterChanges = n;
  }

  /** Makes the user press Cancel on Photoshop's progress bar while the next pixels are read. */
  userCancelsReading() {
    this.cancelNextRead = true;
  }

  /** Document changes and pixel reads need a modal scope; after a user cancel they throw. */
  guard(what, { changes = true } = {}) {
    this.calls.push(what);
    if (!this.modal) throw new Error(`${what} needs core.executeAsModal`);
    if (!changes && this.cancelNextRead) {
      this.cancelNextRead = false;
      this.modal.cancelled = true;
    }
    if (this.modal.cancelled) throw new Error("Event: user cancelled the modal operation");
    if (changes) {
      this.changes++;
      if (this.changes > this.cancelAfterChanges) this.modal.cancelled = true;
      if (this.modal.cancelled) throw new Error("Event: user cancelled the modal operation");
    }
  }

  findDocument(id) {
    const doc = id === undefined || id < 0 ? this.activeDocument : this.documents.find((d) => d.id === id);
    if (!doc) throw new Error(`no document with id ${id}`);
    return doc;
  }

  module() {
    const ps = this;
    const imaging = {
      async getPixels(options) {
        ps.guard("imaging.getPixels", { changes: false });
        ps.lastGetPixels = { ...options };
        const doc = ps.findDocument(options.documentID);
        const own = imagingSpace(doc, "getPixels");
        const space = options.colorSpace || own;
        const gray = space === "Grayscale";
        if (space !== "RGB" && !(gray && own === "Grayscale")) {
          throw new Error(`double: ${space} pixels of a ${doc.mode} document are not modelled`);
        }
        if (options.componentSize !== undefined && options.componentSize !== -1 && options.componentSize !== doc.depth) {
          // Recent Photoshop versions fail when asked to convert the depth (e.g. 8 from a 16-bit document).
          throw new Error(`getPixels: componentSize ${options.componentSize} differs from the document's ${doc.depth}`);
        }
        const canvas = { left: 0, top: 0, right: doc.width, bottom: doc.height };
        const asked = options.sourceBounds ? intersect(bounds(options.sourceBounds), canvas) : canvas;
        const max = MAX[doc.depth];
        let components = 4;
        let content;
        let read;
        if (options.layerID !== undefined) {
          const layer = doc.allLayers().find((l) => l.id === options.layerID);
          if (!layer || layer.kind !== "pixel") throw new Error(`getPixels: layer ${options.layerID} is not a pixel layer`);
          content = layer.contentBounds();
          read = (x, y) => layer.pixel(x, y);
        } else {
          const only = doc.allLayers();
          const flat = doc.composite();
          components = only.length === 1 && only[0].isBackgroundLayer ? 3 : 4;
          content = components === 3 ? canvas : (() => {
            let box = null;
            for (let y = 0; y < doc.height; y++) for (let x = 0; x < doc.width; x++) {
              if (flat[(y * doc.width + x) * 4 + 3] > 0) {
                if (!box) box = { left: x, top: y, right: x + 1, bottom: y + 1 };
                else { box.left = Math.min(box.left, x); box.top = Math.min(box.top, y); box.right = Math.max(box.right, x + 1); box.bottom = Math.max(box.bottom, y + 1); }
              }
            }
            return box;
          })();
          read = (x, y) => {
            const i = (y * doc.width + x) * 4;
            return [0, 1, 2, 3].map((c) => (doc.depth === 32 ? flat[i + c] : Math.round(flat[i + c] * max)));
          };
        }
        // A gray document's own pixels: the gray value (kept as r = g = b) and alpha.
        const channels = gray ? (components === 4 ? [0, 3] : [0]) : [0, 1, 2, 3].slice(0, components);
        components = channels.length;
        const got = asked && content ? intersect(asked, content) : null;
        const sourceBounds = got || { left: 0, top: 0, right: 0, bottom: 0 };
        const w = sourceBounds.right - sourceBounds.left;
        const h = sourceBounds.bottom - sourceBounds.top;
        const data = arrayFor(doc.depth, w * h * components);
        for (let y = 0; y < h; y++) {
          for (let x = 0; x < w; x++) {
            const px = read(sourceBounds.left + x, sourceBounds.top + y);
            for (let c = 0; c < components; c++) data[(y * w + x) * components + c] = px[channels[c]];
          }
        }
        // "If the requested color space is different from the source document, then the working
        // color profile for that color space is used."
        const profile = options.colorProfile || (space === own ? "Document profile" : `Working ${space} profile`);
        const imageData = new ImageData(ps.liveImageData, {
          width: w, height: h, components, componentSize: doc.depth, data, colorProfile: profile, colorSpace: space,
        });
        return { imageData, sourceBounds, level: 0 };
      },

      async createImageDataFromBuffer(array, options) {
        const { width, height, components, colorSpace, colorProfile } = options;
        if (!width || !height || !components || !colorSpace) throw new Error("createImageDataFromBuffer: width, height, components and colorSpace are required");
        if (array.length !== width * height * components) throw new Error(`createImageDataFromBuffer: ${array.length} elements for ${width}×${height}×${components}`);
        const componentSize = array instanceof Uint8Array ? 8 : array instanceof Uint16Array ? 16 : array instanceof Float32Array ? 32 : 0;
        if (!componentSize) throw new Error("createImageDataFromBuffer: Uint8Array, Uint16Array or Float32Array expected");
        return new ImageData(ps.liveImageData, { width, height, components, componentSize, data: array.slice(), colorProfile, colorSpace });
      },

      async putPixels(options) {
        ps.guard("imaging.putPixels");
        const doc = ps.findDocument(options.documentID);
        imagingSpace(doc, "putPixels");
        const layer = doc.allLayers().find((l) => l.id === options.layerID);
        if (!layer || layer.kind !== "pixel") throw new Error(`putPixels: layer ${options.layerID} is not a pixel layer`);
        const img = options.imageData;
        if (!img || img.disposed) throw new Error("putPixels: image data missing or disposed");
        // Strict where the documentation is silent: the panel writes at the document's depth, in sRGB.
        if (img.componentSize !== doc.depth) throw new Error(`double: putPixels of ${img.componentSize}-bit data into a ${doc.depth}-bit document`);
        if (img.colorSpace !== "RGB" || img.colorProfile !== SRGB || img.components !== 4) throw new Error("double: the panel writes sRGB RGBA data");
        const left = options.targetBounds ? options.targetBounds.left : 0;
        const top = options.targetBounds ? options.targetBounds.top : 0;
        if (options.replace === false) throw new Error("double: only replace: true is modelled");
        // "Photoshop will perform color conversions when needed": into a gray document, as its gray.
        const data = doc.mode === constants.DocumentMode.GRAYSCALE ? toGray(img.data) : img.data.slice();
        layer.pixels = { bounds: { left, top, right: left + img.width, bottom: top + img.height }, data };
        doc.changed(options.commandName || "Put Pixels");
      },
    };

    const core = {
      async executeAsModal(target, options = {}) {
        if (!options.commandName) throw new Error("executeAsModal: commandName is required");
        if (ps.modal) throw Object.assign(new Error("host is in a modal state"), { number: 9 });
        const scope = { cancelled: false, commandName: options.commandName, autoClose: new Set() };
        ps.modal = scope;
        const context = {
          get isCancelled() { return scope.cancelled; },
          onCancel: null,
          reportProgress: (p) => ps.progress.push({ ...p }),
          hostControl: {
            async suspendHistory({ documentID, name }) {
              const doc = ps.findDocument(documentID);
              const id = `s${ps.nextId++}`;
              doc.suspensions.set(id, { name, dirty: false, snapshot: doc.snapshot() });
              return id;
            },
            async resumeHistory(id, commit = true) {
              const doc = ps.documents.find((d) => d.suspensions.has(id));
              if (!doc) throw new Error(`resumeHistory: unknown suspension ${id}`);
              const s = doc.suspensions.get(id);
              doc.suspensions.delete(id);
              if (!commit) doc.restore(s.snapshot);
              else if (s.dirty) doc.history.push(s.name);
            },
            // "register one or more documents to be automatically closed without saving when the modal scope ends"
            async registerAutoCloseDocument(documentID) {
              if (typeof documentID !== "number") throw new Error("registerAutoCloseDocument: a document ID is required");
              scope.autoClose.add(ps.findDocument(documentID).id);
            },
            async unregisterAutoCloseDocument(documentID) {
              if (!scope.autoClose.delete(documentID)) throw new Error(`double: document ${documentID} was not registered for automatic closing`);
            },
          },
        };
        try {
          const value = await target(context, options.descriptor);
          for (const doc of ps.documents) for (const id of [...doc.suspensions.keys()]) await context.hostControl.resumeHistory(id, true);
          return value;
        } catch (error) {
          // "If the target function exits via an exception, then all unsuspended history states are cancelled."
          for (const doc of ps.documents) for (const id of [...doc.suspensions.keys()]) await context.hostControl.resumeHistory(id, false);
          throw error;
        } finally {
          // Closed meanwhile (the documentation does not say what happens then): nothing left to close.
          for (const id of scope.autoClose) {
            const doc = ps.documents.find((d) => d.id === id);
            if (doc) ps.close(doc);
          }
          ps.modal = null;
        }
      },
    };

    const app = {
      get activeDocument() { return ps.activeDocument; },
      set activeDocument(doc) {
        ps.calls.push("app.activeDocument=");
        if (!ps.documents.includes(doc)) throw new Error("activeDocument: the document is not open");
        ps.activeDocument = doc;
      },
      get documents() { return ps.documents; },
      get fonts() {
        // TextFonts: indexable, with length and getByName (the first font with that PostScript name)
        const list = ps.fonts.slice();
        Object.defineProperty(list, "getByName", { value: (name) => ps.fontByName(name) });
        Object.defineProperty(list, "typename", { value: "TextFonts" });
        return list;
      },
      SolidColor,
    };

    return { app, core, imaging, constants, action: { batchPlay: async () => { throw new Error("double: batchPlay is not modelled"); } } };
  }
}

/** Flat rgba8 test image where each pixel's bytes follow from its position and a seed. */
function pattern(width, height, seed = 1, alpha = null) {
  const out = new Uint8Array(width * height * 4);
  for (let i = 0; i < width * height; i++) {
    out[i * 4] = (i * 7 + seed * 31) & 255;
    out[i * 4 + 1] = (i * 13 + seed * 17) & 255;
    out[i * 4 + 2] = (i * 29 + seed * 5) & 255;
    out[i * 4 + 3] = alpha === null ? 255 : alpha;
  }
  return out;
}

module.exports = { Photoshop, SolidColor, constants, SRGB, pattern, DEFAULT_FONTS };
