// LayerBridge wire protocol, version 1 (docs/protocol.md): constants, parameter checks,
// binary framing. No Photoshop and no network here, so Node tests load it as is.
"use strict";

const PROTOCOL = 1;
const CLIENT_NAME = "photoshop-uxp/0.1.0";
const DEFAULT_ADDRESS = "127.0.0.1:7860";
const CHUNK_BYTES = 4 * 1024 * 1024;
const HEADER_BYTES = 12;
const MAGIC = [0x4c, 0x42, 0x50, 0x58]; // "LBPX"

/** Freezes an object and everything in it. */
function deepFreeze(value) {
  if (value && typeof value === "object") {
    Object.values(value).forEach(deepFreeze);
    Object.freeze(value);
  }
  return value;
}

// What jobs may ask for on a server that does not announce it (before `job_options`, docs/protocol.md §5): the
// values this panel offered before servers announced them. A preset's levers are then unknown (null).
// Mirrors FALLBACK_JOB_OPTIONS in krita_plugin/layerbridge/protocol.py.
const FALLBACK_JOB_OPTIONS = deepFreeze({
  presets: ["best", "balanced", "fast"].map((name) => ({
    name,
    label: name.charAt(0).toUpperCase() + name.slice(1),
    steps: null,
    cfg_until: null,
    caption_tokens: null,
    name_layers: null,
    summary: "",
  })),
  preset: "best",
  layers: { min: 2, max: 10, default: 4 },
  resolution: { choices: [640, 1024], default: 640 },
  steps: { min: 2, max: 100, default: null },
  cfg_scale: { min: 1.0, max: 20.0, default: 4.0 },
  caption_language: { choices: ["en", "zh"], default: "en" },
});
const LANGUAGE_NAMES = Object.freeze({ en: "English", zh: "Chinese" }); // a code not here is shown as it is

const DEFAULT_PARAMS = Object.freeze({
  layers: FALLBACK_JOB_OPTIONS.layers.default,
  resolution: FALLBACK_JOB_OPTIONS.resolution.default,
  steps: FALLBACK_JOB_OPTIONS.steps.default, // null: the preset's count
  prompt: "",
  seed: null,
  preset: FALLBACK_JOB_OPTIONS.preset,
});

const isNumber = (v) => typeof v === "number" && Number.isFinite(v);
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const copy = (v) => JSON.parse(JSON.stringify(v));

/** {min, max, default}: the announced range when it is one, its default kept inside it (null: the preset's). */
function announcedRange(announced, fallback) {
  if (!isObject(announced) || !isNumber(announced.min) || !isNumber(announced.max) || announced.min > announced.max) {
    return { ...fallback };
  }
  const { min, max } = announced;
  // null: the preset's (or the server's) choice; absent: the fallback's
  let value = announced.default;
  if (!("default" in announced) || !(value === null || (isNumber(value) && value >= min && value <= max))) {
    value = fallback.default === null ? null : Math.min(Math.max(fallback.default, min), max);
  }
  return { min, max, default: value };
}

/** {choices, default}: the announced choices when there are some, the default one of them. */
function announcedChoice(announced, fallback) {
  const choices = isObject(announced) ? announced.choices : undefined;
  const scalar = (c) => isNumber(c) || typeof c === "string";
  if (!Array.isArray(choices) || !choices.length || !choices.every(scalar)) return copy(fallback);
  let value = announced.default;
  if (!scalar(value) || !choices.includes(value)) value = choices.includes(fallback.default) ? fallback.default : choices[0];
  return { choices: [...choices], default: value };
}

