#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian/Ubuntu machine (or a machine with Python >= 3.10 already).
#   scripts/setup.sh          the server: a virtualenv in .venv with LayerBridge and its model stack
#   scripts/setup.sh --test   also every test dependency: Krita, Xvfb, Chromium, tray host, Node packages
set -euo pipefail
cd "$(dirname "$0")/.."
want_tests=0
[ "${1:-}" = "--test" ] && want_tests=1

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  command -v apt-get >/dev/null || return 0
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  as_root apt-get update -q
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
}

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  apt_install python3 python3-venv python3-pip
fi
if [ $want_tests = 1 ]; then
  mapfile -t pkgs < <(grep -v '^#' scripts/apt-packages-test.txt | tr -s ' \n' '\n' | grep .)
  apt_install "${pkgs[@]}"
  # Node and npm: Debian's packages only where none is installed (they conflict with NodeSource's).
  command -v npm >/dev/null || apt_install nodejs npm
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
py=.venv/bin/python
$py -m pip install -q --upgrade pip >/dev/null
if ! $py -c 'import torch' 2>/dev/null; then
  if command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1; then
    $py -m pip install -q torch                # CUDA build
  else
    $py -m pip install -q torch==2.13.0        # CPU build
  fi
fi
if [ $want_tests = 1 ]; then
  $py -m pip install -q -e ".[test,tray,cluster]"  # cluster: the team server's tests (tests/server/test_cluster.py)
  # Krita 6's binding, for the plugin's client under PyQt6 (tests/krita/test_krita_qtclient.py).
  [ -x .venv-qt6/bin/python ] || python3 -m venv .venv-qt6
  .venv-qt6/bin/python -c 'import PyQt6.QtNetwork' 2>/dev/null || .venv-qt6/bin/python -m pip install -q "PyQt6>=6.5,<7"
  if [ -f photoshop_uxp/package.json ]; then (cd photoshop_uxp && npm ci --no-audit --no-fund --loglevel=error); fi
else
  $py -m pip install -q -e .
  # The tray launcher's extra (pystray; PyGObject on Linux) is optional: the server runs without it.
  $py -m pip install -q -e ".[tray]" 2>/dev/null || echo "note: tray launcher extras not installed (see docs/tray.md)" >&2
fi
