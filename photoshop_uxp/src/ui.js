// The panel's UI: binds index.html's widgets to settings, the client and the Photoshop side.
"use strict";

const { LayerBridgeClient } = require("./client.js");
const { CLIENT_NAME, LayerBridgeError, buildParams, describeProgress, jobOptions, progressFraction } = require("./protocol.js");
const { loadSettings, saveSettings, tokenStore } = require("./settings.js");
const layers = require("./layers.js");

const STATUS_POLL_MS = 5000;
const CAPTION_SHOWN = 160; // characters of the model's description shown; all of it in the tooltip

function modelLine(status) {
  const model = (status && status.model) || {};
  const device = status && status.device ? ` on ${status.device.name || status.device.kind}` : "";
  switch (model.state) {
    case "ready":
      return `Model ready${device}`;
    case "downloading": {
      const gb = (b) => (b / 1e9).toFixed(1);
      const pct = model.bytes_total ? ` (${Math.floor((100 * model.bytes_done) / model.bytes_total)}%)` : "";
      return `Downloading model ${gb(model.bytes_done || 0)} of ${gb(model.bytes_total || 0)} GB${pct}`;
    }
    case "loading":
      return `Loading model${device}…`;
    case "failed":
      return `Model failed to load: ${model.error || "see the server log"}`;
    case "not_loaded":
      return `Model loads on first use${device}`;
    default:
      return "";
  }
}

/** Where the layers went, for the line under the buttons. */
function doneLine(source, plan, seconds) {
  const count = `${plan.layers.length} layers`;
  if (plan.newDocument) {
    return `“${source.document.name}” was closed during the decomposition: the ${count} are in a new document, “${plan.newDocument}” (${seconds} s).`;
  }
  return `Added ${count} in “${plan.groupName}” (${seconds} s). One Undo removes them.`;
}

class Panel {
  /**
   * @param {Document} dom  the panel's DOM document
   * @param {object} deps
   * @param {Storage} deps.storage  localStorage
   * @param {object} [deps.secureStorage]  uxp.storage.secureStorage
   * @param {Function} [deps.WebSocket]
   * @param {Function} [deps.fetch]
   * @param {object} [deps.clipboard]  navigator.clipboard
   * @param {Function} [deps.pickFile]  resolves with the text of a file the user picks, or null
   */
  constructor(dom, deps) {
    this.dom = dom;
    this.deps = deps;
    this.storage = deps.storage;
    this.tokens = tokenStore(deps.secureStorage, deps.storage);
    this.settings = loadSettings(this.storage);
    this.token = "";
    this.client = null;
    this.busy = false;
    this.cancelRequested = false;
    this.lastError = null;
    this.hello = null;
    this.options = jobOptions(null); // what jobs may ask for: this panel's own until a server announces its
    this.statusTimer = null;
    this.$ = (id) => dom.getElementById(id);
  }

  async start() {
    this.token = await this.tokens.get().catch(() => "");
    this.buildChoices();
    this.fill();
    this.bind();
    this.setBusy(false);
    this.showConnection("idle");
    if (this.token) this.connect().catch(() => {});
  }

  fill() {
    const s = this.settings;
    this.$("address").value = s.address;
    this.$("token").value = this.token;
    this.fillChoices();
    this.$("steps").value = String(s.steps);
    this.$("prompt").value = s.prompt;
    this.$("seed").value = s.seed;
  }

  /**
   * The layer range, resolutions and presets from this.options: the server's `job_options`, or
   * this panel's own before a server is reached or when it announces none.
   */
  buildChoices() {
    const { layers, resolution, presets } = this.options;
    const slider = this.$("layers");
    slider.setAttribute("min", String(layers.min));
    slider.setAttribute("max", String(layers.max));
    this.setItems("resolution", resolution.choices.map((r) => ({ value: String(r), label: `${r} px` })));
    this.setItems("preset", presets.map((p) => ({ value: p.name, label: p.label, title: p.summary })));
  }

