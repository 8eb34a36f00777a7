// Starts the real LayerBridge server (the repository's .venv) on the tiny model for end-to-end
// tests, and stops it by PID.
"use strict";

const { spawn, execFileSync } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

const REPO = path.resolve(__dirname, "..", "..", "..");
const CLI = path.join(REPO, ".venv", "bin", "layerbridge");

function available() {
  return fs.existsSync(CLI);
}

/** Whether the server can run a team server (`--cluster`): the `cluster` extra (Ray Serve) is installed. */
function clusterAvailable() {
  if (!available()) return false;
  try {
    execFileSync(path.join(REPO, ".venv", "bin", "python"), ["-c", "import ray.serve"], { stdio: "pipe", timeout: 60000 });
    return true;
  } catch (e) {
    return false;
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The tiny model folder: $LAYERBRIDGE_TINY_MODEL, else one built into `tmp`. */
function tinyModel(tmp) {
  const given = process.env.LAYERBRIDGE_TINY_MODEL;
  if (given && fs.existsSync(path.join(given, "model_index.json"))) return given;
  const dir = path.join(tmp, "tiny-model");
  execFileSync(CLI, ["make-tiny-model", dir], { stdio: "pipe", timeout: 180000 });
  return dir;
}

/**
 * Starts `layerbridge serve --port 0` with its own config dir, allowing the given extra Origins, with
 * `extraArgs` after its own (`--cluster local --replicas 2`: a team server); resolves with
 * {url, address, port, token, pid, log, stop()}.
 */
async function startServer({ timeoutMs = 90000, allowedOrigins = [], extraArgs = [] } = {}) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "lb-panel-e2e-"));
  const model = tinyModel(tmp);
  const configDir = path.join(tmp, "config");
  const portFile = path.join(tmp, "port");
  const logFile = path.join(tmp, "server.log");
  const out = fs.openSync(logFile, "a");
  const origins = allowedOrigins.flatMap((o) => ["--allowed-origin", o]);
  const child = spawn(CLI, ["serve", "--host", "127.0.0.1", "--port", "0", "--port-file", portFile, "--model", model, ...origins, ...extraArgs], {
    env: { ...process.env, LAYERBRIDGE_CONFIG_DIR: configDir },
    stdio: ["ignore", out, out],
  });
  fs.closeSync(out);
  let exited = null;
  child.on("exit", (code, signal) => { exited = { code, signal }; });

  const stop = async () => {
    if (!exited) {
      process.kill(child.pid, "SIGTERM");
      for (let i = 0; i < 100 && !exited; i++) await sleep(100);
      if (!exited) process.kill(child.pid, "SIGKILL");
      for (let i = 0; i < 50 && !exited; i++) await sleep(100);
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  };

  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exited) break;
    const text = fs.existsSync(portFile) ? fs.readFileSync(portFile, "utf8").trim() : "";
    const tokenFile = path.join(configDir, "token");
    if (/^\d+$/.test(text) && fs.existsSync(tokenFile)) {
      const port = Number(text);
      const token = fs.readFileSync(tokenFile, "utf8").trim();
      return { port, address: `127.0.0.1:${port}`, url: `http://127.0.0.1:${port}`, token, pid: child.pid, log: logFile, tmp, stop };
    }
    await sleep(200);
  }
  await stop();
  const log = fs.existsSync(logFile) ? fs.readFileSync(logFile, "utf8").slice(-3000) : "";
  throw new Error(`the LayerBridge server did not start (${exited ? `exit ${exited.code}` : "timeout"}):\n${log}`);
}

module.exports = { available, clusterAvailable, startServer };
