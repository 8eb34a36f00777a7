#!/usr/bin/env python3
"""Builds the installable Krita plugin: dist/layerbridge-krita-<version>.zip.

Install it in Krita with Tools › Scripts › Import Python Plugin from File…, then enable
"LayerBridge Layer Decomposition" in Settings › Configure Krita › Python Plugin Manager and restart."""

import argparse
import pathlib
import re
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "krita_plugin"


def version() -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    return match.group(1) if match else "0.0.0"


def files() -> list:
    out = [PLUGIN / "layerbridge.desktop"]
    for path in sorted((PLUGIN / "layerbridge").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".html"):
            out.append(path)
    return out


def build(dest: pathlib.Path) -> pathlib.Path:
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / ("layerbridge-krita-%s.zip" % version())
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        # Krita's importer finds the plugin by its folder entry ("layerbridge/"), so folders get entries too
        folders = sorted({p.relative_to(PLUGIN).parent.as_posix() for p in files()} - {"."})
        for folder in folders:
            info = zipfile.ZipInfo(folder + "/", date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = (0o40755 << 16) | 0x10
            z.writestr(info, b"")
        for path in files():
            info = zipfile.ZipInfo(path.relative_to(PLUGIN).as_posix(), date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, path.read_bytes())
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=pathlib.Path, default=ROOT / "dist", help="output folder (default: dist/)")
    args = parser.parse_args()
    print(build(args.dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
