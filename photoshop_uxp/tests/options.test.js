// The panel's layer range, resolutions and presets come from the server's hello (job_options): the
// shim's fake server announcing other options, or none (an older server: the panel's own), and the
// real server on the tiny model. index.html in Chromium through the UXP shim.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { ORIGIN, launch, openPanel, unavailable } = require("./support/panel-page.js");
const server = require("./support/server.js");
const { FALLBACK_JOB_OPTIONS } = require("../src/protocol.js");

const OTHER = {
  presets: [
    { name: "best", label: "Best", steps: 50, cfg_until: 1.0, caption_tokens: 512, name_layers: true, summary: "the exact recipe" },
    { name: "draft", label: "Draft", steps: 8, cfg_until: 0.25, caption_tokens: 64, name_layers: false, summary: "8 steps, a quick look" },
  ],
  preset: "draft",
  layers: { min: 3, max: 6, default: 5 },
  resolution: { choices: [512, 640, 1024], default: 1024 },
  steps: { min: 4, max: 40, default: null },
  cfg_scale: { min: 1.0, max: 8.0, default: 2.5 },
  caption_language: { choices: ["en", "zh", "de"], default: "de" },
};

/** The controls as the panel built them, and as the shim's widgets render them. */
function controls(page) {
  return page.evaluate(() => {
    const items = (id) => Array.from(document.querySelectorAll(`#${id} sp-menu-item`)).map((i) => ({
      value: i.getAttribute("value"), label: i.textContent, title: i.getAttribute("title") || "",
    }));
    const shown = (id) => {
      const select = document.querySelector(`#${id} select`);
      return { options: Array.from(select.options).map((o) => o.value), chosen: select.options[select.selectedIndex].value };
    };
    const slider = document.getElementById("layers");
    const range = slider.querySelector("input");
    return {
      layers: { min: slider.getAttribute("min"), max: slider.getAttribute("max"), value: Number(slider.value), shown: document.getElementById("layers-value").textContent },
      rendered: { min: range.min, max: range.max },
      resolution: items("resolution"),
      preset: items("preset"),
      resolutionShown: shown("resolution"),
      presetShown: shown("preset"),
    };
  });
}

async function connected(page) {
  await page.waitForFunction(() => document.getElementById("conn-state").textContent.startsWith("Connected to LayerBridge"), null, { timeout: 30000 });
}

test("a server that announces other options: the controls follow them", { skip: unavailable(), timeout: 120000 }, async () => {
  const browser = await launch();
  try {
    // saved before: 8 layers and Fast, which this server does not offer
    const settings = { layers: 8, resolution: 640, preset: "fast", steps: "", prompt: "", seed: "" };
    const { page, errors } = await openPanel(browser, { jobOptions: OTHER, settings });
    await connected(page);
    await page.waitForFunction(() => document.querySelectorAll("#preset sp-menu-item").length === 2, null, { timeout: 10000 });
    const c = await controls(page);
    assert.deepEqual(c.layers, { min: "3", max: "6", value: 6, shown: "6" }, "8 layers moved into 3 to 6");
    assert.deepEqual(c.rendered, { min: "3", max: "6" });
    assert.deepEqual(c.resolution.map((i) => [i.value, i.label]), [["512", "512 px"], ["640", "640 px"], ["1024", "1024 px"]]);
    assert.deepEqual(c.preset, [
      { value: "best", label: "Best", title: "the exact recipe" },
      { value: "draft", label: "Draft", title: "8 steps, a quick look" },
    ]);
    assert.deepEqual(c.resolutionShown, { options: ["512", "640", "1024"], chosen: "640" }, "the saved resolution is offered: kept");
    assert.deepEqual(c.presetShown, { options: ["best", "draft"], chosen: "draft" }, "Fast is not offered: the server's default");

    // 512 px, a resolution only this server has, is picked and sent
    await page.evaluate(() => {
      const select = document.querySelector("#resolution select");
      select.selectedIndex = 0;
      select.dispatchEvent(new Event("change", { bubbles: true }));
    });
    await page.click("#decompose");
    await page.waitForFunction(() => window.__sent.some((m) => m.type === "submit"), null, { timeout: 20000 });
    const submit = await page.evaluate(() => window.__sent.find((m) => m.type === "submit"));
    assert.deepEqual([submit.params.layers, submit.params.resolution, submit.params.preset], [6, 512, "draft"]);
    const saved = JSON.parse(await page.evaluate(() => localStorage.getItem("layerbridge.settings.v1")));
    assert.deepEqual([saved.layers, saved.resolution, saved.preset], [6, 512, "draft"]);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test("a server older than job_options: the panel's own choices", { skip: unavailable(), timeout: 120000 }, async () => {
  const browser = await launch();
  try {
    const settings = { layers: 7, resolution: 1024, preset: "balanced", steps: "", prompt: "", seed: "" };
    const { page, errors } = await openPanel(browser, { settings, capabilities: [] });
    await connected(page);
    const c = await controls(page);
    const own = FALLBACK_JOB_OPTIONS;
    // Nor does it announce text_layers or split_elements: both options and Split layer are greyed out,
    // and a job does not send them (an older server refuses unknown fields).
    assert.deepEqual(await page.evaluate(() => ["text-layers", "split-elements", "split-layer"]
      .map((id) => document.getElementById(id).hasAttribute("disabled"))), [true, true, true]);
    await page.click("#decompose");
    await page.waitForFunction(() => window.__sent.some((m) => m.type === "submit"), null, { timeout: 20000 });
    const submit = await page.evaluate(() => window.__sent.find((m) => m.type === "submit"));
    assert.ok(!("text_layers" in submit.params) && !("split_elements" in submit.params), JSON.stringify(submit.params));
    assert.deepEqual(c.layers, { min: String(own.layers.min), max: String(own.layers.max), value: 7, shown: "7" });
    assert.deepEqual(c.resolution.map((i) => [i.value, i.label]), [["640", "640 px"], ["1024", "1024 px"]]);
    assert.deepEqual(c.preset.map((i) => [i.value, i.label]), [["best", "Best"], ["balanced", "Balanced"], ["fast", "Fast"]]);
    assert.deepEqual(c.resolutionShown.chosen, "1024");
    assert.deepEqual(c.presetShown.chosen, "balanced");
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

const SKIP_REAL = unavailable() || (server.available() ? false : "no .venv/bin/layerbridge (run scripts/setup.sh --test)");

test("the real server: the controls are what its hello announces", { skip: SKIP_REAL, timeout: 180000 }, async () => {
  const srv = await server.startServer({ allowedOrigins: [ORIGIN] });
  const browser = await launch();
  try {
    const settings = { layers: 3, resolution: 640, steps: "", prompt: "", seed: "", preset: "fast" };
    const { page, errors } = await openPanel(browser, { realServer: { address: srv.address, token: srv.token, settings } });
    await connected(page);
    const hello = await page.evaluate(() => window.__received.find((m) => m.type === "hello"));
    const announced = hello.job_options;
    assert.ok(hello.capabilities.includes("job_options") && announced, "the server announces its job options");
    const c = await controls(page);
    assert.deepEqual([c.layers.min, c.layers.max, c.layers.value], [String(announced.layers.min), String(announced.layers.max), 3]);
    assert.deepEqual(c.resolution.map((i) => Number(i.value)), announced.resolution.choices);
    assert.deepEqual(c.preset, announced.presets.map((p) => ({ value: p.name, label: p.label, title: p.summary })));
    assert.equal(c.presetShown.chosen, "fast");
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await srv.stop();
  }
});
