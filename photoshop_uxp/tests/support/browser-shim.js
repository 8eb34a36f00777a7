// Lets index.html run in a plain Chromium for the browser tests: a CommonJS `require` (UXP's
// module system) that maps `photoshop` to the Photoshop double and `uxp` to a stub that shows the
// panel and keeps the entrypoints it was given (window.__entrypoints, to call UXP's lifecycle
// hooks), minimal stand-ins for UXP's built-in sp-* widgets, and a fake LayerBridge server behind
// WebSocket (announcing window.__jobOptions as its job_options when set, none otherwise, and the
// capabilities window.__capabilities, by default text_layers and split_elements; it answers the split
// task at once with two elements). window.__badge adds a pixel layer "Badge" to split. With window.__realServer = {address, token, settings} set beforehand, the page talks
// to that real server instead, and keeps the text messages it receives in window.__received.
// Runs as a Playwright init script, before the page's own scripts.
(() => {
  "use strict";

  // ---- require(): synchronous CommonJS loader over same-origin XHR ------------------------------
  const cache = {};
  const builtins = {};
  function resolve(from, name) {
    const base = from.slice(0, from.lastIndexOf("/") + 1);
    const url = new URL(name, location.origin + base).pathname;
    return url.endsWith(".js") ? url : `${url}.js`;
  }
  function load(path) {
    if (cache[path]) return cache[path].exports;
    const xhr = new XMLHttpRequest();
    xhr.open("GET", path, false);
    xhr.send();
    if (xhr.status !== 200) throw new Error(`require: ${path} answered ${xhr.status}`);
    const module = { exports: {} };
    cache[path] = module;
    // eslint-disable-next-line no-new-func
    new Function("module", "exports", "require", `${xhr.responseText}\n//# sourceURL=${path}`)(
      module, module.exports, (name) => requireFrom(path, name));
    return module.exports;
  }
  function requireFrom(from, name) {
    if (builtins[name]) return builtins[name]();
    return load(resolve(from, name));
  }
  window.require = (name) => requireFrom("/", name);

  // ---- photoshop: the double with an open document ---------------------------------------------
  let photoshop = null;
  builtins.photoshop = () => {
    if (!photoshop) {
      const { Photoshop, pattern } = load("/tests/support/photoshop-double.js");
      const ps = new Photoshop();
      const doc = ps.newDocument({ width: 320, height: 200, title: "Poster.psd" });
      doc.addLayer({ name: "Background", at: { left: 0, top: 0, width: 320, height: 200 }, rgba: pattern(320, 200, 3), background: true });
      if (window.__badge) {
        // a pixel layer of two 4×4 squares, 8 px apart, for Split layer
        const rgba = new Uint8Array(16 * 4 * 4);
        for (let y = 0; y < 4; y++) for (const x0 of [0, 12]) for (let x = x0; x < x0 + 4; x++) rgba.set([250, 200, 20, 255], (y * 16 + x) * 4);
        doc.addLayer({ name: "Badge", at: { left: 100, top: 50, width: 16, height: 4 }, rgba });
      }
      window.__ps = ps;
      window.__doc = doc;
      photoshop = ps.module();
    }
    return photoshop;
  };
  builtins.uxp = () => ({
    entrypoints: {
      setup(config) {
        window.__entrypoints = config;
        setTimeout(() => Object.values(config.panels)[0].show(), 0);
      },
    },
    storage: { secureStorage: null, localFileSystem: { getFileForOpening: async () => null } },
  });

  // ---- sp-* widgets ---------------------------------------------------------------------------------
  const css = `
    :root { --uxp-host-background-color: #323232; --uxp-host-text-color: #e1e1e1;
            --uxp-host-text-color-secondary: #a3a3a3; --uxp-host-font-size: 12px; }
    html { background: #323232; font-family: "Adobe Clean", "Source Sans Pro", "DejaVu Sans", sans-serif; }
    sp-heading { display: block; font-size: 15px; font-weight: 700; margin: 2px 0 4px; }
    sp-body { display: block; font-size: 12px; line-height: 1.4; }
    sp-detail { display: block; font-size: 11px; letter-spacing: 0.02em; }
    sp-label { display: block; font-size: 11px; color: #b8b8b8; margin-bottom: 3px; }
    sp-divider { display: block; height: 1px; background: #4a4a4a; margin: 6px 0 10px; }
    sp-button, sp-action-button { display: inline-block; box-sizing: border-box; font-size: 12px; font-weight: 700;
      border-radius: 14px; padding: 4px 14px; border: 2px solid #8e8e8e; color: #e1e1e1; text-align: center; cursor: default; }
    sp-button[variant="cta"] { background: #1473e6; border-color: #1473e6; color: #fff; }
    sp-button[variant="warning"] { border-color: #e34850; color: #f07078; }
    sp-button[disabled] { opacity: 0.4; }
    sp-action-button { border-radius: 4px; border-width: 1px; padding: 2px 8px; font-weight: 400; background: #3e3e3e; }
    sp-action-button[quiet] { border-color: transparent; background: transparent; }
    sp-textfield input, sp-textarea textarea, sp-picker select { box-sizing: border-box; width: 100%; background: #1e1e1e;
      color: #e1e1e1; border: 1px solid #555; border-radius: 4px; padding: 4px 6px; font: inherit; font-size: 12px; }
    sp-textarea textarea { min-height: 44px; resize: none; }
    sp-textfield, sp-textarea, sp-picker, sp-slider, sp-progressbar { display: block; }
    sp-picker sp-menu { display: none; }
    sp-slider input { width: 100%; accent-color: #e1e1e1; margin: 2px 0; }
    sp-progressbar .track { height: 4px; background: #4a4a4a; border-radius: 2px; margin: 6px 0; }
    sp-progressbar .fill { height: 4px; background: #1473e6; border-radius: 2px; }
    sp-checkbox { display: flex; align-items: center; font-size: 12px; line-height: 1.6; }
    sp-checkbox input { accent-color: #1473e6; margin: 0 6px 0 0; }
    sp-checkbox[disabled] { opacity: 0.4; }`;
  document.addEventListener("DOMContentLoaded", () => {
    const style = document.createElement("style");
    style.textContent = css;
    document.head.prepend(style);
  });

  function proxyValue(Cls, selector) {
    Object.defineProperty(Cls.prototype, "value", {
      get() { return this.inner(selector).value; },
      set(v) { this.inner(selector).value = v; },
    });
  }
  class Field extends HTMLElement {
    inner(tag) {
      let el = this.querySelector(tag);
      if (!el) {
        el = document.createElement(tag);
        if (tag === "input") el.type = this.getAttribute("type") || "text";
        if (this.hasAttribute("placeholder")) el.placeholder = this.getAttribute("placeholder");
        if (this.hasAttribute("value")) el.value = this.getAttribute("value");
        for (const a of ["min", "max", "step"]) if (this.hasAttribute(a)) el.setAttribute(a, this.getAttribute(a));
        this.appendChild(el);
      }
      return el;
    }
  }
  class TextField extends Field { connectedCallback() { this.inner("input"); } }
  proxyValue(TextField, "input");
  class TextArea extends Field { connectedCallback() { this.inner("textarea"); } }
  proxyValue(TextArea, "textarea");
  class Slider extends Field {
    connectedCallback() { const el = this.inner("input"); el.type = "range"; }
    // min and max are attributes of sp-slider, which the panel sets from the server's options
    static get observedAttributes() { return ["min", "max"]; }
    attributeChangedCallback(name, _, value) {
      const el = this.querySelector("input");
      if (el) el.setAttribute(name, value);
    }
  }
  proxyValue(Slider, "input");
  class Picker extends HTMLElement {
    // The menu's items as options, made again when the items have changed (the panel builds them from
    // the server's options).
    select() {
      let sel = this.querySelector("select");
      if (!sel) {
        sel = document.createElement("select");
        this.appendChild(sel);
      }
      const items = Array.from(this.querySelectorAll("sp-menu-item"));
      const same = items.length === sel.options.length
        && items.every((item, i) => sel.options[i].value === item.getAttribute("value") && sel.options[i].text === item.textContent.trim());
      if (!same) {
        sel.length = 0;
        for (const item of items) {
          const option = new Option(item.textContent.trim(), item.getAttribute("value"));
          option.selected = item.hasAttribute("selected");
          option.title = item.getAttribute("title") || "";
          sel.add(option);
        }
      }
      return sel;
    }
    connectedCallback() { setTimeout(() => this.select(), 0); }
    // Like UXP's sp-picker, only selectedIndex (no value property).
    get selectedIndex() { return this.select().selectedIndex; }
    set selectedIndex(i) { this.select().selectedIndex = i; }
  }
  class ProgressBar extends HTMLElement {
    connectedCallback() {
      if (!this.firstChild) this.innerHTML = '<div class="track"><div class="fill"></div></div>';
      this.paint();
    }
    static get observedAttributes() { return ["value"]; }
    attributeChangedCallback() { this.paint(); }
    paint() {
      const fill = this.querySelector(".fill");
      if (fill) fill.style.width = `${Math.max(0, Math.min(100, Number(this.getAttribute("value") || 0)))}%`;
    }
  }
  // sp-checkbox: the `checked` property and attribute, a `change` event when clicked (from the inner box).
  class Checkbox extends HTMLElement {
    box() {
      let el = this.querySelector("input");
      if (!el) {
        el = document.createElement("input");
        el.type = "checkbox";
        el.checked = this.hasAttribute("checked");
        this.prepend(el);
      }
      return el;
    }
    connectedCallback() { this.box(); }
    get checked() { return this.box().checked; }
    set checked(v) { this.box().checked = Boolean(v); }
    static get observedAttributes() { return ["disabled"]; }
    attributeChangedCallback() { this.box().disabled = this.hasAttribute("disabled"); }
  }
  customElements.define("sp-checkbox", Checkbox);
  customElements.define("sp-textfield", TextField);
  customElements.define("sp-textarea", TextArea);
  customElements.define("sp-slider", Slider);
  customElements.define("sp-picker", Picker);
  customElements.define("sp-progressbar", ProgressBar);

  // ---- a real LayerBridge server, when the test gives one -----------------------------------------
  if (window.__realServer) {
    const Real = window.WebSocket;
    window.__received = [];
    window.WebSocket = class extends Real {
      constructor(url) {
        super(url);
        this.addEventListener("message", (event) => {
          if (typeof event.data === "string") window.__received.push(JSON.parse(event.data));
        });
      }
    };
    localStorage.setItem("layerbridge.token", window.__realServer.token);
    const { address, settings } = window.__realServer;
    localStorage.setItem("layerbridge.settings.v1", JSON.stringify({ ...settings, address }));
    return;
  }

  // ---- a fake LayerBridge server behind WebSocket -----------------------------------------------------
  window.__sent = [];
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.bufferedAmount = 0;
      this.binaryType = "blob";
      setTimeout(() => { this.readyState = 1; this.onopen && this.onopen({}); }, 10);
    }
    reply(message) {
      setTimeout(() => this.onmessage && this.onmessage({ data: JSON.stringify(message) }), 5);
    }
    send(data) {
      if (typeof data !== "string") return;
      const m = JSON.parse(data);
      window.__sent.push(m);
      if (m.type === "hello") {
        // an older server announces no job_options; window.__jobOptions makes this one announce those
        const options = window.__jobOptions ? { job_options: window.__jobOptions } : {};
        const capabilities = window.__capabilities || ["text_layers", "split_elements"];
        this.reply({ type: "hello", server: "layerbridge", version: "0.1.0", protocol: 1, min_protocol: 1, capabilities, limits: { chunk_bytes: 4194304 }, ...options });
      } else if (m.type === "status") {
        this.reply({ type: "status", ref: m.ref, model: { id: "Qwen/Qwen-Image-Layered", state: "ready" },
          device: { kind: "cuda", name: "NVIDIA GeForce RTX 4090" }, queue: { length: 0, running: null } });
      } else if (m.type === "submit" && m.task === "split") {
        // the split task answers at once, even while the model job runs: two 4×4 elements
        this.reply({ type: "accepted", ref: m.ref, job: "j_split", position: 0 });
        const square = new Uint8Array(64);
        for (let i = 0; i < 16; i++) square.set([250, 200, 20, 255], i * 4);
        const element = (index, x, transfer) => ({ index, name: `${m.params.name} ${index + 1}`, x, y: 0, width: 4, height: 4,
          bytes: 64, transfer, group: false, parent: null, text: [] });
        this.reply({ type: "progress", job: "j_split", state: "done", stage: "done", step: 0, total: 0, eta_s: null, position: null });
        this.reply({ type: "result", job: "j_split", name: m.params.name, canvas: { width: m.image.width, height: m.image.height },
          layers: [element(0, 0, 901), element(1, 12, 902)], seed: null, caption: "", restored: false, timings: { split_s: 0.01 }, notes: [] });
        for (const transfer of [901, 902]) {
          const frame = new Uint8Array(12 + 64);
          frame.set([0x4c, 0x42, 0x50, 0x58]);
          new DataView(frame.buffer).setUint32(4, transfer, true);
          frame.set(square, 12);
          setTimeout(() => this.onmessage && this.onmessage({ data: frame.buffer }), 10);
        }
      } else if (m.type === "submit") {
        this.reply({ type: "accepted", ref: m.ref, job: "j_demo", position: 0 });
        this.reply({ type: "progress", job: "j_demo", state: "running", stage: "denoising", step: 12, total: 20, eta_s: 6.2, position: 0 });
      } else if (m.type === "cancel") {
        this.reply({ type: "progress", job: m.job, state: "cancelled", stage: "cancelled", step: 12, total: 20, eta_s: null, position: 0 });
      }
    }
    close() {
      this.readyState = 3;
      setTimeout(() => this.onclose && this.onclose({ code: 1000 }), 0);
    }
  }
  window.WebSocket = FakeSocket;
  localStorage.setItem("layerbridge.token", "demo-token");
})();
