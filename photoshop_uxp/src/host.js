// The one module that reaches Photoshop's `photoshop` and `uxp` modules. Everything else asks
// here, so tests hand in a double with setHost() instead of the real modules.
"use strict";

let current = null;

function load() {
  if (!current) {
    // eslint-disable-next-line global-require
    current = { photoshop: require("photoshop"), uxp: require("uxp") };
  }
  return current;
}

/** Replaces the host modules (tests, the browser preview). */
function setHost(host) {
  current = host;
}

function photoshop() {
  return load().photoshop;
}

function uxp() {
  return load().uxp;
}

module.exports = { setHost, photoshop, uxp };
