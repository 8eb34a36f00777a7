// Entry point: UXP loads index.html, which runs this script. It registers the panel and starts it.
"use strict";

const { entrypoints, storage } = require("uxp");
const { Panel } = require("./src/ui.js");

let panel = null;

async function pickTokenFile() {
  const file = await storage.localFileSystem.getFileForOpening({ allowMultiple: false });
  return file ? file.read() : null;
}

// Photoshop quitting, the plugin unloaded or the panel destroyed: a running job is cancelled on the
// server rather than left to run for nobody.
function destroyPanel() {
  return panel ? panel.destroy() : undefined;
}

entrypoints.setup({
  plugin: {
    create() {}, // UXP requires it with `plugin`; the panel starts in show()
    destroy: destroyPanel,
  },
  panels: {
    decompose: {
      destroy: destroyPanel,
      show() {
        if (panel) return;
        panel = new Panel(document, {
          storage: window.localStorage,
          secureStorage: storage.secureStorage,
          WebSocket: window.WebSocket,
          fetch: window.fetch ? window.fetch.bind(window) : undefined,
          clipboard: navigator.clipboard,
          pickFile: pickTokenFile,
        });
        panel.start();
      },
    },
  },
});