  /** The saved layer count, resolution and preset, each moved into what the options allow. */
  fillChoices() {
    const s = this.settings;
    const { layers, resolution, presets } = this.options;
    const count = Math.min(Math.max(Math.round(Number(s.layers)) || layers.default, layers.min), layers.max);
    this.$("layers").value = count;
    this.$("layers-value").textContent = String(count);
    const size = resolution.choices.includes(Number(s.resolution)) ? Number(s.resolution) : resolution.default;
    this.setPicker("resolution", String(size));
    this.setPicker("preset", presets.some((p) => p.name === s.preset) ? s.preset : this.options.preset);
  }

  /** Follows the job options of a server just connected to; the controls change only where they differ. */
  useOptions(hello) {
    const options = jobOptions(hello);
    if (JSON.stringify(options) === JSON.stringify(this.options)) return;
    this.options = options;
    this.buildChoices();
    this.fillChoices();
  }

  /** Replaces a picker's menu items ({value, label, title}) through the DOM, as sp-menu documents them. */
  setItems(id, items) {
    const menu = this.$(id).querySelector("sp-menu");
    while (menu.firstChild) menu.removeChild(menu.firstChild);
    for (const { value, label, title } of items) {
      const item = this.dom.createElement("sp-menu-item");
      item.setAttribute("value", value);
      if (title) item.setAttribute("title", title);
      item.textContent = label;
      menu.appendChild(item);
    }
  }

  // Pickers through the documented sp-picker API only: selectedIndex and the items' `selected`
  // attribute (UXP's picker documents no `value` property).
  setPicker(id, value) {
    const picker = this.$(id);
    const items = Array.from(picker.querySelectorAll("sp-menu-item"));
    items.forEach((item, i) => {
      if (item.getAttribute("value") === value) {
        item.setAttribute("selected", "");
        picker.selectedIndex = i;
      } else {
        item.removeAttribute("selected");
      }
    });
  }

  pickerValue(id) {
    const picker = this.$(id);
    const items = Array.from(picker.querySelectorAll("sp-menu-item"));
    const index = Number.isInteger(picker.selectedIndex) ? picker.selectedIndex : -1;
    const chosen = items[index] || items.find((i) => i.hasAttribute("selected")) || items[0];
    return chosen ? chosen.getAttribute("value") : "";
  }

  /** The parameter fields as they are now (strings from text fields, as typed). */
  readFields() {
    return {
      address: String(this.$("address").value || "").trim(),
      layers: Math.round(Number(this.$("layers").value)),
      resolution: Number(this.pickerValue("resolution")),
      preset: this.pickerValue("preset"),
      steps: String(this.$("steps").value || "").trim(),
      prompt: String(this.$("prompt").value || ""),
      seed: String(this.$("seed").value || "").trim(),
    };
  }

  bind() {
    const on = (id, event, fn) => this.$(id).addEventListener(event, fn);
    const persist = () => this.persist();
    on("layers", "input", () => { this.$("layers-value").textContent = String(Math.round(Number(this.$("layers").value))); });
    for (const id of ["layers", "resolution", "preset", "steps", "prompt", "seed"]) on(id, "change", persist);
    on("address", "change", () => { persist(); this.reconnect(); });
    on("token", "change", async () => {
      this.token = String(this.$("token").value || "").trim();
      await this.tokens.set(this.token).catch(() => {});
      this.reconnect();
    });
    on("connect", "click", () => this.reconnect());
    on("token-file", "click", () => this.tokenFromFile());
    on("decompose", "click", () => this.run("document"));
    on("decompose-layer", "click", () => this.run("layer"));
    on("cancel", "click", () => this.cancel());
    on("copy-error", "click", () => this.copyError());
    // the last result's seed and description, put back into their fields (and saved)
    const putBack = (shown, key, field) => () => {
      const value = this.$(shown).dataset[key];
      if (value) {
        this.$(field).value = value;
        this.persist();
      }
    };
    on("use-caption", "click", putBack("last-caption", "caption", "prompt"));
    on("reuse-seed", "click", putBack("last-seed", "seed", "seed"));
  }

