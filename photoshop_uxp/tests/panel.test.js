// After a decomposition: the seed it used and, when no prompt was given, the model's own description of the
// picture, each with a button that puts it back into the settings. index.html in Chromium through the UXP shim,
// against the real server on the tiny model (whose random weights describe the picture in noise).
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { ORIGIN, launch, openPanel, unavailable } = require("./support/panel-page.js");
const server = require("./support/server.js");

const SKIP = unavailable() || (server.available() ? false : "no .venv/bin/layerbridge (run scripts/setup.sh --test)");

/** Runs a decomposition from the panel's button; resolves with the server's result message. */
async function decompose(page) {
  await page.waitForFunction(() => document.getElementById("conn-state").textContent.startsWith("Connected to LayerBridge"), null, { timeout: 30000 });
  const before = await page.evaluate(() => {
    document.getElementById("message").textContent = "";
    return window.__received.filter((m) => m.type === "result").length;
  });
  await page.click("#decompose");
  await page.waitForFunction(() => document.getElementById("message").textContent.startsWith("Added")
    || document.getElementById("error-box").style.display !== "none", null, { timeout: 120000 });
  assert.equal(await page.isVisible("#error-box"), false, await page.textContent("#error-text"));
  assert.match(await page.textContent("#message"), /^Added 2 layers/);
  return page.evaluate((n) => window.__received.filter((m) => m.type === "result")[n], before);
}

test("the last seed and the model's description go back into the settings", { skip: SKIP, timeout: 300000 }, async () => {
  const srv = await server.startServer({ allowedOrigins: [ORIGIN] });
  const browser = await launch();
  try {
    const settings = { layers: 2, resolution: 640, steps: 2, prompt: "", seed: "7", preset: "fast" };
    const { page, errors } = await openPanel(browser, { realServer: { address: srv.address, token: srv.token, settings } });
    const result = await decompose(page);
    assert.equal(result.seed, 7);
    assert.ok(result.caption.trim(), "the model described the picture");

    assert.equal(await page.textContent("#last-seed"), "Last seed: 7");
    assert.ok(await page.isVisible("#caption-row"));
    const shown = await page.textContent("#last-caption");
    assert.ok(shown.startsWith("Described as: “") && shown.includes(result.caption.trim().slice(0, 20)), shown);
    assert.equal(await page.getAttribute("#last-caption", "title"), result.caption.trim());

    await page.evaluate(() => { document.getElementById("seed").value = ""; });
    await page.click("#reuse-seed");
    await page.click("#use-caption");
    assert.equal(await page.evaluate(() => document.getElementById("seed").value), "7");
    assert.equal(await page.evaluate(() => document.getElementById("prompt").value), result.caption.trim());
    const saved = JSON.parse(await page.evaluate(() => localStorage.getItem("layerbridge.settings.v1")));
    assert.equal(saved.prompt, result.caption.trim());

    // With a prompt, the model does not describe the picture: nothing to offer
    await decompose(page);
    assert.equal(await page.isVisible("#caption-row"), false);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await srv.stop();
  }
});
