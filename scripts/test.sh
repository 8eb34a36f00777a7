#!/usr/bin/env bash
# Sets up every test dependency (idempotent) and runs every test: Python (server, CLI, restoration,
# Krita inside a real Krita, tray launcher) and Node (Photoshop panel).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
status=0
.venv/bin/python -m pytest -q -p no:cacheprovider tests "$@" || status=$?
if [ -f photoshop_uxp/package.json ]; then
  (cd photoshop_uxp && npm test) || status=$?
fi
exit $status
