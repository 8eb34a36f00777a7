// Entry point: UXP loads index.html, which runs this script. It registers the panel and starts it.
"use strict";

const { entrypoints, storage } = require("uxp");
const { Panel } = require("./src/ui.js");

let panel = null;

async function pickTokenFile() {
  const file = await storage.localFileSystem.getFileForOpening({ allowMultiple: false });
  return file ? file.read() : null;
}

entrypoints.setup({
  panels: {
    decompose: {
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
