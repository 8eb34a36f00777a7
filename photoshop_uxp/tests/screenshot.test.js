// Renders index.html in Debian's Chromium with a small shim for UXP (require, sp-* widgets, a fake
// server), drives the panel through a decomposition, a Split layer while it runs, and a cancel, and
// saves a screenshot showing the options.
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
    const { page, errors } = await openPanel(browser, { badge: true });

    await page.waitForFunction(() => document.getElementById("model-state").textContent.includes("Model ready"), null, { timeout: 20000 });
    assert.equal(await page.textContent("#conn-state"), "Connected to LayerBridge 0.1.0");
    assert.equal(await page.textContent("#model-state"), "Model ready on NVIDIA GeForce RTX 4090");
    // Both options on by default, offered as the server announces them.
    assert.deepEqual(await page.evaluate(() => ["text-layers", "split-elements"].map((id) => {
      const box = document.getElementById(id);
      return [box.textContent.trim(), box.checked, box.hasAttribute("disabled")];
    })), [["Text as editable text", true, false], ["One layer per element", true, false]]);

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
      // "Text as editable text" off (clicked like a user), "One layer per element" left on
      document.querySelector("#text-layers input").click();
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
    assert.equal(saved.textLayers, false);
    assert.equal(saved.splitElements, true);

    await page.click("#decompose");
    await page.waitForFunction(() => document.getElementById("progress-text").textContent.includes("step 12 of 20"), null, { timeout: 20000 });
    assert.equal(await page.textContent("#progress-text"), "Denoising · step 12 of 20 · 6 s left");
    const submit = await page.evaluate(() => window.__sent.find((m) => m.type === "submit"));
    assert.deepEqual(submit.image, { format: "rgba8", width: 320, height: 200, bytes: 320 * 200 * 4, transfer: 1 });
    assert.equal(submit.params.layers, 6);
    assert.equal(submit.params.preset, "fast");
    assert.equal(submit.params.steps, null, "Steps on auto: the preset's count");
    assert.equal(submit.params.name, "Poster");
    assert.equal(submit.params.text_layers, false, "the option as set");
    assert.equal(submit.params.split_elements, true);
    assert.equal(submit.task, undefined, "a decomposition names no task");
    assert.ok(await page.isVisible("#cancel"));

    // Split layer while the model job runs: the selected layer becomes a group of its two elements.
    assert.equal(await page.getAttribute("#split-layer", "disabled"), null, "usable during a decomposition");
    await page.click("#split-layer");
    await page.waitForFunction(() => /^Split “/.test(document.getElementById("message").textContent)
      || document.getElementById("error-box").style.display === "", null, { timeout: 10000 });
    assert.equal(await page.textContent("#message"), "Split “Badge” into 2 layers. One Undo puts it back.");
    const split = await page.evaluate(() => window.__sent.find((m) => m.type === "submit" && m.task === "split"));
    assert.deepEqual(split.params, { name: "Badge", text_layers: false });
    assert.deepEqual(split.image, { format: "rgba8", width: 16, height: 4, bytes: 256, transfer: 2 });
    const afterSplit = await page.evaluate(() => ({
      top: window.__doc.layers.map((l) => l.name),
      inside: window.__doc.layers[0].layers.map((l) => [l.name, l.pixels.bounds.left, l.pixels.bounds.top]),
      history: window.__doc.history,
    }));
    assert.deepEqual(afterSplit, {
      top: ["Badge", "Background"], inside: [["Badge 2", 112, 50], ["Badge 1", 100, 50]], history: ["Open", "Split Layer"],
    });
    assert.ok(await page.isVisible("#cancel"), "the decomposition still runs");
    await page.click("#text-layers input"); // on again, as the picture shows the defaults
    assert.equal(JSON.parse(await page.evaluate(() => localStorage.getItem("layerbridge.settings.v1"))).textLayers, true);

    const out = process.env.UPDATE_SCREENSHOTS === "1" ? DOCS_IMAGE : path.join(os.tmpdir(), "photoshop-panel.png");
    await page.screenshot({ path: out, fullPage: true });
    const png = fs.readFileSync(out);
    assert.equal(png.subarray(1, 4).toString(), "PNG");
    assert.equal(png.readUInt32BE(16), 560, "280 px wide at 2x");

    await page.click("#cancel");
    await page.waitForFunction(() => document.getElementById("message").textContent.startsWith("Cancelled"), null, { timeout: 10000 });
    assert.equal(await page.isVisible("#cancel"), false);
    const state = await page.evaluate(() => ({ layers: window.__doc.layers.map((l) => l.name), history: window.__doc.history }));
    assert.deepEqual(state, { layers: ["Badge", "Background"], history: ["Open", "Split Layer"] }, "the cancel added nothing");
    assert.ok(await page.evaluate(() => window.__sent.some((m) => m.type === "cancel" && m.job === "j_demo")));
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});
