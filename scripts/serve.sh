#!/usr/bin/env bash
# Sets up LayerBridge (idempotent) and starts the local server.
#   scripts/serve.sh [ARGS]         `layerbridge serve ARGS` in this terminal
#   scripts/serve.sh --tray [ARGS]  the tray launcher, which starts, watches and stops the server
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${1:-}" = "--tray" ]; then
  shift
  exec .venv/bin/layerbridge tray "$@"
fi
exec .venv/bin/layerbridge serve "$@"
