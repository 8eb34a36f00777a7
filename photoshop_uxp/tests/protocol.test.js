"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const p = require("../src/protocol.js");

// The same cases as the Krita plugin's job_options (tests/krita/test_krita_job_options.py).
const CASES = JSON.parse(fs.readFileSync(path.resolve(__dirname, "..", "..", "tests", "job_options_cases.json"), "utf8")).cases;

test("addresses: host:port, URLs, localhost mapped to 127.0.0.1, errors", () => {
  assert.deepEqual(p.parseAddress("127.0.0.1:7860"), { host: "127.0.0.1", port: 7860 });
  assert.deepEqual(p.parseAddress(""), { host: "127.0.0.1", port: 7860 });
  assert.deepEqual(p.parseAddress("http://localhost:9000/v1"), { host: "127.0.0.1", port: 9000 });
  assert.deepEqual(p.parseAddress("[::1]:7861"), { host: "[::1]", port: 7861 });
  assert.equal(p.socketUrl(" 127.0.0.1:7999 "), "ws://127.0.0.1:7999/v1/ws");
  assert.throws(() => p.parseAddress("127.0.0.1:99999"), { code: "bad_address" });
  assert.throws(() => p.parseAddress("not an address"), { code: "bad_address" });
});

test("parameters: defaults, coercion from text fields, every range error at once", () => {
  assert.deepEqual(p.buildParams({}, "Poster"), {
    layers: 4, resolution: 640, steps: null, prompt: "", preset: "best", name: "Poster", seed: null,
  });
  // Steps left empty (auto) is null: the server runs the chosen preset's count
  assert.equal(p.buildParams({ steps: " ", preset: "fast" }).steps, null);
  assert.equal(p.buildParams({ steps: "12", preset: "fast" }).steps, 12);
  const fromFields = p.buildParams({ layers: "10", resolution: "1024", steps: "2", seed: " 42 ", prompt: "a cat" });
  assert.equal(fromFields.layers, 10);
  assert.equal(fromFields.resolution, 1024);
  assert.equal(fromFields.steps, 2);
  assert.equal(fromFields.seed, 42);
  assert.equal(p.buildParams({ seed: "4294967295" }).seed, 4294967295);
  assert.throws(() => p.buildParams({ layers: 1, resolution: 800, steps: 101, seed: "-1", prompt: "x".repeat(2001) }), (e) => {
    assert.equal(e.code, "invalid_params");
    assert.equal(e.details.errors.length, 5);
    assert.match(e.message, /Layers must be a whole number from 2 to 10/);
    assert.match(e.message, /Resolution must be 640 or 1024/);
    return true;
  });
  assert.throws(() => p.buildParams({ layers: 2.5 }), { code: "invalid_params" });
});

test("features: text_layers and split_elements from the hello's capabilities; sent only when given", () => {
  assert.deepEqual(p.features(null), { text_layers: false, split_elements: false });
  assert.deepEqual(p.features({ capabilities: ["http", "text_layers"] }), { text_layers: true, split_elements: false });
  assert.deepEqual(p.features({ capabilities: ["text_layers", "split_elements"] }), { text_layers: true, split_elements: true });
  const plain = p.buildParams({}, "Poster");
  assert.ok(!("text_layers" in plain) && !("split_elements" in plain), "an older server refuses unknown fields");
  const both = p.buildParams({ text_layers: false, split_elements: true }, "Poster");
  assert.deepEqual([both.text_layers, both.split_elements], [false, true]);
  assert.deepEqual(p.splitParams("Logo", false), { name: "Logo", text_layers: false });
  assert.deepEqual(p.splitParams(), { name: "", text_layers: true });
});

test("job options: read from the hello as announced, the panel's own for an older server", () => {
  for (const { case: name, hello, options } of CASES) {
    const before = JSON.stringify(hello);
    assert.deepEqual(p.jobOptions(hello), options, name);
    assert.equal(JSON.stringify(hello), before, `${name}: the hello is left as it was`);
  }
  assert.deepEqual(p.jobOptions({ type: "hello", protocol: 1 }), p.FALLBACK_JOB_OPTIONS);
  // what comes back is the caller's to change; the fallback stays as it is
  const mine = p.jobOptions(null);
  mine.layers.max = 99;
  mine.presets.length = 0;
  assert.equal(p.FALLBACK_JOB_OPTIONS.layers.max, 10);
  assert.equal(p.jobOptions(null).presets.length, 3);
  assert.ok(Object.isFrozen(p.FALLBACK_JOB_OPTIONS.presets[0]));
  assert.deepEqual(Object.keys(p.LANGUAGE_NAMES), p.FALLBACK_JOB_OPTIONS.caption_language.choices);
});

