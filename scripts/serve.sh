#!/usr/bin/env bash
# Sets up LayerBridge (idempotent) and starts the local server; extra arguments go to `layerbridge serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/layerbridge serve "$@"