/** The announced presets (each with a name), in order, every field present. */
function announcedPresets(announced) {
  if (!Array.isArray(announced)) return copy(FALLBACK_JOB_OPTIONS.presets);
  const out = [];
  for (const p of announced) {
    if (!isObject(p) || typeof p.name !== "string" || !p.name || out.some((q) => q.name === p.name)) continue;
    out.push({
      name: p.name,
      label: typeof p.label === "string" && p.label ? p.label : p.name.charAt(0).toUpperCase() + p.name.slice(1),
      steps: isNumber(p.steps) ? p.steps : null,
      cfg_until: isNumber(p.cfg_until) ? p.cfg_until : null,
      caption_tokens: isNumber(p.caption_tokens) ? p.caption_tokens : null,
      name_layers: typeof p.name_layers === "boolean" ? p.name_layers : null,
      summary: typeof p.summary === "string" ? p.summary : "",
    });
  }
  return out.length ? out : copy(FALLBACK_JOB_OPTIONS.presets);
}

/**
 * What jobs may ask for on this server, to build the controls from: the `job_options` of its hello
 * (docs/protocol.md §5), in the same shape, every part present. A server older than `job_options`
 * (or a part it announces malformed) gets FALLBACK_JOB_OPTIONS's. Mirrors job_options in
 * krita_plugin/layerbridge/protocol.py.
 * @param {object|null} hello  the server's hello, or null when none was read
 */
function jobOptions(hello) {
  const announced = isObject(hello) && isObject(hello.job_options) ? hello.job_options : {};
  const fallback = FALLBACK_JOB_OPTIONS;
  const presets = announcedPresets(announced.presets);
  const names = presets.map((p) => p.name);
  let preset = announced.preset;
  if (!names.includes(preset)) preset = names.includes(fallback.preset) ? fallback.preset : names[0];
  return {
    presets,
    preset,
    layers: announcedRange(announced.layers, fallback.layers),
    resolution: announcedChoice(announced.resolution, fallback.resolution),
    steps: announcedRange(announced.steps, fallback.steps),
    cfg_scale: announcedRange(announced.cfg_scale, fallback.cfg_scale),
    caption_language: announcedChoice(announced.caption_language, fallback.caption_language),
  };
}

/**
 * What this server does beyond the basic job, from its hello's `capabilities` (docs/protocol.md §5):
 * `text_layers` (the job option, and each result layer's text blocks) and `split_elements` (the job
 * option, the result's group hierarchy and the split task). A job sends these options only to a
 * server that announces them: an older one refuses unknown fields.
 * @param {object|null} hello
 */
function features(hello) {
  const caps = isObject(hello) && Array.isArray(hello.capabilities) ? hello.capabilities : [];
  return { text_layers: caps.includes("text_layers"), split_elements: caps.includes("split_elements") };
}

/** "640 or 1024", "one of 512, 640, 1024". */
function listed(choices) {
  return choices.length === 2 ? `${choices[0]} or ${choices[1]}` : `one of ${choices.join(", ")}`;
}

class LayerBridgeError extends Error {
  /**
   * @param {string} code  stable code from the protocol's error table, or a client-side one
   * @param {string} message  for people
   * @param {object} [details]  anything worth copying into a bug report
   */
  constructor(code, message, details = {}) {
    super(message);
    this.name = "LayerBridgeError";
    this.code = code;
    this.details = details;
  }
}

