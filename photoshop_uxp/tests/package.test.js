// The manifest (against the project's JSON schema, plus what a schema cannot say) and the .ccx.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { execFileSync } = require("node:child_process");
const Ajv = require("ajv");
const { build } = require("../scripts/build.js");
const { crc32 } = require("../scripts/zip.js");

const ROOT = path.resolve(__dirname, "..");
const manifest = JSON.parse(fs.readFileSync(path.join(ROOT, "manifest.json"), "utf8"));
const schema = JSON.parse(fs.readFileSync(path.join(ROOT, "schema", "manifest.schema.json"), "utf8"));
const validate = new Ajv({ allErrors: true, strict: true, strictRequired: false }).compile(schema);

function pngSize(file) {
  const b = fs.readFileSync(file);
  assert.equal(b.subarray(1, 4).toString(), "PNG", `${file} is a PNG`);
  return { width: b.readUInt32BE(16), height: b.readUInt32BE(20) };
}

function allIcons() {
  return [...(manifest.icons || []), ...manifest.entrypoints.flatMap((e) => e.icons || [])];
}

test("manifest.json is valid against the schema", () => {
  assert.ok(validate(manifest), JSON.stringify(validate.errors, null, 2));
});

test("the schema refuses what Photoshop refuses", () => {
  const bad = (change) => {
    const m = JSON.parse(JSON.stringify(manifest));
    change(m);
    return validate(m);
  };
  assert.equal(bad((m) => { m.manifestVersion = 4; }), false);
  assert.equal(bad((m) => { m.requiredPermissions.network.domains = ["ws://127.0.0.1:*"]; }), false, "no port wildcards");
  assert.equal(bad((m) => { m.requiredPermissions.network.domains = ["all", "ws://127.0.0.1:7860"]; }), false, "\"all\" only as a bare string");
  assert.equal(bad((m) => { m.requiredPermissions.network.domains = "all"; }), true, "the documented fallback is valid");
  assert.equal(bad((m) => { delete m.entrypoints[0].icons; }), false);
  assert.equal(bad((m) => { m.host.app = "ID"; }), false);
  assert.equal(bad((m) => { m.entrypoints[0].icons[0].theme = ["night"]; }), false);
});

/** The file Photoshop loads for an icon at a scale: the manifest's path with "@<scale>x", 1x included. */
function iconFile(icon, scale) {
  return icon.path.replace(/\.png$/, `@${scale}x.png`);
}

test("every icon exists at 1x and 2x (named @1x, @2x) with its declared size, for light and dark themes", () => {
  const themes = new Set();
  for (const icon of allIcons()) {
    assert.ok(!fs.existsSync(path.join(ROOT, icon.path)), `${icon.path}: no unsuffixed copy that could hide a missing @1x`);
    for (const scale of icon.scale || [1]) {
      const file = path.join(ROOT, iconFile(icon, scale));
      assert.ok(fs.existsSync(file), `${file} exists`);
      assert.deepEqual(pngSize(file), { width: icon.width * scale, height: icon.height * scale }, file);
    }
    (icon.theme || []).forEach((t) => themes.add(t));
  }
  for (const t of ["lightest", "light", "medium", "dark", "darkest"]) assert.ok(themes.has(t), `an icon for the ${t} theme`);
});

test("host version covers the APIs used; network allows the default server; entry point matches main.js", () => {
  const [major, minor] = manifest.host.minVersion.split(".").map(Number);
  assert.ok(major > 25 || (major === 25 && minor >= 0), "Selection.bounds needs 25.0; imaging is stable from 24.4");
  assert.ok(manifest.requiredPermissions.network.domains.includes("ws://127.0.0.1:7860"));
  assert.ok(fs.existsSync(path.join(ROOT, manifest.main)));
  const panels = manifest.entrypoints.filter((e) => e.type === "panel");
  assert.equal(panels.length, 1);
  assert.equal(panels[0].label.default, "Layer Decomposition");
  const mainJs = fs.readFileSync(path.join(ROOT, "main.js"), "utf8");
  assert.match(mainJs, new RegExp(`panels:\\s*{\\s*${panels[0].id}:`), "entrypoints.setup registers the manifest's panel id");
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8"));
  assert.equal(manifest.version, pkg.version);
});

test("the .ccx is a zip of the plugin folder: manifest on top, every required file, nothing else", () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "lb-ccx-"));
  const { file, entries } = build(out);
  assert.equal(path.basename(file), `layerbridge-photoshop-${manifest.version}.ccx`);

  // Read it back with an independent implementation (Python's zipfile).
  const python = fs.existsSync(path.join(ROOT, "..", ".venv", "bin", "python")) ? path.join(ROOT, "..", ".venv", "bin", "python") : "python3";
  const listing = JSON.parse(execFileSync(python, ["-c", [
    "import json, sys, zipfile, zlib",
    "z = zipfile.ZipFile(sys.argv[1])",
    "assert z.testzip() is None",
    "print(json.dumps([[i.filename, zlib.crc32(z.read(i)) & 0xffffffff] for i in z.infolist()]))",
  ].join("\n"), file], { encoding: "utf8" }));
  const names = listing.map(([n]) => n);
  assert.deepEqual(names, entries);
  assert.equal(names[0], "manifest.json");
  for (const [name, crc] of listing) assert.equal(crc, crc32(fs.readFileSync(path.join(ROOT, name))), `${name} intact`);
  assert.ok(!names.some((n) => /^(tests|node_modules|scripts|schema)\/|package(-lock)?\.json$/.test(n)), "no development files");
  for (const icon of allIcons()) {
    for (const scale of icon.scale || [1]) assert.ok(names.includes(iconFile(icon, scale)), `${iconFile(icon, scale)} packaged`);
  }
  // Every relative require() in the plugin resolves to a packaged file.
  for (const name of names.filter((n) => n.endsWith(".js"))) {
    const text = fs.readFileSync(path.join(ROOT, name), "utf8");
    for (const [, rel] of text.matchAll(/require\("(\.[^"]+)"\)/g)) {
      const target = path.posix.normalize(path.posix.join(path.posix.dirname(name), rel));
      assert.ok(names.includes(target), `${name} requires ${rel}, packaged as ${target}`);
    }
  }
  // The same sources give the same bytes.
  const again = build(fs.mkdtempSync(path.join(os.tmpdir(), "lb-ccx-")));
  assert.deepEqual(fs.readFileSync(again.file), fs.readFileSync(file));
  for (const f of [file, again.file]) fs.rmSync(path.dirname(f), { recursive: true, force: true });
});
