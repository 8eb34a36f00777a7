// End to end: the panel's client module in Node against the real Python server running the tiny
// model, over a real WebSocket on 127.0.0.1 (the `ws` package stands in for UXP's WebSocket).
"use strict";

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const WebSocket = require("ws");
const { LayerBridgeClient } = require("../src/client.js");
const { CHUNK_BYTES, buildParams, features, splitParams } = require("../src/protocol.js");
const host = require("../src/host.js");
const { readSource, insertLayers, splitLayer, HISTORY_NAME, SPLIT_HISTORY_NAME } = require("../src/layers.js");
const { Photoshop, SRGB, constants } = require("./support/photoshop-double.js");
const server = require("./support/server.js");

const SKIP = server.available() ? false : "no .venv/bin/layerbridge (run scripts/setup.sh --test)";
const JOB_TIMEOUT = 240000;

function image(width, height, seed = 1) {
  const data = new Uint8Array(width * height * 4);
  for (let i = 0; i < width * height; i++) {
    data[i * 4] = (i * 3 + seed) & 255;
    data[i * 4 + 1] = ((i >> 4) + seed * 7) & 255;
    data[i * 4 + 2] = (i * 11) & 255;
    data[i * 4 + 3] = 255;
  }
  return { width, height, data };
}

/** Small and fast: a prompt skips captioning; 2 steps (1 gives NaN on the tiny model). */
function params(extra = {}) {
  return buildParams({ layers: 2, resolution: 640, steps: 2, prompt: "a test card", seed: 7, ...extra }, "E2E");
}

/** A `ws` WebSocket that counts the binary frames it sends. */
function countingSocket(counter) {
  return class extends WebSocket {
    send(data, ...rest) {
      if (typeof data !== "string") counter.sent += 1;
      return super.send(data, ...rest);
    }
  };
}

