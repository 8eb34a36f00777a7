// Renders index.html in Debian's Chromium with a small shim for UXP (require, sp-* widgets, a fake
// server), drives the panel through a decomposition and a cancel, and saves a screenshot.
// UPDATE_SCREENSHOTS=1 writes it to docs/images/photoshop-panel.png; otherwise to a temp file.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const PANEL = path.resolve(__dirname, "..");
const DOCS_IMAGE = path.resolve(PANEL, "..", "docs", "images", "photoshop-panel.png");
const TYPES = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json" };

test("the panel renders and runs in Chromium (screenshot)", { skip: fs.existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing`, timeout: 120000 }, async () => {
  const { chromium } = require("playwright-core");
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
    timeout: 60000,
  });
  try {
    const context = await browser.newContext({ viewport: { width: 280, height: 600 }, deviceScaleFactor: 2 });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.route("http://panel.test/**", async (route) => {
      const rel = decodeURIComponent(new URL(route.request().url()).pathname).replace(/^\/+/, "");
      const file = path.resolve(PANEL, rel);
      if (!file.startsWith(PANEL + path.sep) || !fs.existsSync(file)) {
        await route.fulfill({ status: 404, body: "not found" });
        return;
      }
      await route.fulfill({ status: 200, contentType: TYPES[path.extname(file)] || "application/octet-stream", body: fs.readFileSync(file) });
    });
    await page.addInitScript({ path: path.join(__dirname, "support", "browser-shim.js") });
    await page.goto("http://panel.test/index.html");

    await page.waitForFunction(() => document.getElementById("model-state").textContent.includes("Model ready"), null, { timeout: 20000 });
    assert.equal(await page.textContent("#conn-state"), "Connected to LayerBridge 0.1.0");
    assert.equal(await page.textContent("#model-state"), "Model ready on NVIDIA GeForce RTX 4090");

    // A designer's settings: six layers, a prompt; they persist.
    await page.evaluate(() => {
      const set = (id, value) => {
        const el = document.getElementById(id);
        el.value = value;
        el.dispatchEvent(new Event("input", { bubbles: true }));
        el.dispatchEvent(new Event("change", { bubbles: true }));
      };
      set("layers", "6");
      set("prompt", "A travel poster: fox, mountains, title text");
      // Quality: Fast, picked in the menu (the picker changes its selectedIndex and fires change).
      const quality = document.querySelector("#preset select");
      quality.selectedIndex = 2;
      quality.dispatchEvent(new Event("change", { bubbles: true }));
    });
    assert.equal(await page.textContent("#layers-value"), "6");
    const saved = JSON.parse(await page.evaluate(() => localStorage.getItem("layerbridge.settings.v1")));
    assert.equal(saved.layers, 6);
    assert.equal(saved.preset, "fast");
    assert.equal(saved.prompt, "A travel poster: fox, mountains, title text");

    await page.click("#decompose");
    await page.waitForFunction(() => document.getElementById("progress-text").textContent.includes("step 12 of 50"), null, { timeout: 20000 });
    assert.equal(await page.textContent("#progress-text"), "Denoising · step 12 of 50 · 31 s left");
    const submit = await page.evaluate(() => window.__sent.find((m) => m.type === "submit"));
    assert.deepEqual(submit.image, { format: "rgba8", width: 320, height: 200, bytes: 320 * 200 * 4, transfer: 1 });
    assert.equal(submit.params.layers, 6);
    assert.equal(submit.params.preset, "fast");
    assert.equal(submit.params.name, "Poster");
    assert.ok(await page.isVisible("#cancel"));

    const out = process.env.UPDATE_SCREENSHOTS === "1" ? DOCS_IMAGE : path.join(os.tmpdir(), "photoshop-panel.png");
    await page.screenshot({ path: out, fullPage: true });
    const png = fs.readFileSync(out);
    assert.equal(png.subarray(1, 4).toString(), "PNG");
    assert.equal(png.readUInt32BE(16), 560, "280 px wide at 2x");

    await page.click("#cancel");
    await page.waitForFunction(() => document.getElementById("message").textContent.startsWith("Cancelled"), null, { timeout: 10000 });
    assert.equal(await page.isVisible("#cancel"), false);
    const state = await page.evaluate(() => ({ layers: window.__doc.layers.map((l) => l.name), history: window.__doc.history }));
    assert.deepEqual(state, { layers: ["Background"], history: ["Open"] });
    assert.ok(await page.evaluate(() => window.__sent.some((m) => m.type === "cancel" && m.job === "j_demo")));
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});
