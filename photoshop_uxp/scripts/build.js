// Builds the installable package: dist/layerbridge-photoshop-<version>.ccx at the repository root,
// a zip of the plugin folder (manifest at the top). Usage: node scripts/build.js [--out DIR]
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const { zip } = require("./zip.js");

const ROOT = path.resolve(__dirname, "..");
const PLUGIN_FILES = ["manifest.json", "index.html", "main.js", "styles.css"];
const PLUGIN_DIRS = ["src", "icons"];

function listFiles() {
  const files = [...PLUGIN_FILES];
  const walk = (dir) => {
    for (const entry of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const rel = `${dir}/${entry.name}`;
      if (entry.isDirectory()) walk(rel);
      else files.push(rel);
    }
  };
  PLUGIN_DIRS.forEach(walk);
  return files;
}

function build(outDir = path.resolve(ROOT, "..", "dist")) {
  const manifest = JSON.parse(fs.readFileSync(path.join(ROOT, "manifest.json"), "utf8"));
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8"));
  if (manifest.version !== pkg.version) {
    throw new Error(`manifest.json version ${manifest.version} differs from package.json ${pkg.version}`);
  }
  const entries = listFiles().map((name) => ({ name, data: fs.readFileSync(path.join(ROOT, name)) }));
  fs.mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, `layerbridge-photoshop-${manifest.version}.ccx`);
  fs.writeFileSync(file, zip(entries));
  return { file, entries: entries.map((e) => e.name) };
}

if (require.main === module) {
  const i = process.argv.indexOf("--out");
  const { file, entries } = build(i > 0 ? path.resolve(process.argv[i + 1]) : undefined);
  process.stdout.write(`${file} (${entries.length} files)\n`);
}

module.exports = { build, listFiles };
