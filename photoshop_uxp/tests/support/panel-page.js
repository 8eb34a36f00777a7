// Opens index.html in Debian's Chromium with the UXP shim (support/browser-shim.js): the panel's
// files are served as http://localhost:9/… by the test itself (nothing listens there), and main.js
// runs as UXP would run it. For a page to reach a server on 127.0.0.1, Chromium wants a secure
// context (localhost is one) and the local network access permission.
"use strict";

const fs = require("node:fs");
const path = require("node:path");

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const PANEL = path.resolve(__dirname, "..", "..");
const ORIGIN = "http://localhost:9";
const TYPES = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json" };

/** Why the browser tests cannot run here, or false. */
function unavailable() {
  return fs.existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing`;
}

function launch() {
  const { chromium } = require("playwright-core");
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
    timeout: 60000,
  });
}

/**
 * A page with the panel loaded; `errors` collects the page's uncaught errors. `realServer`
 * ({address, token, settings}) makes the panel talk to that server instead of the shim's fake one,
 * with those saved settings. `jobOptions` makes the fake server announce those; `settings` are the
 * panel's saved settings with the fake server. `badge` adds a pixel layer "Badge" (two squares) to the
 * document; `capabilities` replaces what the fake server announces (text_layers and split_elements).
 */
async function openPanel(browser, { realServer = null, jobOptions = null, settings = null, badge = false, capabilities = null } = {}) {
  const context = await browser.newContext({
    viewport: { width: 280, height: 600 },
    deviceScaleFactor: 2,
    permissions: realServer ? ["local-network-access"] : [],
  });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.route(`${ORIGIN}/**`, async (route) => {
    const rel = decodeURIComponent(new URL(route.request().url()).pathname).replace(/^\/+/, "");
    const file = path.resolve(PANEL, rel);
    if (!file.startsWith(PANEL + path.sep) || !fs.existsSync(file)) {
      await route.fulfill({ status: 404, body: "not found" });
      return;
    }
    await route.fulfill({ status: 200, contentType: TYPES[path.extname(file)] || "application/octet-stream", body: fs.readFileSync(file) });
  });
  if (realServer) await page.addInitScript((given) => { window.__realServer = given; }, realServer);
  if (jobOptions) await page.addInitScript((given) => { window.__jobOptions = given; }, jobOptions);
  if (badge) await page.addInitScript(() => { window.__badge = true; });
  if (capabilities) await page.addInitScript((given) => { window.__capabilities = given; }, capabilities);
  if (settings) await page.addInitScript((given) => { localStorage.setItem("layerbridge.settings.v1", JSON.stringify(given)); }, settings);
  await page.addInitScript({ path: path.join(__dirname, "browser-shim.js") });
  await page.goto(`${ORIGIN}/index.html`);
  return { page, errors };
}

module.exports = { ORIGIN, PANEL, launch, openPanel, unavailable };