describe("panel client against the real server", { skip: SKIP, timeout: 900000 }, () => {
  let srv;
  const clients = [];
  const client = (options = {}) => {
    const c = new LayerBridgeClient({ address: srv.address, token: srv.token, WebSocket, reconnectDelayMs: 300, ...options });
    clients.push(c);
    return c;
  };

  before(async () => {
    srv = await server.startServer();
  });

  after(async () => {
    clients.forEach((c) => c.close());
    if (srv) await srv.stop();
  });

  it("handshakes, reports status, refuses a wrong token and a foreign protocol", async () => {
    const c = client();
    const hello = await c.connect();
    assert.equal(hello.protocol, 1);
    assert.equal(hello.limits.chunk_bytes, CHUNK_BYTES);
    const status = await c.status();
    assert.equal(status.type, "status");
    assert.ok(["not_loaded", "loading", "ready"].includes(status.model.state));

    await assert.rejects(client({ token: "not-the-token" }).connect(), { code: "unauthorized" });
    await assert.rejects(client({ protocol: 99 }).connect(), (e) => e.code === "protocol_mismatch" && e.message.length > 0);
  });

  it("runs a job over 4 MiB each way: chunked upload, progress, layers in chunked frames", { timeout: JOB_TIMEOUT }, async () => {
    const counter = { sent: 0 };
    const c = client({ WebSocket: countingSocket(counter) });
    let received = 0;
    const receiveFrame = c.receiveFrame.bind(c);
    c.receiveFrame = (data) => { received += 1; receiveFrame(data); };
    const src = image(1100, 1000); // 4.4 MB: two upload frames
    const progress = [];
    let jobId = null;
    const result = await c.decompose(src, params(), { onProgress: (p) => progress.push(p), onJob: (id) => { jobId = id; } });

    assert.equal(counter.sent, 2, "two binary frames up");
    assert.ok(jobId && jobId === result.job);
    assert.deepEqual(result.canvas, { width: 1100, height: 1000 });
    assert.equal(result.name, "E2E");
    assert.equal(result.seed, 7);
    assert.equal(result.layers.length, 2);
    assert.deepEqual(result.layers.map((l) => l.index), [0, 1]);
    let expectedFrames = 0;
    for (const layer of result.layers) {
      assert.equal(layer.pixels.byteLength, layer.width * layer.height * 4);
      assert.equal(layer.bytes, layer.pixels.byteLength);
      assert.ok(layer.x >= 0 && layer.y >= 0 && layer.x + layer.width <= 1100 && layer.y + layer.height <= 1000);
      expectedFrames += Math.ceil(layer.bytes / CHUNK_BYTES);
    }
    assert.ok(result.layers.some((l) => l.bytes > CHUNK_BYTES), "at least one layer needs several frames");
    assert.equal(received, expectedFrames);
    assert.ok(progress.some((p) => p.stage === "denoising" && p.total === 2), "denoising steps reported");
  });

  it("a Grayscale and a Lab document (the Photoshop double) decompose into a group of layers in that document", { timeout: JOB_TIMEOUT }, async () => {
    const c = client();
    for (const mode of [constants.DocumentMode.GRAYSCALE, constants.DocumentMode.LAB]) {
      const ps = new Photoshop();
      const doc = ps.newDocument({ width: 64, height: 48, mode, title: `Scan ${mode}.psd` });
      doc.addLayer({ name: "Background", at: { left: 0, top: 0, width: 64, height: 48 }, rgba: image(64, 48, 5).data, background: true });
      host.setHost({ photoshop: ps.module(), uxp: {} });

      const source = await readSource("document");
      assert.deepEqual([ps.lastGetPixels.colorSpace, ps.lastGetPixels.colorProfile], ["RGB", SRGB], mode);
      const result = await c.decompose(source, { ...params(), name: source.name });
      await insertLayers(source, result);

      assert.deepEqual(doc.history, ["Open", HISTORY_NAME], mode);
      assert.deepEqual(doc.layers.map((l) => l.name), [`Scan ${mode} layers`, "Background"], mode);
      const group = doc.layers[0];
      assert.equal(group.layers.length, result.layers.length);
      for (const spec of result.layers) {
        const layer = group.layers.find((l) => l.name === spec.name);
        assert.ok(layer, `${mode}: ${spec.name}`);
        if (!(spec.width > 0)) continue;
        const data = layer.pixels.data;
        assert.deepEqual(layer.pixels.bounds, { left: spec.x, top: spec.y, right: spec.x + spec.width, bottom: spec.y + spec.height });
        if (mode === constants.DocumentMode.LAB) {
          assert.deepEqual(data, spec.pixels, `${mode}: ${spec.name} as sent`);
        } else {
          for (let i = 0; i < data.length; i += 4) assert.ok(data[i] === data[i + 1] && data[i] === data[i + 2], `${spec.name}: gray`);
          for (let i = 3; i < data.length; i += 4) assert.equal(data[i], spec.pixels[i], `${spec.name}: alpha as sent`);
        }
      }
      assert.equal(ps.liveImageData.size, 0);
    }
  });

  it("the document closed while the server worked (the Photoshop double): the layers open in a new document like it", { timeout: JOB_TIMEOUT }, async () => {
    const c = client();
    const ps = new Photoshop();
    const doc = ps.newDocument({ width: 64, height: 48, depth: 16, resolution: 240, title: "Card.tif" });
    doc.addLayer({ name: "Background", at: { left: 0, top: 0, width: 64, height: 48 }, rgba: image(64, 48, 9).data, background: true });
    doc.selection.bounds = { left: 8, top: 4, right: 56, bottom: 40 };
    host.setHost({ photoshop: ps.module(), uxp: {} });

    const source = await readSource("document");
    const result = await c.decompose(source, { ...params(), name: source.name });
    doc.userCloses();
    const plan = await insertLayers(source, result);

    assert.equal(plan.newDocument, "Card (layers)");
    assert.deepEqual(ps.documents.map((d) => d.title), ["Card (layers)"]);
    const made = ps.documents[0];
    assert.deepEqual([made.width, made.height, made.resolution, made.mode, made.depth], [64, 48, 240, "RGBColorMode", 16]);
    assert.deepEqual(made.history, ["New", HISTORY_NAME]);
    assert.deepEqual(made.layers.map((l) => l.name), ["Card layers"]);
    const group = made.layers[0];
    assert.equal(group.layers.length, result.layers.length);
    for (const spec of result.layers) {
      if (!(spec.width > 0)) continue;
      const layer = group.layers.find((l) => l.name === spec.name);
      assert.deepEqual(layer.pixels.bounds, { left: 8 + spec.x, top: 4 + spec.y, right: 8 + spec.x + spec.width, bottom: 4 + spec.y + spec.height });
      assert.deepEqual(Uint8Array.from(layer.pixels.data, (v) => Math.round((v * 255) / 32768)), spec.pixels, `${spec.name}: as sent`);
    }
    assert.equal(ps.liveImageData.size, 0);
  });

  it("text_layers on and off: the server reads each layer's text or not; the panel inserts either", { timeout: JOB_TIMEOUT }, async () => {
    const c = client();
    const hello = await c.connect();
    assert.equal(features(hello).text_layers, true, "the server announces text_layers");
    for (const on of [true, false]) {
      const ps = new Photoshop();
      const doc = ps.newDocument({ width: 64, height: 48, title: "Flyer.psd" });
      doc.addLayer({ name: "Background", at: { left: 0, top: 0, width: 64, height: 48 }, rgba: image(64, 48, 6).data, background: true });
      host.setHost({ photoshop: ps.module(), uxp: {} });
      const source = await readSource("document");
      const sent = buildParams({ layers: 2, resolution: 640, steps: 2, prompt: "a flyer", seed: 3, text_layers: on }, source.name);
      assert.equal(sent.text_layers, on);
      const result = await c.decompose(source, sent);
      // The tiny model's layers are noise, so what matters is that the reading ran (or not) and every layer says so.
      assert.equal("text_s" in result.timings, on, `text_s with text_layers ${on}`);
      for (const layer of result.layers) assert.ok(Array.isArray(layer.text), `layer ${layer.index} has its text`);
      if (!on) for (const layer of result.layers) assert.deepEqual(layer.text, []);
      const plan = await insertLayers(source, result, { textLayers: on });
      assert.deepEqual(doc.history, ["Open", HISTORY_NAME]);
      assert.equal(doc.layers[0].name, "Flyer layers");
      assert.equal(ps.textLayers.length, plan.text.layers, "one text layer per editable block read");
    }
  });

  it("Split layer (the split task) while a decomposition runs, and a decomposition with split_elements", { timeout: JOB_TIMEOUT }, async (t) => {
    const c = client();
    const hello = await c.connect();
    if (!features(hello).split_elements) {
      t.skip(`this server (${hello.version}) does not announce split_elements yet`);
      return;
    }
    const ps = new Photoshop();
    const doc = ps.newDocument({ width: 64, height: 48, title: "Shapes.psd" });
    doc.addLayer({ name: "Background", at: { left: 0, top: 0, width: 64, height: 48 }, rgba: image(64, 48, 2).data, background: true });
    const rgba = new Uint8Array(60 * 8 * 4); // three squares 18 px apart
    for (let y = 0; y < 8; y++) for (const x0 of [0, 26, 52]) for (let x = x0; x < x0 + 8; x++) rgba.set([20, 90, 200, 255], (y * 60 + x) * 4);
    const shapes = doc.addLayer({ name: "Shapes", at: { left: 2, top: 20, width: 60, height: 8 }, rgba });
    host.setHost({ photoshop: ps.module(), uxp: {} });

    const source = await readSource("split");
    const decomposing = c.decompose(image(64, 48, 8), params({ split_elements: true }));
    const result = await c.split(source, splitParams(source.name, true));
    assert.equal(result.layers.length, 3, "three shapes");
    assert.ok(result.layers.every((l) => l.group === false && l.parent === null));
    const plan = await splitLayer(source, result, { textLayers: true });
    assert.equal(plan.elements, 3);
    assert.deepEqual(doc.history, ["Open", SPLIT_HISTORY_NAME]);
    const group = doc.layers[0];
    assert.equal(group.name, "Shapes");
    assert.deepEqual(group.layers.map((l) => l.pixels.bounds.left).sort((a, b) => a - b), [2, 28, 54]);
    assert.ok(!doc.allLayers().includes(shapes));

    const decomposed = await decomposing;
    for (const layer of decomposed.layers) {
      assert.ok("group" in layer && "parent" in layer, "every entry says where it is");
      if (layer.group) assert.equal(layer.bytes, 0);
    }
  });

  it("cancels a running job; the connection stays usable", { timeout: JOB_TIMEOUT }, async () => {
    const c = client();
    let cancelled = false;
    const run = c.decompose(image(64, 48, 2), params({ steps: 40 }), {
      onProgress: (p) => {
        if (!cancelled && (p.state === "running" || p.stage !== "queued")) {
          cancelled = true;
          c.cancel();
        }
      },
    });
    await assert.rejects(run, { code: "cancelled" });
    assert.ok(cancelled);
    assert.equal((await c.status()).type, "status");
  });

  it("reconnects after the connection drops and still gets the result", { timeout: JOB_TIMEOUT }, async () => {
    const states = [];
    const c = client({ onState: (s) => states.push(s) });
    let dropped = false;
    const result = await c.decompose(image(80, 60, 3), params({ seed: 11 }), {
      onJob: () => {
        // The network goes away right after the server accepted the job.
        if (!dropped) {
          dropped = true;
          c.ws.terminate();
        }
      },
    });
    assert.ok(dropped);
    assert.ok(states.includes("reconnecting"), `states: ${states.join(", ")}`);
    assert.equal(result.seed, 11);
    assert.equal(result.layers.length, 2);
    for (const layer of result.layers) assert.equal(layer.pixels.byteLength, layer.width * layer.height * 4);
  });
});

