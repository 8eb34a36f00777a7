// The client's edge cases against a scripted in-process server (the real one is in e2e.test.js).
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const WebSocket = require("ws");
const { LayerBridgeClient } = require("../src/client.js");
const { encodeFrame, decodeFrame } = require("../src/protocol.js");

const HELLO = { type: "hello", server: "layerbridge", version: "0.1.0", protocol: 1, min_protocol: 1, capabilities: [], limits: {} };

const servers = new Set();
// A test that fails before closing its server would otherwise keep this file running until the runner's timeout.
test.after(() => Promise.all([...servers].map((close) => close())));

/** A scripted server: `script(ws, message, state)` answers each parsed text message. */
async function scripted(script) {
  const server = new WebSocket.WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve) => server.once("listening", resolve));
  const close = () => new Promise((r) => {
    servers.delete(close);
    server.clients.forEach((c) => c.terminate());
    server.close(r);
  });
  servers.add(close);
  const seen = [];
  const ended = []; // one promise per connection, settled when the server has seen it close
  server.on("connection", (ws) => {
    ended.push(new Promise((resolve) => ws.once("close", resolve)));
    const state = { frames: [] };
    ws.on("message", (data, isBinary) => {
      if (isBinary) {
        state.frames.push(decodeFrame(new Uint8Array(data)));
        return;
      }
      const m = JSON.parse(data.toString());
      seen.push(m);
      if (m.type === "hello") ws.send(JSON.stringify(HELLO));
      else script(ws, m, state);
    });
  });
  return {
    address: `127.0.0.1:${server.address().port}`,
    seen,
    /** Every connection so far closed on the server's side: all a client sent before closing has been seen. */
    disconnected: () => Promise.all(ended),
    close,
  };
}

