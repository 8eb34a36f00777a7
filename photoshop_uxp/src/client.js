// WebSocket client for the LayerBridge server (docs/protocol.md §5). Runs in UXP with the global
// WebSocket and in Node with the `ws` package handed in as `WebSocket`.
"use strict";

const {
  CLIENT_NAME,
  PROTOCOL,
  LayerBridgeError,
  checkHello,
  decodeFrame,
  frames,
  parseAddress,
  socketUrl,
  Transfer,
} = require("./protocol.js");

const OPEN = 1;
const MAX_BUFFERED = 16 * 1024 * 1024;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function closeReason(code) {
  if (code === 4401) return "unauthorized";
  if (code === 4426) return "protocol_mismatch";
  if (code === 1009) return "payload_too_large";
  return "connection_lost";
}

/** One submitted job as the client tracks it. */
class Job {
  constructor(ref, onProgress, onJob) {
    this.ref = ref;
    this.id = null;
    this.onProgress = onProgress;
    this.onJob = onJob;
    this.result = null;
    this.transfers = new Map();
    this.cancelRequested = false;
    this.settled = false;
    this.promise = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  finish(value, error) {
    if (this.settled) return;
    this.settled = true;
    if (error) this.reject(error);
    else this.resolve(value);
  }
}

class LayerBridgeClient {
  /**
   * @param {object} options
   * @param {string} options.address  "127.0.0.1:7860"
   * @param {string} options.token  the install's token (`layerbridge token`)
   * @param {Function} [options.WebSocket]  constructor; defaults to the global one (UXP)
   * @param {Function} [options.fetch]  for the connection diagnosis; defaults to the global one
   * @param {(state: string, detail?: object) => void} [options.onState]
   */
  constructor({
    address,
    token,
    WebSocket: WS = globalThis.WebSocket,
    fetch: fetchFn = globalThis.fetch,
    clientName = CLIENT_NAME,
    protocol = PROTOCOL,
    connectTimeoutMs = 10000,
    reconnectAttempts = 5,
    reconnectDelayMs = 1000,
    onState = () => {},
  }) {
    this.address = address;
    this.url = socketUrl(address);
    this.token = token || "";
    this.WS = WS;
    this.fetch = fetchFn;
    this.clientName = clientName;
    this.protocol = protocol;
    this.connectTimeoutMs = connectTimeoutMs;
    this.reconnectAttempts = reconnectAttempts;
    this.reconnectDelayMs = reconnectDelayMs;
    this.onState = onState;
    this.ws = null;
    this.hello = null;
    this.connecting = null;
    this.closedByUser = false;
    this.nextRef = 1;
    this.nextTransfer = 1;
    this.jobsByRef = new Map();
    this.jobsById = new Map();
    this.waiters = [];
  }

  get connected() {
    return Boolean(this.ws && this.ws.readyState === OPEN && this.hello);
  }

  /** Opens the connection and does the handshake (idempotent). Resolves with the server's hello. */
  connect() {
    if (this.connected) return Promise.resolve(this.hello);
    if (!this.connecting) {
      this.closedByUser = false;
      this.onState("connecting");
      this.connecting = this.open().then(
        (hello) => {
          this.connecting = null;
          this.onState("connected", hello);
          return hello;
        },
        (error) => {
          this.connecting = null;
          this.onState("disconnected", error);
          throw error;
        },
      );
    }
    return this.connecting;
  }