describe("a server stopped during a job", { skip: SKIP, timeout: 300000 }, () => {
  it("says so at once: server_stopped, not a lost connection to retry", { timeout: JOB_TIMEOUT }, async () => {
    const srv = await server.startServer();
    const c = new LayerBridgeClient({ address: srv.address, token: srv.token, WebSocket, reconnectDelayMs: 300 });
    try {
      let stoppedAt = 0;
      const run = c.decompose(image(64, 48, 4), params({ steps: 100, layers: 4 }), {
        onProgress: (p) => {
          if (!stoppedAt && p.state === "running") {
            stoppedAt = Date.now();
            process.kill(srv.pid, "SIGTERM");
          }
        },
      });
      await assert.rejects(run, (e) => {
        assert.equal(e.code, "server_stopped", e.message);
        assert.match(e.message, /server was stopped/);
        return true;
      });
      assert.ok(stoppedAt > 0);
      assert.ok(Date.now() - stoppedAt < 10000, `told after ${Date.now() - stoppedAt} ms`);
    } finally {
      c.close();
      await srv.stop();
    }
  });
});

describe("panel client against a team server (--cluster local: two model replicas through Ray Serve)", {
  skip: server.clusterAvailable() ? false : "the cluster extra is not installed (pip install -e \".[cluster]\")",
  timeout: 900000,
}, () => {
  let srv;
  const clients = [];
  before(async () => {
    srv = await server.startServer({ extraArgs: ["--cluster", "local", "--replicas", "2"], timeoutMs: 180000 });
  });
  after(async () => {
    clients.forEach((c) => c.close());
    if (srv) await srv.stop();
  });

  it("two panels decompose at once: each gets its own layers, the status lists the replicas", { timeout: JOB_TIMEOUT }, async () => {
    const panels = [0, 1].map(() => {
      const c = new LayerBridgeClient({ address: srv.address, token: srv.token, WebSocket, reconnectDelayMs: 300 });
      clients.push(c);
      return c;
    });
    await Promise.all(panels.map((c) => c.connect()));
    const results = await Promise.all(panels.map((c, i) => c.decompose(image(64, 48, i + 1), params({ seed: 20 + i }))));
    for (const [i, result] of results.entries()) {
      assert.deepEqual(result.canvas, { width: 64, height: 48 });
      assert.equal(result.seed, 20 + i);
      assert.equal(result.layers.length, 2);
      for (const layer of result.layers) assert.equal(layer.pixels.byteLength, layer.width * layer.height * 4);
    }
    assert.notEqual(results[0].job, results[1].job);
    const status = await panels[0].status();
    assert.equal(status.replicas.length, 2);
    assert.ok(status.replicas.every((r) => r.state === "ready" || r.state === "busy"), JSON.stringify(status.replicas));
  });
});
