// Renders index.html in Debian's Chromium with a small shim for UXP (require, sp-* widgets, a fake
// server), drives the panel through a decomposition and a cancel, and saves a screenshot.
// UPDATE_SCREENSHOTS=1 writes it to docs/images/photoshop-panel.png; otherwise to a temp file.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

const { PANEL, launch, openPanel, unavailable } = require("./support/panel-page.js");

const DOCS_IMAGE = path.resolve(PANEL, "..", "docs", "images", "photoshop-panel.png");

test("the panel renders and runs in Chromium (screenshot)", { skip: unavailable(), timeout: 120000 }, async () => {
  const browser = await launch();
  try {
    const { page, errors } = await openPanel(browser);

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
    await page.waitForFunction(() => document.getElementById("progress-text").textContent.includes("step 12 of 20"), null, { timeout: 20000 });
    assert.equal(await page.textContent("#progress-text"), "Denoising · step 12 of 20 · 6 s left");
    const submit = await page.evaluate(() => window.__sent.find((m) => m.type === "submit"));
    assert.deepEqual(submit.image, { format: "rgba8", width: 320, height: 200, bytes: 320 * 200 * 4, transfer: 1 });
    assert.equal(submit.params.layers, 6);
    assert.equal(submit.params.preset, "fast");
    assert.equal(submit.params.steps, null, "Steps on auto: the preset's count");
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
