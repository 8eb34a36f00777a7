// UXP's destroy hooks (Photoshop quitting, the plugin unloaded, the panel destroyed): index.html and
// main.js in Chromium through the UXP shim, against the real server on the tiny model. The job that
// runs when a hook is called must end cancelled on the server, not run on for nobody.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { ORIGIN, launch, openPanel, unavailable } = require("./support/panel-page.js");
const server = require("./support/server.js");

const SKIP = unavailable() || (server.available() ? false : "no .venv/bin/layerbridge (run scripts/setup.sh --test)");
// Many steps, so that the job is still running when the hook is called; a prompt skips captioning.
const SETTINGS = { layers: 2, resolution: 640, steps: 100, prompt: "a test card", seed: "7" };
const FINAL = ["done", "failed", "cancelled"];

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The job's state as the server reports it once the job has ended. */
async function finalState(srv, job, timeoutMs = 120000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const answer = await fetch(`${srv.url}/v1/jobs/${job}`, { headers: { Authorization: `Bearer ${srv.token}` } });
    const state = await answer.json();
    if (FINAL.includes(state.state) || Date.now() > deadline) return state;
    await sleep(200);
  }
}

/** Starts a decomposition in the page and resolves with its job id once the server runs it. */
async function startJob(page) {
  await page.waitForFunction(() => document.getElementById("conn-state").textContent.startsWith("Connected to LayerBridge"), null, { timeout: 30000 });
  await page.click("#decompose");
  const handle = await page.waitForFunction(() => {
    const running = window.__received.find((m) => m.type === "progress" && m.state === "running");
    return running ? running.job : null;
  }, null, { timeout: 60000 });
  return handle.jsonValue();
}

test("the panel's and the plugin's destroy hooks cancel the running job on the server", { skip: SKIP, timeout: 420000 }, async () => {
  const srv = await server.startServer({ allowedOrigins: [ORIGIN] });
  const browser = await launch();
  try {
    for (const hook of ["panel", "plugin"]) {
      const { page, errors } = await openPanel(browser, { realServer: { address: srv.address, token: srv.token, settings: SETTINGS } });
      const job = await startJob(page);

      await page.evaluate((which) => {
        const hooks = window.__entrypoints;
        return which === "panel" ? hooks.panels.decompose.destroy() : hooks.plugin.destroy();
      }, hook);

      const state = await finalState(srv, job);
      assert.equal(state.state, "cancelled", `${hook}.destroy: the job ${job} ended ${state.state}`);
      await page.waitForFunction(() => document.getElementById("message").textContent.startsWith("Cancelled"), null, { timeout: 10000 });
      assert.equal(await page.textContent("#conn-state"), "Not connected", `${hook}.destroy closes the connection`);
      const doc = await page.evaluate(() => ({ layers: window.__doc.layers.map((l) => l.name), history: window.__doc.history }));
      assert.deepEqual(doc, { layers: ["Background"], history: ["Open"] });
      assert.deepEqual(errors, []);
      await page.close();
    }
  } finally {
    await browser.close();
    await srv.stop();
  }
});