test("parameters: checked against the options the server announced", () => {
  const other = CASES.find((c) => c.case === "a server with other options").options;
  assert.deepEqual(p.buildParams({ layers: 6, resolution: "512", preset: "draft", steps: "40" }, "", other),
    { layers: 6, resolution: 512, steps: 40, prompt: "", preset: "draft", name: "", seed: null });
  assert.throws(() => p.buildParams({ layers: 10, resolution: 2048, preset: "fast", steps: "2" }, "", other), (e) => {
    assert.deepEqual(e.details.errors, [
      "Layers must be a whole number from 3 to 6",
      "Steps must be a whole number from 4 to 40",
      "Resolution must be one of 512, 640, 1024",
      "Quality must be Best or Draft",
    ]);
    return true;
  });
  // this panel's own options, for an older server, are today's: 512 and "draft" are refused there
  assert.throws(() => p.buildParams({ resolution: 512 }), /Resolution must be 640 or 1024/);
  assert.throws(() => p.buildParams({ preset: "draft" }), /Quality must be one of Best, Balanced, Fast/);
});

test("handshake: accepts a compatible hello, says which side to update otherwise", () => {
  assert.equal(p.checkHello({ type: "hello", protocol: 1, min_protocol: 1, version: "0.1.0" }).protocol, 1);
  assert.equal(p.checkHello({ type: "hello", protocol: 3, min_protocol: 1, version: "0.9" }).protocol, 3);
  assert.throws(() => p.checkHello({ type: "hello", protocol: 0, min_protocol: 0, version: "0.0.1" }),
    (e) => e.code === "protocol_mismatch" && /update the LayerBridge server/.test(e.message));
  assert.throws(() => p.checkHello({ type: "hello", protocol: 3, min_protocol: 2, version: "2.0" }),
    (e) => e.code === "protocol_mismatch" && /install the panel/.test(e.message));
  assert.throws(() => p.checkHello({ type: "status" }), { code: "bad_handshake" });
});

test("frames: 12-byte little-endian header, chunks of at most 4 MiB, none empty", () => {
  const chunk = Uint8Array.from([1, 2, 3]);
  const frame = p.encodeFrame(0x01020304, 0x0a0b0c0d, chunk);
  assert.deepEqual([...frame.subarray(0, 12)], [0x4c, 0x42, 0x50, 0x58, 4, 3, 2, 1, 0x0d, 0x0c, 0x0b, 0x0a]);
  const back = p.decodeFrame(frame.buffer);
  assert.equal(back.transfer, 0x01020304);
  assert.equal(back.offset, 0x0a0b0c0d);
  assert.deepEqual([...back.chunk], [1, 2, 3]);
  assert.throws(() => p.encodeFrame(1, 0, new Uint8Array(0)), RangeError);
  assert.throws(() => p.encodeFrame(1, 0, new Uint8Array(p.CHUNK_BYTES + 1)), RangeError);
  assert.throws(() => p.decodeFrame(new Uint8Array(12).buffer), { code: "bad_frame" });
  assert.throws(() => p.decodeFrame(Uint8Array.from("XXXX00000000abc", (c) => c.charCodeAt(0))), { code: "bad_frame" });

  const big = new Uint8Array(p.CHUNK_BYTES * 2 + 5);
  for (let i = 0; i < big.length; i += 4096) big[i] = (i / 4096) & 255;
  const all = [...p.frames(9, big)];
  assert.deepEqual(all.map((f) => f.byteLength - 12), [p.CHUNK_BYTES, p.CHUNK_BYTES, 5]);
  assert.deepEqual([...p.frames(9, new Uint8Array(0))], []);
  // Reassembly relies on offsets only, in any order.
  const t = new p.Transfer(big.byteLength);
  for (const f of all.reverse()) {
    const { offset, chunk } = p.decodeFrame(f);
    assert.equal(t.complete, false);
    t.add(offset, chunk);
  }
  assert.equal(t.complete, true);
  assert.deepEqual(t.data, big);
  assert.throws(() => t.add(big.byteLength - 1, new Uint8Array(2)), { code: "bad_frame" });
});

test("progress text and fraction for the progress bar", () => {
  assert.equal(p.describeProgress({ state: "running", stage: "denoising", step: 12, total: 50, eta_s: 31.4 }),
    "Denoising · step 12 of 50 · 31 s left");
  assert.equal(p.describeProgress({ state: "queued", stage: "queued", position: 2, eta_s: null }), "Waiting in queue · position 2");
  assert.equal(p.describeProgress({ state: "running", stage: "finishing", message: "Naming layers", eta_s: 2.2 }), "Naming layers · 2 s left");
  assert.equal(p.describeProgress({ state: "running", stage: "finishing", message: "", eta_s: null }), "Finishing");
  assert.equal(p.describeProgress({ state: "running", stage: "loading_model", eta_s: 3725 }), "Loading model · 1 h 2 min left");
  assert.equal(p.formatDuration(125), "2 min 5 s");
  assert.equal(p.progressFraction({ state: "running", stage: "denoising", step: 25, total: 50 }), 0.5);
  assert.equal(p.progressFraction({ state: "done", stage: "done" }), 1);
  assert.equal(p.progressFraction({ state: "running", stage: "mystery" }), 0);
});
