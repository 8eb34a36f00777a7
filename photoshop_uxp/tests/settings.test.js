"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { DEFAULTS, SETTINGS_KEY, loadSettings, saveSettings, tokenStore } = require("../src/settings.js");
const { doneLine, modelLine } = require("../src/ui.js");

function memoryStorage() {
  const map = new Map();
  return {
    getItem: (k) => (map.has(k) ? map.get(k) : null),
    setItem: (k, v) => map.set(k, String(v)),
    removeItem: (k) => map.delete(k),
    map,
  };
}

test("settings: defaults, round trip, bad or foreign values ignored", () => {
  const storage = memoryStorage();
  assert.deepEqual(loadSettings(storage), DEFAULTS);
  saveSettings(storage, { ...DEFAULTS, layers: 7, prompt: "poster", address: "127.0.0.1:7999", unrelated: 1 });
  assert.deepEqual(loadSettings(storage), { ...DEFAULTS, layers: 7, prompt: "poster", address: "127.0.0.1:7999" });
  assert.equal(JSON.parse(storage.getItem(SETTINGS_KEY)).unrelated, undefined);
  storage.setItem(SETTINGS_KEY, "{not json");
  assert.deepEqual(loadSettings(storage), DEFAULTS);
  assert.equal(DEFAULTS.steps, "", "steps start on auto");
  assert.deepEqual([DEFAULTS.textLayers, DEFAULTS.splitElements], [true, true], "both options on by default");
  saveSettings(storage, { ...DEFAULTS, textLayers: false });
  assert.deepEqual(loadSettings(storage), { ...DEFAULTS, textLayers: false }, "remembered");
  storage.setItem(SETTINGS_KEY, JSON.stringify({ splitElements: "no" }));
  assert.equal(loadSettings(storage).splitElements, true, "a foreign value is ignored");
  // version 1 kept steps as a number: its old default 50 reads as auto, a count the user chose is kept
  storage.setItem(SETTINGS_KEY, JSON.stringify({ layers: "many", steps: 20 }));
  assert.deepEqual(loadSettings(storage), { ...DEFAULTS, steps: "20" });
  storage.setItem(SETTINGS_KEY, JSON.stringify({ steps: 50, preset: "fast" }));
  assert.deepEqual(loadSettings(storage), { ...DEFAULTS, steps: "", preset: "fast" });
  saveSettings(storage, { ...DEFAULTS, steps: "50" });
  assert.equal(loadSettings(storage).steps, "50");
});

test("token: secureStorage when there is one (bytes back), localStorage otherwise; never in settings", async () => {
  const secret = new Map();
  const secure = {
    getItem: async (k) => (secret.has(k) ? new TextEncoder().encode(secret.get(k)) : null),
    setItem: async (k, v) => { secret.set(k, v); },
    removeItem: async (k) => { secret.delete(k); },
  };
  const storage = memoryStorage();
  const store = tokenStore(secure, storage);
  assert.equal(await store.get(), "");
  await store.set("abc123");
  assert.equal(await store.get(), "abc123");
  assert.equal([...storage.map.values()].join().includes("abc123"), false);
  await store.set("");
  assert.equal(await store.get(), "");

  const plain = tokenStore(null, storage);
  await plain.set("xyz");
  assert.equal(await plain.get(), "xyz");
});

test("model state line", () => {
  assert.equal(modelLine({ model: { state: "ready" }, device: { kind: "cuda", name: "NVIDIA H200" } }), "Model ready on NVIDIA H200");
  assert.equal(modelLine({ model: { state: "downloading", bytes_done: 1.2e9, bytes_total: 57e9 } }), "Downloading model 1.2 of 57.0 GB (2%)");
  assert.equal(modelLine({ model: { state: "failed", error: "disk full" } }), "Model failed to load: disk full");
  assert.equal(modelLine({ model: { state: "not_loaded" }, device: { kind: "cpu", name: "CPU" } }), "Model loads on first use on CPU");
  assert.equal(modelLine(null), "");
});

test("the line that says where the layers went", () => {
  const source = { document: { name: "Poster" } };
  const plan = { layers: [1, 2, 3], groupName: "Poster layers", newDocument: null };
  assert.equal(doneLine(source, plan, 12), "Added 3 layers in “Poster layers” (12 s). One Undo removes them.");
  assert.equal(doneLine(source, { ...plan, newDocument: "Poster (layers)" }, 12),
    "“Poster” was closed during the decomposition: the 3 layers are in a new document, “Poster (layers)” (12 s).");
});
