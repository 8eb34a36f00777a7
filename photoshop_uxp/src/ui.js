// The panel's UI: binds index.html's widgets to settings, the client and the Photoshop side.
"use strict";

const { LayerBridgeClient } = require("./client.js");
const {
  CLIENT_NAME, LayerBridgeError, buildParams, describeProgress, features, jobOptions, progressFraction, splitParams,
} = require("./protocol.js");
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

/** What became of the text blocks, as a sentence (empty when there were none). */
function textLine(report) {
  if (!report || !report.editable) return "";
  if (report.unavailable) {
    return `The text stays pixels: this Photoshop version cannot make text layers (Photoshop 2023, 24.2, or newer can).`;
  }
  const parts = [];
  if (report.layers) parts.push(`${report.layers} editable text layer${report.layers === 1 ? "" : "s"}`);
  const kept = report.kept.font + report.kept.size;
  if (kept) {
    const why = [report.kept.font ? "no matching font is installed" : "", report.kept.size ? "its size is beyond Photoshop's range" : ""].filter(Boolean).join(", or ");
    parts.push(`${kept} text block${kept === 1 ? "" : "s"} kept as pixels (${why})`);
  }
  if (report.substituted && report.substituted.size) {
    parts.push(`fonts not installed: ${[...report.substituted].map(([wanted, used]) => `${wanted} set in ${used}`).join(", ")}`);
  }
  return parts.length ? `${parts.join("; ")}.` : "";
}

/** Where the layers went, for the line under the buttons. */
function doneLine(source, plan, seconds) {
  const count = `${plan.layers.length} layers`;
  const text = textLine(plan.text);
  const tail = text ? ` ${text.charAt(0).toUpperCase()}${text.slice(1)}` : "";
  if (plan.newDocument) {
    return `“${source.document.name}” was closed during the decomposition: the ${count} are in a new document, “${plan.newDocument}” (${seconds} s).${tail}`;
  }
  return `Added ${count} in “${plan.groupName}” (${seconds} s). One Undo removes them.${tail}`;
}

/** What Split layer did, for the line under the buttons. */
function splitLine(source, plan) {
  if (plan.nothing) return `“${source.name}” is one piece: nothing to split.`;
  const text = textLine(plan.text);
  return `Split “${source.name}” into ${plan.elements} layers. One Undo puts it back.${text ? ` ${text.charAt(0).toUpperCase()}${text.slice(1)}` : ""}`;
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
    this.splitting = false;
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
    this.useFeatures(null);
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
    this.setChecked("text-layers", s.textLayers);
    this.setChecked("split-elements", s.splitElements);
  }

  // Checkboxes through the documented sp-checkbox API: the `checked` attribute and property.
  setChecked(id, on) {
    const box = this.$(id);
    box.checked = Boolean(on);
    if (on) box.setAttribute("checked", "");
    else box.removeAttribute("checked");
  }

  isChecked(id) {
    const box = this.$(id);
    return typeof box.checked === "boolean" ? box.checked : box.hasAttribute("checked");
  }

  /**
   * The two options and Split layer follow what the connected server can do (its capabilities);
   * before a server answers, they are offered as the panel's own.
   */
  useFeatures(hello) {
    const can = hello ? features(hello) : { text_layers: true, split_elements: true };
    const offer = (id, available, why) => {
      const el = this.$(id);
      if (available) {
        el.removeAttribute("disabled");
        el.removeAttribute("title");
      } else {
        el.setAttribute("disabled", "");
        el.setAttribute("title", why);
      }
    };
    const older = "This server is older: update LayerBridge for this.";
    offer("text-layers", can.text_layers, older);
    offer("split-elements", can.split_elements, older);
    this.canSplit = can.split_elements;
    this.showSplit();
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
      textLayers: this.isChecked("text-layers"),
      splitElements: this.isChecked("split-elements"),
    };
  }

  bind() {
    const on = (id, event, fn) => this.$(id).addEventListener(event, fn);
    const persist = () => this.persist();
    on("layers", "input", () => { this.$("layers-value").textContent = String(Math.round(Number(this.$("layers").value))); });
    for (const id of ["layers", "resolution", "preset", "steps", "prompt", "seed", "text-layers", "split-elements"]) on(id, "change", persist);
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
    on("split-layer", "click", () => this.split());
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
        if (state === "connected") {
          this.useOptions(hello);
          this.useFeatures(hello);
        }
        this.showConnection(state);
      },
    });
    return this.client;
  }

  async reconnect() {
    if (this.busy || this.splitting) return;
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
    this.showSplit();
  }

  /** Split layer needs no model, so a running decomposition leaves it usable; one split at a time. */
  showSplit() {
    const el = this.$("split-layer");
    if (this.splitting || this.canSplit === false) el.setAttribute("disabled", "");
    else el.removeAttribute("disabled");
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
      const can = features(this.client.hello);
      if (can.text_layers) params.text_layers = this.settings.textLayers;
      if (can.split_elements) params.split_elements = this.settings.splitElements;
      this.showProgress(0, "Sending image…");
      const result = await this.client.decompose(source, params, {
        onProgress: (p) => this.showProgress(progressFraction(p), describeProgress(p)),
      });
      if (this.cancelRequested) throw new LayerBridgeError("cancelled", "Cancelled.");
      this.showProgress(1, "Adding layers…");
      const plan = await layers.insertLayers(source, result, {
        textLayers: Boolean(params.text_layers),
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

  /**
   * Split layer: the selected pixel layer becomes a group of its elements (the server's split task, no
   * model), in one history step. It runs beside a decomposition.
   */
  async split() {
    if (this.splitting) return;
    this.splitting = true;
    this.showSplit();
    this.clearError();
    this.persist();
    try {
      const source = await layers.readSource("split", this.client && this.client.hello ? this.client.hello.limits : null);
      if (!this.client || !this.client.connected) await this.connect();
      if (!features(this.client.hello).split_elements) {
        throw new LayerBridgeError("unsupported", `The server (LayerBridge ${this.client.hello.version}) cannot split layers: update it.`);
      }
      const textLayers = features(this.client.hello).text_layers && this.settings.textLayers;
      this.showMessage(`Splitting “${source.name}”…`);
      const result = await this.client.split(source, splitParams(source.name, textLayers));
      const plan = await layers.splitLayer(source, result, { textLayers });
      this.showMessage(splitLine(source, plan));
    } catch (error) {
      if (error && error.code === "cancelled") this.showMessage("Cancelled; the layer was left as it was.");
      else this.showError(error);
    } finally {
      this.splitting = false;
      this.showSplit();
    }
  }
}

/** At most `max` characters of `text`, cut at the end with "…". */
function shortened(text, max) {
  return text.length <= max ? text : `${text.slice(0, max).trimEnd()}…`;
}

module.exports = { Panel, modelLine, doneLine, splitLine, textLine };
