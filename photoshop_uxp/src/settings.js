// Panel settings kept between sessions: parameters and server address in localStorage, the token
// in UXP's secureStorage (encrypted per user) when the host has it.
"use strict";

const { DEFAULT_ADDRESS, DEFAULT_PARAMS } = require("./protocol.js");

const SETTINGS_KEY = "layerbridge.settings.v1";
const TOKEN_KEY = "layerbridge.token";

const DEFAULTS = Object.freeze({
  address: DEFAULT_ADDRESS,
  layers: DEFAULT_PARAMS.layers,
  resolution: DEFAULT_PARAMS.resolution,
  steps: "", // as typed; empty: auto, the preset's count
  preset: DEFAULT_PARAMS.preset,
  prompt: "",
  seed: "",
  textLayers: true, // "Text as editable text": text blocks become text layers (job option text_layers)
  splitElements: true, // "One layer per element": each model layer split into its elements (split_elements)
});

/** Reads saved settings; anything missing or unreadable falls back to the defaults. */
function loadSettings(storage) {
  let saved = {};
  try {
    saved = JSON.parse(storage.getItem(SETTINGS_KEY) || "{}") || {};
  } catch (_) {
    saved = {};
  }
  // Version 1 stored steps as a number, its default (50) included: that is auto now, so the preset decides.
  if (typeof saved.steps === "number") saved.steps = saved.steps === 50 ? "" : String(saved.steps);
  const out = { ...DEFAULTS };
  for (const key of Object.keys(DEFAULTS)) {
    if (saved[key] !== undefined && saved[key] !== null && typeof saved[key] === typeof DEFAULTS[key]) out[key] = saved[key];
  }
  return out;
}

function saveSettings(storage, settings) {
  const out = {};
  for (const key of Object.keys(DEFAULTS)) if (settings[key] !== undefined) out[key] = settings[key];
  storage.setItem(SETTINGS_KEY, JSON.stringify(out));
}

/** Text from secureStorage's bytes; tokens are ASCII, so no TextDecoder is needed where UXP lacks it. */
function bytesToText(value) {
  if (typeof value === "string") return value;
  if (typeof TextDecoder === "function") return new TextDecoder().decode(value);
  return Array.from(value, (b) => String.fromCharCode(b)).join("");
}

/** The token store: secureStorage in UXP, localStorage elsewhere. */
function tokenStore(secureStorage, storage) {
  if (secureStorage && typeof secureStorage.getItem === "function") {
    return {
      async get() {
        const value = await secureStorage.getItem(TOKEN_KEY);
        if (!value) return "";
        return bytesToText(value);
      },
      async set(token) {
        if (token) await secureStorage.setItem(TOKEN_KEY, token);
        else await secureStorage.removeItem(TOKEN_KEY);
      },
    };
  }
  return {
    async get() {
      return storage.getItem(TOKEN_KEY) || "";
    },
    async set(token) {
      if (token) storage.setItem(TOKEN_KEY, token);
      else storage.removeItem(TOKEN_KEY);
    },
  };
}

module.exports = { DEFAULTS, SETTINGS_KEY, TOKEN_KEY, loadSettings, saveSettings, tokenStore };