  persist() {
    const f = this.readFields();
    this.settings = { ...this.settings, ...f, layers: f.layers, resolution: f.resolution };
    saveSettings(this.storage, this.settings);
  }

  async tokenFromFile() {
    if (!this.deps.pickFile) return;
    try {
      const text = await this.deps.pickFile();
      if (!text) return;
      this.token = String(text).trim();
      this.$("token").value = this.token;
      await this.tokens.set(this.token);
      await this.reconnect();
    } catch (error) {
      this.showError(error);
    }
  }

  makeClient() {
    if (this.client) this.client.close();
    this.client = new LayerBridgeClient({
      address: this.settings.address,
      token: this.token,
      WebSocket: this.deps.WebSocket,
      fetch: this.deps.fetch,
      onState: (state, hello) => {
        if (state === "connected") this.useOptions(hello);
        this.showConnection(state);
      },
    });
    return this.client;
  }

  async reconnect() {
    if (this.busy) return;
    this.makeClient();
    try {
      await this.connect();
    } catch (_) {
      // shown by connect()
    }
  }

  async connect() {
    const client = this.client || this.makeClient();
    try {
      this.hello = await client.connect();
      this.clearError();
      await this.refreshStatus();
      this.pollStatus();
      return this.hello;
    } catch (error) {
      const diagnosis = error.code === "unreachable" ? await client.diagnose() : null;
      this.showError(diagnosis || error);
      throw diagnosis || error;
    }
  }

  pollStatus() {
    if (this.statusTimer) return;
    this.statusTimer = setInterval(() => {
      if (!this.busy && this.client && this.client.connected) this.refreshStatus().catch(() => {});
    }, STATUS_POLL_MS);
  }

  async refreshStatus() {
    if (!this.client) return null;
    const status = await this.client.status();
    this.$("model-state").textContent = modelLine(status);
    return status;
  }

  showConnection(state) {
    const dot = this.$("conn-dot");
    const text = this.$("conn-state");
    const lines = {
      idle: this.token ? "Not connected" : "Not connected: paste the server's token below",
      connecting: "Connecting…",
      connected: this.client && this.client.hello ? `Connected to LayerBridge ${this.client.hello.version}` : "Connected",
      reconnecting: "Connection lost, reconnecting…",
      disconnected: "Not connected",
    };
    text.textContent = lines[state] || state;
    dot.className = `dot ${state}`;
    if (state !== "connected") this.$("model-state").textContent = "";
  }

  setBusy(busy) {
    this.busy = busy;
    for (const id of ["decompose", "decompose-layer", "connect"]) {
      const el = this.$(id);
      if (busy) el.setAttribute("disabled", "");
      else el.removeAttribute("disabled");
    }
    this.$("cancel").style.display = busy ? "" : "none";
    this.$("progress-box").style.display = busy ? "" : "none";
  }

  showProgress(fraction, text) {
    const bar = this.$("progress");
    bar.value = Math.round(fraction * 100);
    bar.setAttribute("value", String(Math.round(fraction * 100)));
    this.$("progress-text").textContent = text;
  }

  showMessage(text) {
    this.$("message").textContent = text;
  }

  clearError() {
    this.lastError = null;
    this.$("error-box").style.display = "none";
  }

  showError(error) {
    const e = error instanceof LayerBridgeError ? error : new LayerBridgeError("internal", String((error && error.message) || error));
    this.lastError = {
      code: e.code,
      message: e.message,
      details: e.details,
      panel: CLIENT_NAME,
      server: this.hello ? this.hello.version : null,
      address: this.settings.address,
      time: new Date().toISOString(),
      stack: error && error.stack ? String(error.stack).split("\n").slice(0, 6).join("\n") : undefined,
    };
    this.$("error-text").textContent = e.message;
    this.$("error-code").textContent = e.code;
    this.$("error-box").style.display = "";
  }

