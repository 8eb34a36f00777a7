#!/usr/bin/env bash
# Sets up every test dependency (idempotent) and runs every test: Python (server, CLI, restoration,
# Krita inside a real Krita, tray launcher) and Node (Photoshop panel).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
# One tiny random-weights pipeline for every suite (pytest and the panel's end-to-end tests); made again where an
# older one names its processor class by a module path that has moved.
if ! grep -qs '"backend.model.tiny_model"' .tiny-model/model_index.json; then
  rm -rf .tiny-model
  .venv/bin/layerbridge make-tiny-model .tiny-model
fi
export LAYERBRIDGE_TINY_MODEL="$PWD/.tiny-model"
status=0
.venv/bin/python -m pytest -q -p no:cacheprovider tests "$@" || status=$?
if [ -f photoshop_uxp/package.json ]; then
  (cd photoshop_uxp && npm test) || status=$?
fi
exit $status
