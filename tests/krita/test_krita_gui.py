"""The real Krita GUI under Xvfb: the plugin loads from pykrita, the docker shows, its own button decomposes."""

import json
import os
import pathlib
import shutil
import time

import pytest

from kritaharness import HERE, ROOT, krita_env, run_to_results

pytestmark = [pytest.mark.skipif(shutil.which("krita") is None or shutil.which("xvfb-run") is None,
                                 reason="Krita or Xvfb is not installed"),
              pytest.mark.xdist_group("krita")]  # the Krita home under .test-home, one worker at a time


def install(plugin_dir: pathlib.Path, home: pathlib.Path) -> None:
    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    for name in ("layerbridge", "lbgui_driver"):
        shutil.rmtree(pykrita / name, ignore_errors=True)
    pykrita.mkdir(parents=True, exist_ok=True)
    shutil.copytree(plugin_dir / "layerbridge", pykrita / "layerbridge")
    shutil.copy(plugin_dir / "layerbridge.desktop", pykrita)
    shutil.copytree(HERE / "kscripts" / "lbgui_driver", pykrita / "lbgui_driver",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(HERE / "kscripts" / "lbgui_driver.desktop", pykrita)
    rc = home / ".config" / "kritarc"
    rc.parent.mkdir(parents=True, exist_ok=True)
    lines = rc.read_text().splitlines() if rc.exists() else []
    # keep Krita's own settings between runs, replace ours
    kept, skip = [], False
    for line in lines:
        if line.startswith("["):
            skip = line in ("[python]", "[layerbridge]")
        if not skip:
            kept.append(line)
    kept += ["", "[python]", "enable_layerbridge=true", "enable_lbgui_driver=true"]
    rc.write_text("\n".join(kept) + "\n")


def run_gui(plugin_dir, homes, work, url, shot="", timeout=240, **env):
    home = homes / "krita-gui"
    install(plugin_dir, home)
    results = work / "gui_results.json"
    e = krita_env(home, LB_RESULTS=str(results), LB_URL=url, LB_SHOT=str(shot), LB_GUI_TIMEOUT=str(timeout - 30),
                  **env)
    e.pop("QT_QPA_PLATFORM", None)
    data = run_to_results(["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "krita", "--nosplash"], e,
                          work / "krita_gui.log", results, timeout)
    assert "exception" not in data, data["exception"]
    return data


def test_docker_button_decomposes_in_the_gui(plugin_dir, krita_homes, live_server, tmp_path):
    shot = tmp_path / "krita-docker.png"
    data = run_gui(plugin_dir, krita_homes, tmp_path, live_server.url, shot=shot, timeout=480, LB_LAYERS="3",
                   LAYERBRIDGE_CONFIG_DIR=str(live_server.config_dir), LB_SHOT_DIR=str(tmp_path))
    assert data["docker_found"] and data["docker_class"] == "LayerDocker" and data["docker_visible"], data
    # no token was typed: the docker read it from the local server's config dir
    assert data["status_after"] in ("Ready", "Busy: running a job"), data
    assert not data.get("timeout"), data
    assert data["error"] == "", data.get("details")
    assert data["stage"].startswith("Added"), data
    top = data["tree"][-1]
    assert top["type"] == "grouplayer" and top["name"] == "Poster" and len(top["children"]) == 3
    assert data["tree"][:-1] == data["before"]
    # the whole insertion is one undo step
    assert data["after_undo"] == data["before"]
    # Decompose layer on the active layer: its group goes right above it
    assert data["active"] == "Background" and data["layer_error"] == "", data
    assert data["layer_stage"].startswith("Added"), data
    names = [(n["name"], n["type"]) for n in data["layer_tree"]]
    assert names == [("Background", "paintlayer"), ("Background", "grouplayer")]
    assert len(data["layer_tree"][1]["children"]) == 3
    # a CMYK document through the same button: CMYK layers, its own layers kept, one undo step, and no
    # conversion document left open
    assert data["cmyk_active"] == "Print" and data["cmyk_error"] == "", data
    assert data["cmyk_stage"].startswith("Added"), data
    assert data["cmyk_tree"][:-1] == data["cmyk_before"] and len(data["cmyk_tree"][-1]["children"]) == 3
    assert data["cmyk_spaces"] == [data["cmyk_doc_space"]] and data["cmyk_doc_space"][:2] == ["CMYKA", "U8"]
    # the seed of the last result, and Reuse puts a random one back into Seed (and the saved settings)
    assert data["last_seed"] == ["Last seed: 11", True]
    seed = data["random_seed"]
    assert seed["visible"] and seed["before"] == "random" and seed["shown"].startswith("Last seed: ")
    assert seed["after"] == seed["saved"] == int(seed["shown"].rsplit(" ", 1)[1]) and 0 <= seed["after"] < 2 ** 31
    # without a prompt, the model's description of the picture, which Use as prompt puts in Prompt (and saves)
    assert data["caption_after_prompt"] == [False, False]
    caption = data["caption"]
    assert caption["visible"] == [True, True] and caption["tooltip"].strip(), caption
    assert caption["shown"].startswith("Described as: “") and caption["tooltip"][:20] in caption["shown"].replace("\u200b", "")
    assert caption["prompt"] == caption["saved"] == caption["tooltip"]
    assert data["docker_width"][1] == data["docker_width"][0], "a long description widened the docker"
    assert data["cmyk_docs_after"] == data["cmyk_docs_before"]
    # after a result with its description, Advanced open: nothing squashed or clipped, and the docker asks Krita
    # for little height (it scrolls), leaving room to the Layers docker
    assert data["result_layout"]["clipped"] == [] and data["result_layout"]["min_height"] < 200, data["result_layout"]
    assert data["shots"]["krita-docker-result.png"][0], data["shots"]
    assert data["cmyk_after_undo"] == data["cmyk_before"]
    # Steps starts on auto (the preset's count, sent as null) and goes back to it below 2
    assert data["steps_auto"] == {"shown": "auto", "saved": 0, "below": ["auto", 0]}, data["steps_auto"]
    # settings persisted in kritarc
    assert json.loads(data["settings"])["layers"] == 3
    assert shot.stat().st_size > 10000
    if os.environ.get("LB_SAVE_SCREENSHOT"):
        shutil.copy(shot, ROOT / "docs" / "images" / "krita-docker.png")
    save_shots(tmp_path)


def save_shots(folder: pathlib.Path) -> None:
    """With LB_SAVE_SCREENSHOT set, the docker's screenshots go to docs/images for the docs."""
    if os.environ.get("LB_SAVE_SCREENSHOT"):
        for shot in folder.glob("krita-docker-*.png"):
            shutil.copy(shot, ROOT / "docs" / "images" / shot.name)


def test_docker_shows_a_stopped_server(plugin_dir, krita_homes, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = "http://127.0.0.1:%d" % s.getsockname()[1]
    data = run_gui(plugin_dir, krita_homes, tmp_path, dead, LB_GUI_MODE="error", LAYERBRIDGE_CONFIG_DIR=str(tmp_path),
                   LB_SHOT_DIR=str(tmp_path))
    assert data["docker_found"], data
    assert "not running" in data["error"] and "not running" in data["status_after"], data
    assert dead in data["details"]
    layout = data["error_layout"]
    assert layout["advanced"] and layout["clipped"] == [] and layout["min_height"] < 200, layout
    assert data["shots"]["krita-docker-error.png"][0], data["shots"]
    # a server announcing other job options: the controls are rebuilt from them, the values kept
    got = data["announced"]
    assert got["presets"] == [["Best", "best"], ["Draft", "draft"]] and got["preset_tip"] == "8 steps", got
    assert got["layers"] == [2, 6, 3] and got["cfg"] == [1.0, 8.0], got
    assert got["resolutions"] == [["640", 640], ["1024", 1024], ["1536", 1536]], got
    assert got["languages"] == [["English", "en"], ["Chinese", "zh"], ["ja", "ja"]], got
    assert got["steps"] == [3, 60, "auto"], got        # 2 steps are below the server's fewest: auto
    assert got["collected"] == {"layers": 3, "preset": "best", "steps": 0}, got
    save_shots(tmp_path)


def test_closing_krita_during_a_job_cancels_it_and_exits_cleanly(plugin_dir, krita_homes, live_server, tmp_path):
    data = run_gui(plugin_dir, krita_homes, tmp_path, live_server.url, LB_GUI_MODE="quit",
                   LAYERBRIDGE_CONFIG_DIR=str(live_server.config_dir))
    assert data.get("job"), data
    # a second decomposition while one runs is refused in words, and the running one goes on
    second = data["second_click"]
    assert "still running" in second["error"] and second["same_run"], second
    assert second["buttons"] == [False, True], second
    # the docker closed and reopened still shows the same run, with Cancel
    assert data["reopened"] == {"visible": True, "same_run": True, "cancel": True}, data["reopened"]
    # Krita quit by itself, without a crash, a hang, or the driver's fallback exit
    assert data["_exit"]["timed_out"] is False and data["_exit"]["code"] == 0, data["_exit"]
    # and the server stopped the job nobody will fetch
    deadline = time.monotonic() + 30
    while True:
        state = live_server.get_json("/v1/jobs/%s" % data["job"])["state"]
        if state in ("cancelled", "done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert state == "cancelled", state