  async copyError() {
    if (!this.lastError) return;
    const text = JSON.stringify(this.lastError, null, 2);
    const clip = this.deps.clipboard;
    try {
      if (clip && clip.writeText) await clip.writeText(text);
      else if (clip && clip.setContent) await clip.setContent({ "text/plain": text });
      this.$("copy-error").textContent = "Copied";
      setTimeout(() => { this.$("copy-error").textContent = "Copy details"; }, 1500);
    } catch (_) {
      this.$("error-text").textContent = `${this.lastError.message}\n\n${text}`;
    }
  }

  cancel() {
    this.cancelRequested = true;
    this.showProgress(0, "Cancelling…");
    if (this.client) this.client.cancel();
  }

  /**
   * The panel or the plugin is going away (UXP's destroy hooks: the plugin unloaded, Photoshop
   * quitting). A running job is cancelled on the server, as a closed connection alone leaves it
   * running there, and the connection is closed. The next action connects again.
   */
  destroy() {
    if (this.statusTimer) clearInterval(this.statusTimer);
    this.statusTimer = null;
    this.cancelRequested = this.busy;
    const client = this.client;
    this.client = null;
    return client ? client.shutdown() : Promise.resolve();
  }

  /** Decompose the document (or selection) or the selected layer, start to finish. */
  async run(mode) {
    if (this.busy) return;
    this.clearError();
    this.showMessage("");
    this.persist();
    this.cancelRequested = false;
    let params;
    try {
      params = buildParams(this.settings, "", this.options);
    } catch (error) {
      this.showError(error);
      return;
    }
    this.setBusy(true);
    const started = Date.now();
    try {
      this.showProgress(0, "Reading pixels…");
      const source = await layers.readSource(mode, this.client && this.client.hello ? this.client.hello.limits : null);
      if (this.cancelRequested) throw new LayerBridgeError("cancelled", "Cancelled.");
      if (!this.client || !this.client.connected) await this.connect();
      params.name = source.name;
      this.showProgress(0, "Sending image…");
      const result = await this.client.decompose(source, params, {
        onProgress: (p) => this.showProgress(progressFraction(p), describeProgress(p)),
      });
      if (this.cancelRequested) throw new LayerBridgeError("cancelled", "Cancelled.");
      this.showProgress(1, "Adding layers…");
      const plan = await layers.insertLayers(source, result, {
        isCancelled: () => this.cancelRequested,
        onProgress: (fraction, item) => this.showProgress(fraction, item ? `Adding ${item.name}` : "Done"),
      });
      const seconds = Math.round((Date.now() - started) / 1000);
      this.showMessage(doneLine(source, plan, seconds));
      if (result.seed !== undefined && result.seed !== null) {
        this.$("last-seed").textContent = `Last seed: ${result.seed}`;
        this.$("last-seed").dataset.seed = String(result.seed);
        this.$("seed-row").style.display = "";
      }
      // Without a prompt the model described the picture itself: that description, to edit as the prompt.
      const caption = !String(params.prompt || "").trim() && typeof result.caption === "string" ? result.caption.trim() : "";
      this.$("last-caption").textContent = caption ? `Described as: “${shortened(caption, CAPTION_SHOWN)}”` : "";
      this.$("last-caption").dataset.caption = caption;
      this.$("last-caption").title = caption;
      this.$("caption-row").style.display = caption ? "" : "none";
    } catch (error) {
      if (error && error.code === "cancelled") this.showMessage("Cancelled; the document was left as it was.");
      else this.showError(error);
    } finally {
      this.setBusy(false);
      this.refreshStatus().catch(() => {});
    }
  }
}

/** At most `max` characters of `text`, cut at the end with "…". */
function shortened(text, max) {
  return text.length <= max ? text : `${text.slice(0, max).trimEnd()}…`;
}

module.exports = { Panel, modelLine, doneLine };