/** Parses "host:port" (or a ws:// / http:// URL) into {host, port}; throws on anything else. */
function parseAddress(text) {
  const raw = String(text || "").trim() || DEFAULT_ADDRESS;
  const stripped = raw.replace(/^(wss?|https?):\/\//i, "").replace(/\/.*$/, "");
  const match = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(stripped);
  if (!match) throw new LayerBridgeError("bad_address", `"${raw}" is not a server address (expected 127.0.0.1:7860)`);
  const port = match[2] === undefined ? 7860 : Number(match[2]);
  if (port < 1 || port > 65535) throw new LayerBridgeError("bad_address", `port ${port} is out of range`);
  // UXP resolves "localhost" unreliably (IPv6 first on some systems); the server listens on IPv4.
  const host = match[1].toLowerCase() === "localhost" ? "127.0.0.1" : match[1];
  return { host, port };
}

/** The WebSocket URL for an address. The token travels in the first message, not in the URL. */
function socketUrl(address) {
  const { host, port } = parseAddress(address);
  return `ws://${host}:${port}/v1/ws`;
}

function intInRange(value, name, min, max, errors) {
  const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
  if (!Number.isInteger(n) || n < min || n > max) {
    errors.push(`${name} must be a whole number from ${min} to ${max}`);
    return undefined;
  }
  return n;
}

/**
 * Checks the panel's parameters against what the server accepts (`options`, from jobOptions) and
 * returns the `params` object to submit. Throws LayerBridgeError("invalid_params") listing every
 * problem at once.
 */
function buildParams(input, name = "", options = FALLBACK_JOB_OPTIONS) {
  const errors = [];
  const src = { ...DEFAULT_PARAMS, ...input };
  const { layers, resolution, steps } = options;
  const presets = options.presets.map((p) => p.name);
  const params = {
    layers: intInRange(src.layers, "Layers", layers.min, layers.max, errors),
    resolution: Number(src.resolution),
    steps: src.steps === null || src.steps === undefined || String(src.steps).trim() === ""
      ? null // auto: the server runs the preset's count
      : intInRange(src.steps, "Steps", steps.min, steps.max, errors),
    prompt: String(src.prompt ?? ""),
    preset: String(src.preset || options.preset),
    name: String(name || "").slice(0, 200),
  };
  if (!resolution.choices.includes(params.resolution)) errors.push(`Resolution must be ${listed(resolution.choices)}`);
  if (params.prompt.length > 2000) errors.push("Prompt must be at most 2000 characters");
  if (!presets.includes(params.preset)) {
    errors.push(`Quality must be ${listed(options.presets.map((p) => p.label))}`);
  }
  const seedText = src.seed === null || src.seed === undefined ? "" : String(src.seed).trim();
  if (seedText === "") {
    params.seed = null;
  } else {
    params.seed = intInRange(seedText, "Seed", 0, 4294967295, errors);
  }
  // Booleans the server announced (see features): sent when the panel gives them.
  for (const key of ["text_layers", "split_elements"]) {
    if (typeof src[key] === "boolean") params[key] = src[key];
  }
  if (errors.length) throw new LayerBridgeError("invalid_params", errors.join("; "), { errors });
  return params;
}

/** The split task's `params` (docs/protocol.md, the split task): the layer's name and whether to read its text. */
function splitParams(name = "", textLayers = true) {
  return { name: String(name || "").slice(0, 200), text_layers: Boolean(textLayers) };
}

/** Checks the server's `hello`; throws protocol_mismatch with what to update. */
function checkHello(hello) {
  if (!hello || hello.type !== "hello") throw new LayerBridgeError("bad_handshake", "the server did not answer the handshake");
  const max = Number(hello.protocol);
  const min = Number(hello.min_protocol ?? hello.protocol);
  if (PROTOCOL > max) {
    throw new LayerBridgeError("protocol_mismatch",
      `This panel speaks protocol ${PROTOCOL} but the server (LayerBridge ${hello.version}) only speaks up to ${max}: update the LayerBridge server.`);
  }
  if (PROTOCOL < min) {
    throw new LayerBridgeError("protocol_mismatch",
      `The server (LayerBridge ${hello.version}) needs protocol ${min} or newer; this panel speaks ${PROTOCOL}: install the panel that comes with that server.`);
  }
  return hello;
}

/** One binary frame: 12-byte header (magic, transfer, offset; little-endian) + chunk. */
function encodeFrame(transfer, offset, chunk) {
  if (!chunk.byteLength || chunk.byteLength > CHUNK_BYTES) throw new RangeError(`chunk of ${chunk.byteLength} bytes`);
  const frame = new Uint8Array(HEADER_BYTES + chunk.byteLength);
  frame.set(MAGIC, 0);
  const view = new DataView(frame.buffer);
  view.setUint32(4, transfer >>> 0, true);
  view.setUint32(8, offset >>> 0, true);
  frame.set(chunk, HEADER_BYTES);
  return frame;
}

/** Parses a received frame (ArrayBuffer or view); the chunk is a view, not a copy. */
function decodeFrame(data) {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data.buffer ? data.buffer : data, data.byteOffset || 0, data.byteLength);
  if (bytes.byteLength <= HEADER_BYTES || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new LayerBridgeError("bad_frame", `not a LayerBridge pixel frame (${bytes.byteLength} bytes)`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    transfer: view.getUint32(4, true),
    offset: view.getUint32(8, true),
    chunk: bytes.subarray(HEADER_BYTES),
  };
}

/** Splits `bytes` into frames of at most CHUNK_BYTES pixel bytes each (never an empty one). */
function* frames(transfer, bytes, chunkBytes = CHUNK_BYTES) {
  for (let offset = 0; offset < bytes.byteLength; offset += chunkBytes) {
    yield encodeFrame(transfer, offset, bytes.subarray(offset, Math.min(offset + chunkBytes, bytes.byteLength)));
  }
}

/** Reassembles one transfer from chunks that may come in any order. */
class Transfer {
  constructor(bytes) {
    this.data = new Uint8Array(bytes);
    this.received = 0;
  }

  add(offset, chunk) {
    if (offset + chunk.byteLength > this.data.byteLength) {
      throw new LayerBridgeError("bad_frame", `chunk at ${offset} (+${chunk.byteLength}) overruns a ${this.data.byteLength}-byte transfer`);
    }
    this.data.set(chunk, offset);
    this.received += chunk.byteLength;
  }

  get complete() {
    return this.received >= this.data.byteLength;
  }
}

const STAGE_NAMES = {
  queued: "Waiting in queue",
  loading_model: "Loading model",
  captioning: "Describing the image",
  encoding: "Encoding",
  denoising: "Denoising",
  decoding: "Decoding layers",
  finishing: "Finishing",
  done: "Done",
  failed: "Failed",
  cancelled: "Cancelled",
};

function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${s % 60} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** One line for the progress bar, e.g. "Denoising · step 12 of 50 · 31 s left". */
function describeProgress(p) {
  // finishing: the server's own words (naming the layers, restoring full resolution)
  const parts = [(p.stage === "finishing" && p.message) || STAGE_NAMES[p.stage] || p.stage || "Working"];
  if (p.state === "queued" && p.position > 0) parts.push(`position ${p.position}`);
  if (p.total > 0 && p.stage === "denoising") parts.push(`step ${p.step} of ${p.total}`);
  const left = formatDuration(p.eta_s);
  if (left) parts.push(`${left} left`);
  return parts.join(" · ");
}

/** Overall fraction done (0..1) for a progress bar; denoising dominates the time. */
function progressFraction(p) {
  if (p.state === "done") return 1;
  if (p.total > 0 && p.stage === "denoising") return 0.1 + 0.8 * (p.step / p.total);
  return { queued: 0, loading_model: 0.02, captioning: 0.05, encoding: 0.08, decoding: 0.92, finishing: 0.96 }[p.stage] ?? 0;
}

module.exports = {
  PROTOCOL,
  CLIENT_NAME,
  DEFAULT_ADDRESS,
  DEFAULT_PARAMS,
  FALLBACK_JOB_OPTIONS,
  LANGUAGE_NAMES,
  CHUNK_BYTES,
  HEADER_BYTES,
  LayerBridgeError,
  parseAddress,
  socketUrl,
  buildParams,
  splitParams,
  features,
  jobOptions,
  checkHello,
  encodeFrame,
  decodeFrame,
  frames,
  Transfer,
  describeProgress,
  progressFraction,
  formatDuration,
};
