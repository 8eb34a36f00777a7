"""Element split on the wire (docs/protocol.md §3, §4, §5; docs/elements.md): a decomposition with `split_elements`
comes back as a hierarchy of groups, and the split task splits one layer beside the model queue, without the model."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from server_process import start_server, stop_server

from backend.core.layer import PlacedLayer
from backend.imaging.image import composite

from .wire import FAST, WS, multipart, png_bytes, request, submit_http, wait_state



def shapes(width: int = 97, height: int = 61, seed: int = 0) -> np.ndarray:
    """Noise colour under three separate opaque rectangles, the rest transparent: each returned layer, cut by the
    source's alpha, holds three elements."""
    a = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    a[..., 3] = 0
    a[5:25, 5:30, 3] = 255
    a[10:20, 70:80, 3] = 255
    a[35:55, 60:90, 3] = 200
    return a


def check_hierarchy(layers: list[dict]) -> list[int]:
    """Asserts the documented shape of a result's flat list; returns the group entries' indices."""
    assert [e["index"] for e in layers] == list(range(len(layers)))
    groups = []
    for e in layers:
        assert "group" in e and "parent" in e
        if e["group"]:
            g = e["index"]
            groups.append(g)
            assert e["parent"] is None and e["bytes"] == 0 and e["text"] == [] and "transfer" not in e
            assert e["children"] == list(range(g + 1, g + 1 + len(e["children"]))) and len(e["children"]) > 1
            kids = [layers[c] for c in e["children"]]
            assert all(k["parent"] == g and not k["group"] and k["bytes"] == k["width"] * k["height"] * 4 for k in kids)
            assert [k["name"] for k in kids] == [f"{e['name']} {n + 1}" for n in range(len(kids))]
            x0, y0 = min(k["x"] for k in kids), min(k["y"] for k in kids)
            x1 = max(k["x"] + k["width"] for k in kids)
            y1 = max(k["y"] + k["height"] for k in kids)
            assert (e["x"], e["y"], e["width"], e["height"]) == (x0, y0, x1 - x0, y1 - y0)
        else:
            assert "children" not in e
            parent = e["parent"]
            assert parent is None or (layers[parent]["group"] and e["index"] in layers[parent]["children"])
    assert layers[0]["parent"] is None and not layers[0]["group"]  # the background is never split
    return groups


def result_of(server, job: str) -> dict:
    state = wait_state(server, job)
    assert state["state"] == "done", state
    status, _, data = request(server, "GET", f"/v1/jobs/{job}/result")
    assert status == 200
    return json.loads(data)


def layer_pixels(server, job: str, entry: dict) -> np.ndarray:
    status, headers, data = request(server, "GET", f"/v1/jobs/{job}/layers/{entry['index']}")
    assert status == 200
    assert (int(headers["X-Layer-Width"]), int(headers["X-Layer-Height"])) == (entry["width"], entry["height"])
    return np.frombuffer(data, np.uint8).reshape(entry["height"], entry["width"], 4)


def stacked(server, job: str, result: dict) -> np.ndarray:
    placed = [PlacedLayer(e["name"], e["x"], e["y"], layer_pixels(server, job, e))
              for e in result["layers"] if not e["group"]]
    return composite(placed, result["canvas"]["width"], result["canvas"]["height"])


def whole(a: np.ndarray) -> np.ndarray:
    """The sent layer composited alone (premultiplied float, as `composite` gives)."""
    return composite([PlacedLayer("", 0, 0, a)], a.shape[1], a.shape[0])


def split_http(server, a: np.ndarray, params: dict | None = None, raw: bool = True) -> tuple[int, dict]:
    p = {} if params is None else params
    if raw:
        body, ctype = multipart({"width": a.shape[1], "height": a.shape[0], **p}, a.tobytes(), "application/octet-stream")
    else:
        body, ctype = multipart(p, png_bytes(a), "image/png")
    status, _, data = request(server, "POST", "/v1/split", body, {"Content-Type": ctype})
    return status, json.loads(data)


def test_a_decomposition_with_split_elements_comes_back_as_groups_over_http(live_server):
    a = shapes()
    params = {**FAST, "layers": 3}
    status, flat_job = submit_http(live_server, a, params)
    assert status == 202
    status, split_job = submit_http(live_server, a, {**params, "split_elements": True})
    assert status == 202
    flat = result_of(live_server, flat_job["job"])
    split = result_of(live_server, split_job["job"])

    assert all(e["group"] is False and e["parent"] is None and "children" not in e for e in flat["layers"])
    groups = check_hierarchy(split["layers"])
    assert len(groups) == 2  # both layers above the background hold the three rectangles
    assert [split["layers"][g]["name"] for g in groups] == [e["name"] for e in flat["layers"][1:]]
    assert all(len(split["layers"][g]["children"]) == 3 for g in groups)
    assert "split_s" in split["timings"] and "split_s" not in flat["timings"]

    g = groups[0]
    status, headers, body = request(live_server, "GET", f"/v1/jobs/{split_job['job']}/layers/{g}")
    assert status == 200 and body == b""
    assert (headers["X-Layer-Width"], headers["X-Layer-Height"]) == ("0", "0")
    # the same seed gives the same layers: split into elements, they composite to exactly the same picture
    assert np.array_equal(stacked(live_server, split_job["job"], split), stacked(live_server, flat_job["job"], flat))