  open() {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new this.WS(this.url);
      } catch (error) {
        // UXP refuses URLs the manifest does not list, synchronously.
        reject(new LayerBridgeError("permission_denied",
          `Photoshop did not allow a connection to ${this.url}: ${error.message}. The panel's manifest lists ws://127.0.0.1:7860; see the README (Photoshop, another port).`,
          { url: this.url }));
        return;
      }
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      let handshaken = false;
      let serverError = null;
      const timer = setTimeout(() => {
        fail(new LayerBridgeError("timeout", `No answer from the LayerBridge server at ${this.address} within ${Math.round(this.connectTimeoutMs / 1000)} s.`));
        try { ws.close(); } catch (_) { /* already closed */ }
      }, this.connectTimeoutMs);
      const fail = (error) => {
        clearTimeout(timer);
        if (!handshaken) {
          handshaken = true;
          reject(error);
        }
      };
      ws.onopen = () => {
        if (this.token) this.sendJson({ type: "auth", token: this.token }, ws);
        this.sendJson({ type: "hello", protocol: this.protocol, client: this.clientName }, ws);
      };
      ws.onmessage = (event) => {
        if (handshaken) {
          this.receive(event.data);
          return;
        }
        let message;
        try {
          if (typeof event.data !== "string") throw new Error("binary before the handshake");
          message = JSON.parse(event.data);
        } catch (_) {
          fail(new LayerBridgeError("bad_handshake", "The server's first answer was not JSON; is this a LayerBridge server?"));
          return;
        }
        if (message.type === "error") {
          serverError = new LayerBridgeError(message.code, message.message, { server: message });
          fail(serverError);
          return;
        }
        try {
          this.hello = checkHello(message);
        } catch (error) {
          fail(error);
          try { ws.close(); } catch (_) { /* closing anyway */ }
          return;
        }
        clearTimeout(timer);
        handshaken = true;
        resolve(this.hello);
      };
      ws.onerror = () => {};
      ws.onclose = (event) => {
        if (this.ws === ws) {
          this.ws = null;
          this.hello = null;
        }
        if (!handshaken) {
          fail(serverError || this.closedBeforeHello(event));
          return;
        }
        this.lost(event);
      };
    });
  }

  closedBeforeHello(event) {
    const code = event && event.code;
    if (code === 4401) return new LayerBridgeError("unauthorized", "The server refused the token. Paste it again (`layerbridge token` prints it).");
    if (code === 4426) return new LayerBridgeError("protocol_mismatch", "The server does not speak this panel's protocol version; update the panel or the server.");
    return new LayerBridgeError("unreachable",
      `Cannot reach the LayerBridge server at ${this.address}. Start it (\`layerbridge serve\` or the tray launcher) and check the address.`,
      { closeCode: code });
  }

  /**
   * After a failed connect: asks GET /health and /v1/info over HTTP to tell "not running" from
   * "running but refusing this client" (token, origin). Resolves with a LayerBridgeError or null.
   */
  async diagnose() {
    if (typeof this.fetch !== "function") return null;
    const { host, port } = parseAddress(this.address);
    const base = `http://${host}:${port}`;
    try {
      const health = await this.fetch(`${base}/health`);
      if (!health.ok) return null;
      const info = await this.fetch(`${base}/v1/info`, { headers: { Authorization: `Bearer ${this.token}` } });
      if (info.ok) {
        return new LayerBridgeError("websocket_refused",
          `The server at ${this.address} answers but refused the panel's WebSocket, most likely because of the Origin Photoshop sends. Start the server with --allowed-origin and that origin (e.g. --allowed-origin file:// or --allowed-origin null); see the README.`);
      }
      const body = await info.json().catch(() => ({}));
      return new LayerBridgeError(body.code || `http_${info.status}`, body.message || `HTTP ${info.status}`, { server: body });
    } catch (_) {
      return null;
    }
  }

  sendJson(message, ws = this.ws) {
    if (!ws || ws.readyState !== OPEN) throw new LayerBridgeError("connection_lost", "Not connected to the LayerBridge server.");
    ws.send(JSON.stringify(message));
  }

  /** Sends binary frames, waiting while the socket's send buffer is full. */
  async sendBytes(transfer, bytes) {
    for (const frame of frames(transfer, bytes)) {
      const ws = this.ws;
      if (!ws || ws.readyState !== OPEN) throw new LayerBridgeError("connection_lost", "The connection to the server was lost while sending the image; try again.");
      while ((ws.bufferedAmount || 0) > MAX_BUFFERED) {
        await sleep(5);
        if (ws.readyState !== OPEN) throw new LayerBridgeError("connection_lost", "The connection to the server was lost while sending the image; try again.");
      }
      ws.send(frame.buffer);
    }
  }

  receive(data) {
    if (typeof data !== "string") {
      this.receiveFrame(data);
      return;
    }
    let message;
    try {
      message = JSON.parse(data);
    } catch (_) {
      return;
    }
    const job = (message.job && this.jobsById.get(message.job)) || (message.ref && this.jobsByRef.get(message.ref)) || null;
    switch (message.type) {
      case "accepted":
        if (job) this.accepted(job, message);
        break;
      case "progress":
        if (job) this.progress(job, message);
        break;
      case "result":
        if (job) this.result(job, message);
        break;
      case "error":
        if (job) {
          this.settle(job, null, new LayerBridgeError(message.code, message.message, { server: message, job: job.id }));
        } else {
          this.answer(message);
        }
        break;
      default:
        this.answer(message);
    }
  }

  receiveFrame(data) {
    const { transfer, offset, chunk } = decodeFrame(data);
    for (const job of this.jobsById.values()) {
      const t = job.transfers.get(transfer);
      if (!t) continue;
      t.add(offset, chunk);
      if (t.complete) this.maybeDone(job);
      return;
    }
  }

  accepted(job, message) {
    job.id = message.job;
    this.jobsById.set(job.id, job);
    job.onJob(job.id);
    job.onProgress({ type: "progress", job: job.id, state: "queued", stage: "queued", step: 0, total: 0, eta_s: null, position: message.position });
    if (job.cancelRequested) this.sendCancel(job.id);
  }

  progress(job, message) {
    if (message.state === "failed") {
      const e = message.error || {};
      this.settle(job, null, new LayerBridgeError(e.code || "job_failed", e.message || "The job failed.", { server: message, job: job.id }));
    } else if (message.state === "cancelled") {
      this.settle(job, null, new LayerBridgeError("cancelled", "Cancelled.", { job: job.id }));
    } else {
      job.onProgress(message);
    }
  }

  result(job, message) {
    job.result = message;
    job.transfers = new Map();
    for (const layer of message.layers) {
      if (layer.bytes > 0) {
        const t = new Transfer(layer.bytes);
        job.transfers.set(layer.transfer, t);
        layer.pixels = t.data;
      } else {
        layer.pixels = new Uint8Array(0);
      }
    }
    this.maybeDone(job);
  }

  maybeDone(job) {
    if (!job.result) return;
    for (const t of job.transfers.values()) if (!t.complete) return;
    this.settle(job, job.result);
  }

  settle(job, value, error) {
    this.jobsByRef.delete(job.ref);
    if (job.id) this.jobsById.delete(job.id);
    job.finish(value, error);
  }

  /** Resolves the oldest waiter for a reply of this type (status, pong) or error with its ref. */
  answer(message) {
    const i = this.waiters.findIndex((w) => (message.ref ? w.ref === message.ref : w.type === message.type));
    if (i < 0) return;
    const [w] = this.waiters.splice(i, 1);
    if (message.type === "error") w.reject(new LayerBridgeError(message.code, message.message, { server: message }));
    else w.resolve(message);
  }

  request(message, type, timeoutMs = 10000) {
    const ref = `r${this.nextRef++}`;
    return new Promise((resolve, reject) => {
      const waiter = { ref, type, resolve, reject };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new LayerBridgeError("timeout", `The server did not answer "${message.type}".`));
      }, timeoutMs);
      waiter.resolve = (v) => { clearTimeout(timer); resolve(v); };
      waiter.reject = (e) => { clearTimeout(timer); reject(e); };
      this.waiters.push(waiter);
      try {
        this.sendJson({ ...message, ref });
      } catch (error) {
        waiter.reject(error);
      }
    });
  }

  /** The server's status (model state, device, queue). */
  async status() {
    await this.connect();
    return this.request({ type: "status" }, "status");
  }

  /**
   * Sends an rgba8 image and resolves with the result: the protocol's result object whose layers
   * each carry `pixels` (Uint8Array, width*height*4 bytes). This is the panel's current job, the one
   * cancel() and shutdown() act on.
   * @param {{width: number, height: number, data: Uint8Array}} image
   * @param {object} params  job parameters (protocol §3)
   * @param {{onProgress?: Function, onJob?: Function}} [hooks]
   */
  async decompose(image, params, hooks = {}) {
    return this.submit("decompose", image, params, hooks);
  }

  /**
   * The split task (Split layer, docs/protocol.md): the image's elements, without the model. It runs
   * beside a decomposition, on the same connection; shutdown() cancels it too.
   * @param {{width: number, height: number, data: Uint8Array}} image
   * @param {{name: string, text_layers: boolean}} params  see splitParams
   * @param {{onProgress?: Function, onJob?: Function}} [hooks]
   */
  async split(image, params, hooks = {}) {
    return this.submit("split", image, params, hooks);
  }

  async submit(task, image, params, { onProgress = () => {}, onJob = () => {} } = {}) {
    if (image.data.byteLength !== image.width * image.height * 4) {
      throw new LayerBridgeError("invalid_image", "image bytes do not match width × height × 4");
    }
    const job = new Job(`r${this.nextRef++}`, onProgress, onJob);
    const slot = task === "decompose" ? "current" : "side";
    this[slot] = job;
    try {
      await this.connect();
      if (job.cancelRequested) throw new LayerBridgeError("cancelled", "Cancelled.");
      const transfer = this.nextTransfer++;
      this.jobsByRef.set(job.ref, job);
      const message = {
        type: "submit",
        ref: job.ref,
        params,
        image: { format: "rgba8", width: image.width, height: image.height, bytes: image.data.byteLength, transfer },
      };
      if (task !== "decompose") message.task = task; // omitted: a decomposition, as older servers take it
      this.sendJson(message);
      await this.sendBytes(transfer, image.data);
    } catch (error) {
      this.settle(job, null, error);
    }
    try {
      return await job.promise;
    } finally {
      if (this[slot] === job) this[slot] = null;
    }
  }

  sendCancel(jobId) {
    try {
      this.sendJson({ type: "cancel", job: jobId });
    } catch (_) {
      // Not connected: the job keeps running on the server; it is cancelled after reconnecting.
    }
  }

  /** Cancels the running job (or one by id). The job's promise rejects with code "cancelled". */
  cancel(jobId) {
    const job = jobId ? this.jobsById.get(jobId) : this.current;
    if (!job || job.settled) return;
    job.cancelRequested = true;
    if (job.id) this.sendCancel(job.id);
  }

  /** The connection dropped: jobs still uploading fail; running jobs are subscribed to again. */
  async lost(event) {
    for (const w of this.waiters.splice(0)) w.reject(new LayerBridgeError("connection_lost", "The connection to the server was lost."));
    for (const job of [...this.jobsByRef.values()]) {
      if (!job.id) this.settle(job, null, new LayerBridgeError(closeReason(event && event.code), "The connection to the server was lost while sending the image; try again."));
    }
    if (this.closedByUser || this.jobsById.size === 0) {
      this.onState("disconnected");
      return;
    }
    this.onState("reconnecting");
    for (let attempt = 1; attempt <= this.reconnectAttempts && !this.closedByUser; attempt++) {
      await sleep(this.reconnectDelayMs * attempt);
      try {
        await this.connect();
        for (const job of this.jobsById.values()) {
          job.result = null;
          this.sendJson({ type: "subscribe", job: job.id });
          if (job.cancelRequested) this.sendCancel(job.id);
        }
        return;
      } catch (_) {
        // try again
      }
    }
    for (const job of [...this.jobsById.values()]) {
      this.settle(job, null, new LayerBridgeError("connection_lost",
        `Lost the connection to the server; job ${job.id} may still finish there (results are kept for an hour).`, { job: job.id }));
    }
  }

  /**
   * Cancels the running jobs on the server, then closes the connection: closing alone leaves a job
   * running there (protocol §5). A job whose id has not come yet (its upload is still on its way)
   * is waited for up to `waitMs`, as the cancel goes out with the server's answer. The job's promise
   * rejects with code "cancelled".
   */
  async shutdown(waitMs = 2000) {
    const jobs = [this.current, this.side].filter((job) => job && !job.settled);
    for (const job of jobs) {
      job.cancelRequested = true;
      if (job.id) this.sendCancel(job.id);
    }
    const deadline = Date.now() + waitMs;
    while (jobs.some((job) => !job.id && !job.settled) && Date.now() < deadline) await sleep(20);
    this.close();
    for (const job of jobs) if (!job.settled) this.settle(job, null, new LayerBridgeError("cancelled", "Cancelled.", { job: job.id }));
  }

  close() {
    this.closedByUser = true;
    if (this.ws) {
      try { this.ws.close(1000); } catch (_) { /* already closed */ }
    }
  }
}

module.exports = { LayerBridgeClient };
