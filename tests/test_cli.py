"""The command line through subprocesses: make-tiny-model, decompose to PSD/ORA/folder, restore, doctor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.imaging.metrics import recomposition

CLI = [sys.executable, "-m", "backend.cli.main"]
JOB = ["--layers", "3", "--steps", "2", "--seed", "5", "--prompt", "a card", "--no-name-layers"]


def run(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def odd_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "poster.png"
    a = np.random.default_rng(3).integers(0, 256, (333, 777, 4), dtype=np.uint8)
    a[..., 3] = 255
    a[:40, :60, 3] = 0  # a transparent corner
    Image.fromarray(a, "RGBA").save(path)
    return path


@pytest.fixture(scope="module")
def offline_env(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("home")
    return dict(os.environ, LAYERBRIDGE_CONFIG_DIR=str(home / "config"), LAYERBRIDGE_LOG_DIR=str(home / "log"))


def test_make_tiny_model_writes_a_loadable_pipeline(tmp_path):
    r = run("make-tiny-model", str(tmp_path / "tiny"))
    assert r.returncode == 0, r.stderr
    index = json.loads((tmp_path / "tiny" / "model_index.json").read_text())
    assert index["_class_name"] == "QwenImageLayeredPipeline"
    size = sum(f.stat().st_size for f in (tmp_path / "tiny").rglob("*") if f.is_file())
    assert size < 10 * 2**20


def test_decompose_to_psd_ora_and_folder_at_exact_canvas(odd_png, tiny_model, offline_env, tmp_path):
    outs = {"psd": tmp_path / "out.psd", "ora": tmp_path / "out.ora", "folder": tmp_path / "out"}
    for kind, out in outs.items():
        r = run("decompose", str(odd_png), "--out", str(out), "--model", str(tiny_model), "--in-process", *JOB, env=offline_env)
        assert r.returncode == 0, r.stderr
        assert f"[{kind}]" in r.stderr and "777×333, seed 5: Background, Layer 1, Layer 2)" in r.stderr

    from psd_tools import PSDImage

    psd = PSDImage.open(outs["psd"])
    assert (psd.width, psd.height) == (777, 333)
    assert [layer.name for layer in psd] == ["Background", "Layer 1", "Layer 2"]

    manifest = json.loads((outs["folder"] / "layers.json").read_text())
    assert manifest["canvas"] == {"width": 777, "height": 333} and manifest["order"] == "bottom_to_top"
    assert manifest["seed"] == 5 and [e["name"] for e in manifest["layers"]] == ["Background", "Layer 1", "Layer 2"]
    for entry, psd_layer in zip(manifest["layers"], psd):
        png = np.asarray(Image.open(outs["folder"] / entry["file"]).convert("RGBA"))
        assert png.shape == (entry["height"], entry["width"], 4)
        assert (psd_layer.left, psd_layer.top) == (entry["x"], entry["y"])
        assert np.array_equal(np.asarray(psd_layer.topil().convert("RGBA")), png)

    with zipfile.ZipFile(outs["ora"]) as z:
        first = z.infolist()[0]
        assert first.filename == "mimetype" and first.compress_type == zipfile.ZIP_STORED
        assert z.read("mimetype") == b"image/openraster"
        stack = ET.fromstring(z.read("stack.xml"))
        assert (stack.get("w"), stack.get("h")) == ("777", "333")
        layers = stack.findall("./stack/layer")
        assert [layer.get("name") for layer in layers] == ["Layer 2", "Layer 1", "Background"]  # top first
        for layer, entry in zip(reversed(layers), manifest["layers"]):
            assert (int(layer.get("x")), int(layer.get("y"))) == (entry["x"], entry["y"])
            with z.open(layer.get("src")) as f:
                assert Image.open(f).size == (entry["width"], entry["height"])
        assert Image.open(z.open("mergedimage.png")).size == (777, 333)


def test_decompose_restored_layers_recompose_to_the_source(odd_png, tiny_model, offline_env, tmp_path):
    from backend.imaging.export import read_folder

    out = tmp_path / "restored"
    r = run("decompose", str(odd_png), "--out", str(out), "--model", str(tiny_model), "--in-process", *JOB, env=offline_env)
    assert r.returncode == 0, r.stderr
    layers, w, h = read_folder(out)
    src = np.asarray(Image.open(odd_png).convert("RGBA"))
    assert (w, h) == (777, 333) and recomposition(layers, src).max_error <= 2.5 / 255


def test_decompose_never_overwrites_without_asking(odd_png, tiny_model, offline_env, tmp_path):
    out = tmp_path / "keep.psd"
    out.write_bytes(b"precious")
    r = run("decompose", str(odd_png), "--out", str(out), "--model", str(tiny_model), "--in-process", *JOB, env=offline_env)
    assert r.returncode == 2 and "exists" in r.stderr and out.read_bytes() == b"precious"


def test_what_appears_at_out_during_the_job_is_kept(tmp_path, capsys):
    from backend.cli.decompose import write_result
    from backend.core.layer import PlacedLayer

    layers = [PlacedLayer("Background", 0, 0, np.full((4, 6, 4), 255, np.uint8))]
    info = {"seed": 1}
    for name in ("made.psd", "made-folder"):
        out = tmp_path / name
        if out.suffix:
            out.write_bytes(b"the user's")  # appeared after the start's check
        else:
            out.mkdir()
            (out / "notes.txt").write_text("the user's")
        assert write_result(out, False, layers, 6, 4, info) == 1
        assert "appeared while the job ran" in capsys.readouterr().err
        kept = out.read_bytes() if out.suffix else (out / "notes.txt").read_bytes()
        assert kept == b"the user's"
        beside = tmp_path / (f"{out.stem} (1){out.suffix}")
        assert beside.exists() and (beside.suffix or (beside / "layers.json").is_file())
    # --overwrite, with OUT there at the start: replaced
    out = tmp_path / "made.psd"
    assert write_result(out, True, layers, 6, 4, info) == 0
    assert out.read_bytes()[:4] == b"8BPS"
    assert not list(tmp_path.glob(".*partial*"))


def test_what_a_killed_run_left_half_written_is_not_merged_into_the_layers(tmp_path):
    from backend.cli.decompose import write_result
    from backend.core.layer import PlacedLayer

    stale = tmp_path / ".made.partial"
    stale.mkdir()
    (stale / "07-old-layer.png").write_bytes(b"from a killed run")
    layers = [PlacedLayer("Background", 0, 0, np.full((4, 6, 4), 255, np.uint8))]
    assert write_result(tmp_path / "made", False, layers, 6, 4, {"seed": 1}) == 0
    assert sorted(p.name for p in (tmp_path / "made").iterdir()) == ["00-background.png", "layers.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".made.partial", "made"]  # nothing of this run is left


def one_layer():
    from backend.core.layer import PlacedLayer

    return [PlacedLayer("Background", 0, 0, np.full((4, 6, 4), 255, np.uint8))]


def test_overwrite_replaces_a_link_to_a_folder_at_out_and_not_the_folder(tmp_path):
    from backend.cli.decompose import write_result

    folder = tmp_path / "theirs"
    folder.mkdir()
    (folder / "notes.txt").write_text("kept")
    link = tmp_path / "DLINK"
    link.symlink_to(folder, target_is_directory=True)
    assert write_result(link, True, one_layer(), 6, 4, {"seed": 1}) == 0
    assert not link.is_symlink() and (link / "layers.json").is_file()
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert not list(tmp_path.glob(".*partial*"))


def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path):
    from backend.cli.decompose import write_result

    other = tmp_path / "other"
    other.mkdir()
    (other / "layers.json").write_text("theirs")
    for planted in (".e.partial", ".e.partial.tmp"):  # the old fixed name, and one more guess
        (tmp_path / planted).symlink_to(other, target_is_directory=True)
    assert write_result(tmp_path / "e", False, one_layer(), 6, 4, {"seed": 1}) == 0
    assert (other / "layers.json").read_text() == "theirs" and [p.name for p in other.iterdir()] == ["layers.json"]
    out = tmp_path / "e"
    assert not out.is_symlink() and sorted(p.name for p in out.iterdir()) == ["00-background.png", "layers.json"]


def test_a_dangling_link_at_out_is_kept_without_overwrite(odd_png, tmp_path, offline_env):
    from backend.cli.decompose import write_result

    link = tmp_path / "gone.psd"
    link.symlink_to(tmp_path / "nowhere.psd")
    r = run("decompose", str(odd_png), "--out", str(link), "--in-process", *JOB, env=offline_env)
    assert r.returncode == 2 and "exists" in r.stderr and link.is_symlink() and not link.exists()
    # one that appears while the job runs is kept too; the layers get a name of their own
    assert write_result(link, False, one_layer(), 6, 4, {"seed": 1}) == 1
    assert link.is_symlink() and (tmp_path / "gone (1).psd").read_bytes()[:4] == b"8BPS"
    assert write_result(link, True, one_layer(), 6, 4, {"seed": 1}) == 0  # --overwrite replaces the link itself
    assert not link.is_symlink() and link.read_bytes()[:4] == b"8BPS" and not (tmp_path / "nowhere.psd").exists()


def test_a_refused_write_is_an_error_with_its_code_and_leaves_nothing(tmp_path, capsys):
    from backend.cli.decompose import write_result
    from backend.core.layer import PlacedLayer

    layers = [PlacedLayer("Background", 0, 0, np.full((1, 30_001, 4), 255, np.uint8))]
    assert write_result(tmp_path / "wide.psd", False, layers, 30_001, 1, {"seed": 1}) == 1
    err = capsys.readouterr().err
    assert "error (image_too_large): cannot write" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_decompose_refuses_an_out_it_cannot_write_before_the_job(odd_png, tmp_path, offline_env):
    r = run("decompose", str(odd_png), "--out", str(tmp_path / "no-such-folder" / "a.psd"), env=offline_env)
    assert r.returncode == 2 and "is not a folder" in r.stderr and "Traceback" not in r.stderr


def test_decompose_with_a_wrong_token_says_so(odd_png, live_server, tmp_path, offline_env):
    r = run("decompose", str(odd_png), "--out", str(tmp_path / "a.psd"), "--server", live_server.url,
            "--token", "wrong", *JOB, env=offline_env)
    assert r.returncode == 1 and "error (unauthorized)" in r.stderr and "layerbridge token" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "a.psd").exists()


def test_decompose_uses_a_running_server(odd_png, live_server, tmp_path):
    env = dict(os.environ, LAYERBRIDGE_CONFIG_DIR=str(live_server.config_dir))
    out = tmp_path / "via-server"
    r = run("decompose", str(odd_png), "--out", str(out), "--server", live_server.url, *JOB, env=env)
    assert r.returncode == 0, r.stderr
    assert "using the LayerBridge server" in r.stderr
    assert json.loads((out / "layers.json").read_text())["canvas"] == {"width": 777, "height": 333}


def test_decompose_bad_input_and_missing_server(tmp_path, offline_env):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    r = run("decompose", str(bad), "--out", str(tmp_path / "x.psd"), env=offline_env)
    assert r.returncode == 2 and "cannot read" in r.stderr
    good = tmp_path / "good.png"
    Image.new("RGBA", (8, 8)).save(good)
    r = run("decompose", str(good), "--out", str(tmp_path / "y.psd"), "--server", "http://127.0.0.1:9", env=offline_env)
    assert r.returncode == 1 and "no LayerBridge server" in r.stderr


def batch_inputs(folder: Path) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(8)
    paths = []
    for name, (h, w) in (("card.png", (40, 60)), ("photo.jpg", (50, 30)), ("card.webp", (24, 24))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
        paths.append(folder / name)
    (folder / "broken.png").write_bytes(b"not an image")
    return paths[:2] + [folder / "broken.png"] + paths[2:]


def test_decompose_several_images_into_a_folder_with_one_model_load(tiny_model, offline_env, tmp_path):
    sources = batch_inputs(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "photo.ora").write_bytes(b"the user's own file")  # there already: skipped, not replaced
    r = run("decompose", *map(str, sources), "--out", str(out), "--format", "ora", "--model", str(tiny_model),
            "--in-process", *JOB, env=offline_env)
    # the broken image fails alone; the others are written, each at its own size, the two "card"s apart
    assert r.returncode == 1, r.stderr
    assert "cannot read" in r.stderr and "broken.png" in r.stderr
    assert "skipped" in r.stderr and (out / "photo.ora").read_bytes() == b"the user's own file"
    assert "2 of 4 images decomposed" in r.stderr and "1 failed" in r.stderr and "1 skipped" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["card (2).ora", "card.ora", "photo.ora"]
    for name, size in (("card.ora", (60, 40)), ("card (2).ora", (24, 24))):
        with zipfile.ZipFile(out / name) as z:
            stack = ET.fromstring(z.read("stack.xml"))
        assert (int(stack.get("w")), int(stack.get("h"))) == size
    assert r.stderr.count("[") >= 4 and "[4/4]" in r.stderr

    r = run("decompose", str(sources[0]), str(sources[1]), "--out", str(out / "card.ora"), env=offline_env)
    assert r.returncode == 2 and "is a file" in r.stderr


def test_decompose_several_images_through_a_running_server(live_server, tmp_path):
    env = dict(os.environ, LAYERBRIDGE_CONFIG_DIR=str(live_server.config_dir))
    sources = batch_inputs(tmp_path / "in")
    del sources[2]
    r = run("decompose", *map(str, sources), "--out", str(tmp_path / "out"), "--format", "png",
            "--server", live_server.url, *JOB, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("using the LayerBridge server") == 1
    canvases = {p.name: json.loads((p / "layers.json").read_text())["canvas"] for p in (tmp_path / "out").iterdir()}
    assert canvases == {"card": {"width": 60, "height": 40}, "photo": {"width": 30, "height": 50},
                        "card (2)": {"width": 24, "height": 24}}


def test_decompose_a_folder_or_a_pattern_of_images(live_server, tmp_path):
    env = dict(os.environ, LAYERBRIDGE_CONFIG_DIR=str(live_server.config_dir))
    folder = tmp_path / "shots"
    folder.mkdir()
    for name in ("b.PNG", "a.jpg", ".hidden.png"):
        Image.new("RGB", (16, 12), (200, 30, 30)).save(folder / name, "PNG" if name.lower().endswith("png") else "JPEG")
    subprocess.run(["convert", str(folder / "b.PNG"), str(folder / "c.heic")], check=True)  # a phone's photo
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(folder / "sub" / "c.png")
    r = run("decompose", str(folder), "--out", str(tmp_path / "out"), "--server", live_server.url, *JOB, env=env)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.psd", "b.psd", "c.psd"]  # its images
    assert r.stderr.index("a.jpg") < r.stderr.index("b.PNG") < r.stderr.index("c.heic")  # in name order
    # a pattern the shell left alone (Windows' shells do), even one that matches a single file: into the folder
    r = run("decompose", str(folder / "*.jpg"), "--out", str(tmp_path / "jpegs"), "--server", live_server.url, *JOB, env=env)
    assert r.returncode == 0, r.stderr
    assert [p.name for p in (tmp_path / "jpegs").iterdir()] == ["a.psd"]
    r = run("decompose", str(folder / "*.gif"), "--out", str(tmp_path / "none"), env=env)
    assert r.returncode == 2 and "no images" in r.stderr


def test_restore_command_writes_the_folder_format(odd_png, tmp_path):
    model_layers = []
    for i in range(3):
        p = tmp_path / f"m{i}.png"
        a = np.zeros((192, 448, 4), np.uint8)
        a[..., i] = 255
        a[..., 3] = 255 if i == 0 else 128
        Image.fromarray(a, "RGBA").save(p)
        model_layers.append(str(p))
    r = run("restore", str(odd_png), *model_layers, "--out", str(tmp_path / "restored"))
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "restored" / "layers.json").read_text())
    assert manifest["canvas"] == {"width": 777, "height": 333}
    assert [e["name"] for e in manifest["layers"]] == ["m0", "m1", "m2"]


def test_doctor_reports_mode_and_port(offline_env):
    r = run("doctor", "--json", "--port", "9", env=offline_env)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["memory mode"].startswith("cpu") and "torch" in data and "port" in data
    assert data["transformer"] == "unquantised (bf16 on a GPU)"
    r = run("doctor", "--json", "--port", "9", "--quantize", "int8", env=offline_env)  # what serve --quantize int8 loads
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["transformer"].startswith("int8 weights")


def test_doctor_says_whether_the_download_fits_where_it_would_go(offline_env, tmp_path):
    r = run("doctor", "--json", "--port", "9", env=dict(offline_env, HF_HOME=str(tmp_path / "hf")))
    assert r.returncode == 0, r.stderr
    cache = json.loads(r.stdout)["model cache"]
    assert cache.startswith("not downloaded yet") and f"GB free in {tmp_path / 'hf' / 'hub'}" in cache


def test_an_unknown_memory_mode_is_refused_by_name(offline_env):
    from backend.model.plan import MemoryMode
    from backend.core.settings import MEMORY_CHOICES

    assert MEMORY_CHOICES == ("auto", *(m.value for m in MemoryMode))
    for command in ("serve", "doctor", "decompose"):
        extra = ("x.png", "--out", "x.psd") if command == "decompose" else ()
        r = run(command, *extra, "--memory", "host-offload", env=offline_env, timeout=120)
        assert r.returncode == 2, (command, r.stdout, r.stderr)
        assert "invalid choice: 'host-offload'" in r.stderr and "host_offload" in r.stderr
        assert "Traceback" not in r.stderr


def test_decompose_and_doctor_with_a_gguf_transformer_file(odd_png, tiny_model, offline_env, tmp_path):
    from test_transformer_file import write_gguf

    gguf = tmp_path / "qwen-image-layered-Q8_0.gguf"
    write_gguf(tiny_model, gguf)
    out = tmp_path / "out"
    r = run("decompose", str(odd_png), "--out", str(out), "--model", str(tiny_model), "--transformer-file", str(gguf),
            "--in-process", *JOB, env=offline_env)
    assert r.returncode == 0, r.stderr
    assert len(json.loads((out / "layers.json").read_text())["layers"]) == 3
    r = run("doctor", "--json", "--port", "9", "--model", str(tiny_model), "--transformer-file", str(gguf), env=offline_env)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["transformer file"].startswith(f"{gguf} (GGUF")
    assert report["transformer"] == "GGUF, the file's own quantised weights"
    missing = tmp_path / "nowhere.gguf"
    r = run("decompose", str(odd_png), "--out", str(tmp_path / "x.psd"), "--model", str(tiny_model),
            "--transformer-file", str(missing), "--in-process", *JOB, env=offline_env)
    assert r.returncode == 1 and "model_unavailable" in r.stderr and "nowhere.gguf does not exist" in r.stderr
    assert not (tmp_path / "x.psd").exists()


def test_serve_cluster_options_come_from_the_settings_and_are_checked(capsys):
    from backend.cli.main import _settings, build_parser, cmd_serve
    from backend.core.settings import Settings

    parser = build_parser()
    plain = _settings(parser.parse_args(["serve"]))
    assert (plain.cluster, plain.replicas, plain.cfg_parallel) == (None, 0, False)  # in-process, as before
    assert not plain.is_cluster
    a = parser.parse_args(["serve", "--cluster", "local", "--replicas", "3", "--cfg-parallel"])
    assert (_settings(a).cluster, _settings(a).replicas, _settings(a).cfg_parallel) == ("local", 3, True)
    for address in ("auto", "ray://head.lan:10001"):
        assert _settings(parser.parse_args(["serve", "--cluster", address])).cluster == address
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--cluster", "head.lan:6379"])
    assert "ray://" in capsys.readouterr().err
    assert cmd_serve(parser.parse_args(["serve", "--replicas", "2"])) == 2  # --replicas without --cluster
    assert "--replicas goes with --cluster" in capsys.readouterr().err
    help_text = parser._subparsers._group_actions[0].choices["serve"].format_help()
    for name in ("cluster", "replicas", "cfg_parallel"):
        assert Settings.help()[name].split(" ")[0] in help_text