def test_a_decomposition_with_split_elements_over_the_websocket_sends_frames_for_pixel_entries_only(live_server):
    a = shapes(seed=1)
    ws = WS(live_server)
    try:
        assert "split_elements" in ws.hello["capabilities"]
        assert ws.hello["job_options"]["split_elements"] == {"choices": [False, True], "default": False}
        ws.submit(a, {**FAST, "layers": 2, "split_elements": True})
        job = ws.until("accepted")["job"]
        result = ws.until("result", job=job)
        groups = check_hierarchy(result["layers"])
        assert len(groups) == 1
        pixel_entries = [e for e in result["layers"] if not e["group"]]
        assert all("transfer" not in result["layers"][g] for g in groups)
        transfers = [e["transfer"] for e in pixel_entries]
        assert len(set(transfers)) == len(transfers)
        received = ws.layers(result)
        assert set(ws.frames) == set(transfers)  # no frame for a group entry
        for entry, pixels in zip(result["layers"], received):
            if not entry["group"]:
                assert np.array_equal(pixels, layer_pixels(live_server, job, entry))
    finally:
        ws.close()


def test_the_split_task_returns_the_elements_flat_in_the_sent_images_pixels(live_server):
    a = shapes()
    status, accepted = split_http(live_server, a, {"name": "Shapes"})
    assert status == 202 and accepted["position"] == 0
    result = result_of(live_server, accepted["job"])
    assert result["name"] == "Shapes" and result["canvas"] == {"width": 97, "height": 61}
    assert (result["seed"], result["caption"], result["restored"]) == (None, "", False)
    assert set(result["timings"]) == {"queued_s", "text_s", "split_s"}
    layers = result["layers"]
    assert [(e["name"], e["x"], e["y"], e["width"], e["height"]) for e in layers] == [
        ("Shapes 1", 5, 5, 25, 20), ("Shapes 2", 70, 10, 10, 10), ("Shapes 3", 60, 35, 30, 20)]
    assert all(e["group"] is False and e["parent"] is None for e in layers)
    assert np.array_equal(stacked(live_server, accepted["job"], result), whole(a))

    # without reading text, from a PNG file
    status, accepted = split_http(live_server, a, {"text_layers": False}, raw=False)
    assert status == 202
    result = result_of(live_server, accepted["job"])
    assert set(result["timings"]) == {"queued_s", "split_s"} and len(result["layers"]) == 3
    assert result["layers"][0]["name"] == "Layer 1"  # no name sent


@pytest.mark.parametrize("case", ["one-pixel", "transparent", "wide-30000x1"])
def test_the_split_task_takes_edge_cases(live_server, case):
    if case == "one-pixel":
        a = np.array([[[200, 10, 10, 255]]], np.uint8)
        expected = [(0, 0, 1, 1)]
    elif case == "transparent":
        a = np.zeros((48, 64, 4), np.uint8)
        expected = [(0, 0, 0, 0)]  # a single empty entry: "nothing to split"
    else:
        a = np.zeros((1, 30000, 4), np.uint8)
        a[0, 100:9000] = (10, 200, 10, 255)
        a[0, 20000:29990] = (10, 10, 200, 180)
        expected = [(100, 0, 8900, 1), (20000, 0, 9990, 1)]
    status, accepted = split_http(live_server, a, {"name": "L"})
    assert status == 202, accepted
    result = result_of(live_server, accepted["job"])
    assert [(e["x"], e["y"], e["width"], e["height"]) for e in result["layers"]] == expected
    if case == "transparent":
        assert result["layers"][0]["bytes"] == 0 and result["layers"][0]["name"] == "L"
    else:
        assert np.array_equal(stacked(live_server, accepted["job"], result), whole(a))
    # a decomposition still refuses what the model cannot read
    if case == "wide-30000x1":
        status, body = submit_http(live_server, a)
        assert status == 400 and body["code"] == "invalid_image"