/** Resolves once `condition()` holds; rejects naming `what` if it still does not after `ms`. */
async function until(condition, what, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`still waiting for ${what} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const image = { width: 2, height: 1, data: Uint8Array.from([1, 2, 3, 255, 4, 5, 6, 255]) };

test("auth comes first, then hello; layers arrive in any chunk order; empty layers carry no frames", async () => {
  const layer = Uint8Array.from({ length: 16 }, (_, i) => i + 1);
  const srv = await scripted((ws, m) => {
    if (m.type !== "submit") return;
    ws.send(JSON.stringify({ type: "accepted", ref: m.ref, job: "j1", position: 0 }));
    ws.send(JSON.stringify({ type: "result", job: "j1", name: "x", canvas: { width: 2, height: 1 }, seed: 5, layers: [
      { index: 0, name: "Background", x: 0, y: 0, width: 2, height: 2, bytes: 16, transfer: 4 },
      { index: 1, name: "Layer 1", x: 0, y: 0, width: 0, height: 0, bytes: 0, transfer: 5 },
    ] }));
    ws.send(encodeFrame(4, 10, layer.subarray(10)));
    ws.send(encodeFrame(4, 0, layer.subarray(0, 10)));
  });
  const c = new LayerBridgeClient({ address: srv.address, token: "t0k", WebSocket });
  const result = await c.decompose(image, { layers: 2 });
  assert.deepEqual(srv.seen.slice(0, 2).map((m) => m.type), ["auth", "hello"]);
  assert.equal(srv.seen[0].token, "t0k");
  assert.deepEqual(result.layers[0].pixels, layer);
  assert.equal(result.layers[1].pixels.byteLength, 0);
  c.close();
  await srv.close();
});

test("cancel while connecting sends nothing; cancel before \"accepted\" is sent once the job has an id", async () => {
  const srv = await scripted((ws, m) => {
    if (m.type === "submit") setTimeout(() => ws.send(JSON.stringify({ type: "accepted", ref: m.ref, job: "j2", position: 3 })), 100);
    if (m.type === "cancel") ws.send(JSON.stringify({ type: "progress", job: m.job, state: "cancelled", stage: "cancelled" }));
  });
  const early = new LayerBridgeClient({ address: srv.address, token: "t", WebSocket });
  const first = early.decompose(image, {});
  early.cancel();
  await assert.rejects(first, { code: "cancelled" });
  assert.equal(srv.seen.some((m) => m.type === "submit"), false);
  early.close();

  const c = new LayerBridgeClient({ address: srv.address, token: "t", WebSocket });
  const run = c.decompose(image, {});
  await until(() => srv.seen.some((m) => m.type === "submit"), "the submit");
  c.cancel();
  await assert.rejects(run, { code: "cancelled" });
  assert.ok(srv.seen.some((m) => m.type === "cancel" && m.job === "j2"));
  c.close();
  await srv.close();
});

test("shutdown: the running job is cancelled before the connection closes, also when its id is still to come", async () => {
  const srv = await scripted((ws, m) => {
    if (m.type === "submit") setTimeout(() => ws.send(JSON.stringify({ type: "accepted", ref: m.ref, job: `j_${m.ref}`, position: 0 })), 150);
  });
  const closed = [];
  const c = new LayerBridgeClient({ address: srv.address, token: "t", WebSocket, onState: (s) => closed.push(s) });
  const run = c.decompose(image, {});
  await until(() => srv.seen.some((m) => m.type === "submit"), "the submit");
  await c.shutdown();
  await assert.rejects(run, { code: "cancelled" });
  await srv.disconnected();
  const submit = srv.seen.find((m) => m.type === "submit");
  assert.ok(srv.seen.some((m) => m.type === "cancel" && m.job === `j_${submit.ref}`), "cancel sent once the id came");
  await until(() => closed[closed.length - 1] === "disconnected", "the state \"disconnected\"");
  assert.equal(c.connected, false);
  await c.shutdown(); // nothing running: just closed
  await srv.close();
});

test("the split task runs beside a decomposition on one connection; cancel leaves it, shutdown cancels both", async () => {
  const element = Uint8Array.from({ length: 8 }, (_, i) => 200 + i);
  const srv = await scripted((ws, m) => {
    if (m.type === "cancel") ws.send(JSON.stringify({ type: "progress", job: m.job, state: "cancelled", stage: "cancelled" }));
    if (m.type !== "submit") return;
    const job = `j_${m.task || "decompose"}`;
    ws.send(JSON.stringify({ type: "accepted", ref: m.ref, job, position: 0 }));
    if (m.task === "split") {
      ws.send(JSON.stringify({ type: "result", job, name: m.params.name, canvas: { width: 2, height: 1 }, seed: null, layers: [
        { index: 0, name: "Logo 1", x: 0, y: 0, width: 1, height: 1, bytes: 4, transfer: 7, group: false, parent: null, text: [] },
        { index: 1, name: "Logo 2", x: 1, y: 0, width: 1, height: 1, bytes: 4, transfer: 8, group: false, parent: null, text: [] },
      ] }));
      ws.send(encodeFrame(7, 0, element.subarray(0, 4)));
      ws.send(encodeFrame(8, 0, element.subarray(4)));
    }
  });
  const c = new LayerBridgeClient({ address: srv.address, token: "t", WebSocket });
  const decomposing = c.decompose(image, { layers: 2 });
  const result = await c.split(image, { name: "Logo", text_layers: true });
  assert.deepEqual(result.layers.map((l) => [l.name, [...l.pixels]]), [["Logo 1", [200, 201, 202, 203]], ["Logo 2", [204, 205, 206, 207]]]);
  const submits = srv.seen.filter((m) => m.type === "submit");
  assert.deepEqual(submits.map((m) => m.task), [undefined, "split"], "a decomposition names no task");
  assert.deepEqual(submits[1].params, { name: "Logo", text_layers: true });
  c.cancel(); // the panel's Cancel: the decomposition only
  await assert.rejects(decomposing, { code: "cancelled" });
  assert.deepEqual(srv.seen.filter((m) => m.type === "cancel").map((m) => m.job), ["j_decompose"]);

  const again = c.split(image, { name: "Logo", text_layers: false });
  await again;
  const running = c.decompose(image, {});
  await until(() => srv.seen.filter((m) => m.type === "submit").length === 4, "the fourth submit");
  await c.shutdown();
  await assert.rejects(running, { code: "cancelled" });
  await srv.close();
});

test("a failed job and a refused submit reject with the server's code and message", async () => {
  const srv = await scripted((ws, m) => {
    if (m.type !== "submit") return;
    if (m.params.layers === 99) {
      ws.send(JSON.stringify({ type: "error", code: "invalid_params", message: "layers must be between 2 and 10 (got 99)", job: null, ref: m.ref }));
      return;
    }
    ws.send(JSON.stringify({ type: "accepted", ref: m.ref, job: "j3", position: 0 }));
    ws.send(JSON.stringify({ type: "progress", job: "j3", state: "failed", stage: "failed", error: { code: "out_of_memory", message: "try 640" } }));
  });
  const c = new LayerBridgeClient({ address: srv.address, token: "t", WebSocket });
  await assert.rejects(c.decompose(image, { layers: 99 }), { code: "invalid_params", message: "layers must be between 2 and 10 (got 99)" });
  await assert.rejects(c.decompose(image, { layers: 2 }), (e) => e.code === "out_of_memory" && e.details.job === "j3");
  c.close();
  await srv.close();
});

test("nobody listening: 'unreachable' with what to do; a manifest refusal: 'permission_denied'", async () => {
  const srv = await scripted(() => {});
  const { address } = srv;
  await srv.close();
  const c = new LayerBridgeClient({ address, token: "t", WebSocket, connectTimeoutMs: 3000 });
  await assert.rejects(c.connect(), (e) => e.code === "unreachable" && /layerbridge serve/.test(e.message));
  assert.equal(await c.diagnose(), null, "nothing answers /health either");

  class Refusing {
    constructor(url) { throw new Error(`Permission denied to the url ${url}. Manifest entry not found.`); }
  }
  await assert.rejects(new LayerBridgeClient({ address, token: "t", WebSocket: Refusing }).connect(), { code: "permission_denied" });
});

test("images whose bytes do not match their size are refused before sending", async () => {
  const c = new LayerBridgeClient({ address: "127.0.0.1:1", token: "t", WebSocket });
  await assert.rejects(c.decompose({ width: 2, height: 2, data: new Uint8Array(3) }, {}), { code: "invalid_image" });
});

test("a refused WebSocket upgrade is diagnosed over HTTP: the server's own error, or the Origin rule", async () => {
  const http = require("node:http");
  let infoAnswer = { status: 200, body: { type: "hello" } };
  const server = http.createServer((req, res) => {
    const answer = req.url === "/health" ? { status: 200, body: { status: "ok" } } : infoAnswer;
    res.writeHead(answer.status, { "Content-Type": "application/json" });
    res.end(JSON.stringify(answer.body));
  });
  server.on("upgrade", (req, socket) => socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"));
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const address = `127.0.0.1:${server.address().port}`;
  try {
    const c = new LayerBridgeClient({ address, token: "t", WebSocket });
    await assert.rejects(c.connect(), { code: "unreachable" });
    const refused = await c.diagnose();
    assert.equal(refused.code, "websocket_refused");
    assert.match(refused.message, /--allowed-origin/);

    infoAnswer = { status: 403, body: { type: "error", code: "forbidden_origin", message: "requests from origin 'file://' are refused; start the server with --allowed-origin file:// to allow it" } };
    const named = await c.diagnose();
    assert.equal(named.code, "forbidden_origin");
    assert.match(named.message, /--allowed-origin file:\/\//);
  } finally {
    await new Promise((r) => server.close(r));
  }
});
