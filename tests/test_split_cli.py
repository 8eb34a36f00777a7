"""`layerbridge split IMAGE --out DIR` through a subprocess: the folder format of `decompose`, exact, never
overwriting without --overwrite, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from backend.imaging.export import flatten, read_folder

from split_scenes import poster

CLI = [sys.executable, "-m", "backend.cli.main", "split"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def test_split_writes_one_png_per_element_that_recompose_exactly(tmp_path: Path) -> None:
    scene = poster(2)
    image = tmp_path / "poster.png"
    Image.fromarray(scene.layer(), "RGBA").save(image)
    out = tmp_path / "elements"
    r = run(str(image), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert f"wrote {len(scene.elements)} elements" in r.stderr
    layers, width, height = read_folder(out)
    manifest = json.loads((out / "layers.json").read_text())
    assert (width, height) == (scene.width, scene.height) and manifest["source"] == "poster.png"
    assert [layer.name for layer in layers] == [f"poster {k + 1}" for k in range(len(scene.elements))]
    assert np.array_equal(np.asarray(flatten(layers, width, height)), scene.layer())

    # OUT is there: refused without --overwrite, and left as it is
    (out / "notes.txt").write_text("mine")
    r = run(str(image), "--out", str(out), "--max-elements", "2")
    assert r.returncode == 2 and "exists" in r.stderr and (out / "notes.txt").exists()
    r = run(str(image), "--out", str(out), "--max-elements", "2", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert len(read_folder(out)[0]) == 2 and not (out / "notes.txt").exists()
    assert not list(tmp_path.glob(".*partial*"))


def test_split_edge_images(tmp_path: Path) -> None:
    strip = np.zeros((1, 30000, 4), np.uint8)
    strip[0, 100:9000] = (10, 200, 10, 255)
    strip[0, 20000:29990] = (10, 10, 200, 180)
    for name, pixels, count in [
        ("transparent", np.zeros((20, 30, 4), np.uint8), 0),
        ("dot", np.full((1, 1, 4), 200, np.uint8), 1),
        ("strip", strip, 2),  # no model: the model's limit on the aspect ratio does not apply
    ]:
        Image.fromarray(pixels, "RGBA").save(tmp_path / f"{name}.png")
        r = run(str(tmp_path / f"{name}.png"), "--out", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
        layers, width, height = read_folder(tmp_path / name)
        assert len(layers) == count
        assert np.array_equal(np.asarray(flatten(layers, width, height)), np.where(pixels[..., 3:] > 0, pixels, 0))
        entries = json.loads((tmp_path / name / "layers.json").read_text())["layers"]
        assert all(e["group"] is False and e["parent"] is None for e in entries)  # the fields decompose writes


def test_split_bad_input_says_why_with_a_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    r = run(str(bad), "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "error (" in r.stderr and "Traceback" not in r.stderr
    r = run(str(tmp_path / "missing.png"), "--out", str(tmp_path / "y"))
    assert r.returncode == 2 and "cannot read" in r.stderr
    r = run(str(bad), "--out", str(tmp_path / "no-folder" / "z"))
    assert r.returncode == 2 and "cannot write" in r.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_split_keeps_links_at_out_and_beside_it(tmp_path: Path) -> None:
    """As `decompose` (backend/cli/output.py): a dangling link at OUT is the user's and stays without --overwrite; a
    link planted at the old temporary name beside OUT is never written through; with --overwrite a link at OUT is
    replaced itself, and the folder it points to is left as it is."""
    image = tmp_path / "poster.png"
    Image.fromarray(poster(2).layer(), "RGBA").save(image)
    out = tmp_path / "e"
    out.symlink_to(tmp_path / "nowhere")
    r = run(str(image), "--out", str(out))
    assert r.returncode == 2 and "exists" in r.stderr and out.is_symlink()
    out.unlink()
    other = tmp_path / "other"
    other.mkdir()
    (tmp_path / ".e.partial").symlink_to(other)
    assert run(str(image), "--out", str(out)).returncode == 0
    assert list(other.iterdir()) == [] and out.is_dir() and not out.is_symlink()
    linked = tmp_path / "linked"
    linked.symlink_to(other)
    assert run(str(image), "--out", str(linked), "--overwrite").returncode == 0
    assert list(other.iterdir()) == [] and linked.is_dir() and not linked.is_symlink()