def test_the_split_task_refuses_what_it_does_not_take(live_server):
    a = shapes()
    for params, words in (({"layers": 4}, "unknown parameter(s) for a split: layers"),
                          ({"split_elements": True}, "unknown parameter(s) for a split: split_elements"),
                          ({"name": 5}, "name must be a string"),
                          ({"text_layers": "yes"}, "text_layers must be true or false")):
        status, body = split_http(live_server, a, params)
        assert status == 400 and body["code"] == "invalid_params" and words in body["message"]
    body, ctype = multipart({}, b"not an image", "image/png")
    status, _, data = request(live_server, "POST", "/v1/split", body, {"Content-Type": ctype})
    assert status == 400 and json.loads(data)["code"] == "invalid_image"
    status, _, data = request(live_server, "POST", "/v1/split", b"{}", {"Content-Type": "application/json"})
    assert status == 400 and "POST /v1/split takes multipart" in json.loads(data)["message"]
    status, body = submit_http(live_server, a, {**FAST, "split_elements": "yes"})
    assert status == 400 and body["message"] == "split_elements must be true or false (got 'yes')"

    ws = WS(live_server)
    try:
        ws.send({"type": "submit", "ref": "t", "task": "bogus", "params": {},
                 "image": {"format": "rgba8", "width": 1, "height": 1, "bytes": 4, "transfer": 9}})
        error = ws.until("error")
        assert error["ref"] == "t" and error["code"] == "bad_request" and "task" in error["message"]
        ws.send({"type": "submit", "ref": "u", "task": "split", "params": {"steps": 2},
                 "image": {"format": "rgba8", "width": 1, "height": 1, "bytes": 4, "transfer": 9}})
        error = ws.until("error")
        assert error["ref"] == "u" and error["code"] == "invalid_params"
    finally:
        ws.close()


def test_the_split_task_over_the_websocket(live_server):
    a = shapes()
    ws = WS(live_server)
    try:
        data = a[..., [2, 1, 0, 3]].tobytes()
        ws.send({"type": "submit", "ref": "s", "task": "split", "params": {"name": "Shapes", "text_layers": False},
                 "image": {"format": "bgra8", "width": 97, "height": 61, "bytes": len(data), "transfer": 3}})
        ws.ws.send(b"LBPX" + (3).to_bytes(4, "little") + (0).to_bytes(4, "little") + data)
        accepted = ws.until("accepted", ref="s")
        assert accepted["position"] == 0
        result = ws.until("result", job=accepted["job"])
        assert [e["name"] for e in result["layers"]] == ["Shapes 1", "Shapes 2", "Shapes 3"]
        assert result["seed"] is None and all(not e["group"] for e in result["layers"])
        pixels = ws.layers(result)
        placed = [PlacedLayer(e["name"], e["x"], e["y"], p) for e, p in zip(result["layers"], pixels)]
        assert np.array_equal(composite(placed, 97, 61), whole(a))
    finally:
        ws.close()


def test_the_split_task_runs_while_a_model_job_runs_and_outside_the_queue(live_server):
    status, model_job = submit_http(live_server, shapes(), {**FAST, "steps": 60})
    assert status == 202
    try:
        wait_state(live_server, model_job["job"], ("running",))
        status, accepted = split_http(live_server, shapes(seed=2), {"name": "S"})
        assert status == 202 and accepted["position"] == 0
        assert live_server.get_json("/v1/status")["queue"]["running"] == model_job["job"]
        result = result_of(live_server, accepted["job"])
        assert len(result["layers"]) == 3
        state = json.loads(request(live_server, "GET", f"/v1/jobs/{model_job['job']}")[2])
        assert state["state"] == "running"  # the split did not wait for it
    finally:
        request(live_server, "POST", f"/v1/jobs/{model_job['job']}/cancel")
        assert wait_state(live_server, model_job["job"])["state"] == "cancelled"


def test_a_split_task_is_cancelled(live_server):
    rng = np.random.default_rng(3)
    a = np.zeros((1500, 2000, 4), np.uint8)
    for _ in range(200):  # many small shapes: reading their text and splitting them take a while
        x, y = rng.integers(0, 1950), rng.integers(0, 1450)
        a[y:y + rng.integers(5, 50), x:x + rng.integers(5, 50)] = (*rng.integers(0, 256, 3), 255)
    status, accepted = split_http(live_server, a)
    assert status == 202
    status, _, data = request(live_server, "POST", f"/v1/jobs/{accepted['job']}/cancel")
    assert status == 200 and json.loads(data)["state"] in ("cancelled", "queued", "running")
    assert wait_state(live_server, accepted["job"])["state"] == "cancelled"
    status, _, data = request(live_server, "GET", f"/v1/jobs/{accepted['job']}/result")
    assert status == 409 and json.loads(data)["code"] == "cancelled"


def test_the_split_task_works_where_no_model_can_be_loaded(tmp_path):
    server = start_server(tmp_path / "no-model-here", tmp_path / "server")
    try:
        status, accepted = split_http(server, shapes(), {"text_layers": False})
        assert status == 202
        result = result_of(server, accepted["job"])
        assert len(result["layers"]) == 3
        assert server.get_json("/v1/status")["model"]["state"] == "not_loaded"
    finally:
        stop_server(server)
