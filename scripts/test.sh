#!/usr/bin/env bash
# Sets up every test dependency (idempotent) and runs every test: Python (server, CLI, restoration,
# Krita inside a real Krita, tray launcher) and Node (Photoshop panel).
#   scripts/test.sh [pytest arguments]     TEST_WORKERS=1 scripts/test.sh runs pytest in one process
# pytest runs on TEST_WORKERS pytest-xdist workers (2: one per core of a small machine; see tests/conftest.py) while
# the panel's tests run beside it; the panel's output is printed after pytest's, and the exit status fails if
# either fails.
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

panel_pid=""
panel_log=""
if [ -f photoshop_uxp/package.json ]; then
  panel_log="$(mktemp)"
  # a session of its own, so that an interrupted run ends it too; one torch thread for its servers, beside pytest's
  setsid bash -c 'cd photoshop_uxp && OMP_NUM_THREADS=1 exec npm test' >"$panel_log" 2>&1 &
  panel_pid=$!
  trap 'kill -- -"$panel_pid" 2>/dev/null; rm -f "$panel_log"; exit 130' INT TERM
fi

workers="${TEST_WORKERS:-2}"
pytest_status=0
if [ "$workers" -gt 1 ]; then
  .venv/bin/python -m pytest -q -p no:cacheprovider -n "$workers" --dist loadgroup tests "$@" || pytest_status=$?
else
  .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@" || pytest_status=$?
fi

status=$pytest_status
if [ -n "$panel_pid" ]; then
  panel_status=0
  wait "$panel_pid" || panel_status=$?
  trap - INT TERM
  echo
  echo "=== Photoshop panel (photoshop_uxp: npm test) ==="
  cat "$panel_log"
  rm -f "$panel_log"
  echo
  echo "=== pytest: exit $pytest_status; Photoshop panel: exit $panel_status ==="
  [ "$panel_status" = 0 ] || status=$panel_status
fi
exit $status
