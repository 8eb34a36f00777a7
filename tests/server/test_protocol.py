"""The job protocol over HTTP and WebSocket against a real server process on the tiny pipeline."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed

from backend.core.options import job_options_json
from backend.core.settings import Settings

from .wire import FAST, FRAME, WS, image, request, submit_http, wait_state


def test_health_and_handshake(live_server):
    status, _, body = request(live_server, "GET", "/health", token=False)
    assert status == 200 and json.loads(body) == {"status": "ok", "service": "layerbridge"}
    info = live_server.get_json("/v1/info")
    assert info["protocol"] == 1 and info["server"] == "layerbridge"
    assert "websocket" in info["capabilities"] and info["limits"]["chunk_bytes"] == 4 * 1024 * 1024
    assert info["limits"]["max_side"] == 30000 and info["limits"]["max_aspect"] == 100
    # what a job may ask for, as declared, on both transports (the server runs with the default preset)
    assert "job_options" in info["capabilities"] and info["job_options"] == job_options_json(Settings().preset)
    ws = WS(live_server)
    assert {k: v for k, v in ws.hello.items() if k != "ref"} == info
    ws.close()


def test_status_reports_model_and_memory_mode(live_server):
    deadline = time.monotonic() + 120
    while (st := live_server.get_json("/v1/status"))["model"]["state"] != "ready":
        assert st["model"]["state"] in ("not_loaded", "loading"), st
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert st["memory_mode"]["mode"] == "cpu" and st["memory_mode"]["reason"]
    assert st["device"]["kind"] == "cpu"
    assert st["queue"] == {"length": 0, "running": None}


def test_http_job_end_to_end_layers_at_source_size(live_server):
    src = image(97, 61, seed=1)
    status, accepted = submit_http(live_server, src, dict(FAST, layers=3, name="Poster", name_layers=False))
    assert status == 202 and accepted["state"] == "queued"
    final = wait_state(live_server, accepted["job"])
    assert final["state"] == "done" and final["stage"] == "done"
    result = live_server.get_json(f"/v1/jobs/{accepted['job']}/result")
    assert result["canvas"] == {"width": 97, "height": 61}
    assert [layer["name"] for layer in result["layers"]] == ["Background", "Layer 1", "Layer 2"]
    assert result["name"] == "Poster" and result["seed"] == 7
    for entry in result["layers"]:
        status, headers, body = request(live_server, "GET", f"/v1/jobs/{accepted['job']}/layers/{entry['index']}")
        assert status == 200 and len(body) == entry["bytes"] == entry["width"] * entry["height"] * 4
        assert 0 <= entry["x"] and entry["x"] + entry["width"] <= 97
        assert 0 <= entry["y"] and entry["y"] + entry["height"] <= 61
        assert headers["X-Layer-X"] == str(entry["x"])
    status, headers, png = request(live_server, "GET", f"/v1/jobs/{accepted['job']}/layers/0?format=png")
    assert status == 200 and png.startswith(b"\x89PNG") and headers["Content-Type"] == "image/png"


def test_same_seed_same_layers_png_and_raw_uploads_agree(live_server):
    src = image(80, 80, seed=2)
    a = wait_state(live_server, submit_http(live_server, src)[1]["job"])
    b = wait_state(live_server, submit_http(live_server, src, raw=False)[1]["job"])
    la = request(live_server, "GET", f"/v1/jobs/{a['job']}/layers/1")[2]
    lb = request(live_server, "GET", f"/v1/jobs/{b['job']}/layers/1")[2]
    assert la == lb


def test_bgra8_in_and_out_is_rgba8_with_red_and_blue_swapped(live_server):
    assert "bgra8" in live_server.get_json("/v1/info")["capabilities"]
    src = image(70, 50, seed=5)
    bgra = np.ascontiguousarray(src[..., [2, 1, 0, 3]])
    jobs = [submit_http(live_server, src)[1]["job"],
            submit_http(live_server, bgra, dict(FAST, pixel_format="bgra8"))[1]["job"]]
    ws = WS(live_server)
    ws.submit(src, pixel_format="bgra8")
    jobs.append(ws.until("accepted")["job"])
    ws.close()
    for job in jobs:
        assert wait_state(live_server, job)["state"] == "done"
    rgba = [request(live_server, "GET", f"/v1/jobs/{job}/layers/1")[2] for job in jobs]
    assert rgba[0] == rgba[1] == rgba[2]
    meta = live_server.get_json(f"/v1/jobs/{jobs[0]}/result")["layers"][1]
    status, headers, out = request(live_server, "GET", f"/v1/jobs/{jobs[0]}/layers/1?format=bgra8")
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    layer = np.frombuffer(rgba[0], np.uint8).reshape(meta["height"], meta["width"], 4)
    assert out == layer[..., [2, 1, 0, 3]].tobytes() and out != rgba[0]
    assert request(live_server, "GET", f"/v1/jobs/{jobs[0]}/layers/1?format=rgba8")[2] == rgba[0]
    status, _, body = request(live_server, "GET", f"/v1/jobs/{jobs[0]}/layers/1?format=argb")
    assert status == 400 and json.loads(body)["code"] == "bad_request"


def test_ndjson_event_stream_has_stages_and_steps(live_server):
    job = submit_http(live_server, image(64, 48), dict(FAST, steps=3))[1]["job"]
    status, headers, body = request(live_server, "GET", f"/v1/jobs/{job}/events", timeout=180)
    assert status == 200 and headers["Content-Type"].startswith("application/x-ndjson")
    events = [json.loads(line) for line in body.splitlines() if line.strip()]
    events = [e for e in events if e["type"] == "progress"]
    stages = [e["stage"] for e in events]
    assert stages[-1] == "done" and events[-1]["state"] == "done"
    assert "denoising" in stages and "decoding" in stages and "finishing" in stages
    steps = [e["step"] for e in events if e["stage"] == "denoising"]
    assert steps == sorted(steps) and max(steps) <= 3
    assert all(e["total"] == 3 for e in events if e["stage"] in ("denoising", "decoding"))


def test_websocket_job_progress_and_exact_pixels(live_server):
    src = image(123, 45, seed=3)
    ws = WS(live_server)
    assert ws.hello["type"] == "hello" and ws.hello["protocol"] == 1
    ws.submit(src, dict(FAST, layers=2), ref="mine")
    accepted = ws.until("accepted")
    assert accepted["ref"] == "mine"
    seen = []
    while True:
        msg = ws.recv()
        if msg["type"] == "progress":
            seen.append(msg)
        if msg["type"] == "result":
            break
    assert seen[-1]["state"] == "done"
    assert msg["canvas"] == {"width": 123, "height": 45}
    layers = ws.layers(msg)
    ws.close()
    for entry, pixels in zip(msg["layers"], layers):
        http = request(live_server, "GET", f"/v1/jobs/{msg['job']}/layers/{entry['index']}")[2]
        assert pixels.tobytes() == http


def test_large_frames_are_chunked(live_server):
    src = image(1500, 1000, seed=4)  # 6 MB: two upload chunks, layers over 4 MiB come back in several frames
    ws = WS(live_server)
    ws.submit(src, dict(FAST, restore=False))
    result = ws.until("result")
    layers = ws.layers(result)
    assert any(e["bytes"] > 4 * 1024 * 1024 for e in result["layers"])
    assert all(p.shape == (e["height"], e["width"], 4) for p, e in zip(layers, result["layers"]))
    ws.close()


def test_cancel_running_job_delivers_nothing(live_server):
    ws = WS(live_server)
    ws.submit(image(64, 64), dict(FAST, steps=40))
    job = ws.until("accepted")["job"]
    ws.until("progress", stage="denoising")
    ws.send({"type": "cancel", "job": job})
    final = ws.until("progress", state="cancelled")
    assert final["stage"] == "cancelled" and final["step"] < 40
    ws.send({"type": "fetch", "job": job, "ref": "f"})
    err = ws.until("error")
    assert err["code"] == "cancelled"
    ws.send({"type": "cancel", "job": job, "ref": "again"})  # idempotent
    assert ws.until("progress", ref="again")["state"] == "cancelled"
    ws.close()
    status, _, body = request(live_server, "GET", f"/v1/jobs/{job}/result")
    assert status == 409 and json.loads(body)["code"] == "cancelled"


def test_queue_positions_and_cancel_queued(live_server):
    first = submit_http(live_server, image(64, 64), dict(FAST, steps=30))[1]["job"]
    second = submit_http(live_server, image(64, 64))[1]
    third = submit_http(live_server, image(64, 64))[1]
    assert second["position"] >= 1 and third["position"] == second["position"] + 1
    status, _, body = request(live_server, "POST", f"/v1/jobs/{second['job']}/cancel")
    assert status == 200 and json.loads(body)["state"] == "cancelled"
    assert live_server.get_json(f"/v1/jobs/{third['job']}")["position"] == second["position"]
    request(live_server, "POST", f"/v1/jobs/{first}/cancel")
    assert wait_state(live_server, third["job"])["state"] == "done"


def test_reconnect_subscribe_and_refetch(live_server):
    ws = WS(live_server)
    ws.submit(image(70, 50, seed=5), dict(FAST, steps=6))
    job = ws.until("accepted")["job"]
    ws.until("progress", stage="denoising")
    ws.close()  # the client goes away mid-job; the job goes on
    ws2 = WS(live_server, token="query")
    ws2.send({"type": "subscribe", "job": job})
    result = ws2.until("result", timeout=180)
    first = ws2.layers(result)
    ws2.send({"type": "fetch", "job": job, "ref": "again"})
    again = ws2.until("result", ref="again")
    assert [e["transfer"] for e in again["layers"]] != [e["transfer"] for e in result["layers"]]
    second = ws2.layers(again)
    assert all((a == b).all() for a, b in zip(first, second))
    ws2.close()


def test_concurrent_clients_all_get_their_results(live_server):
    results: dict[int, dict] = {}
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            ws = WS(live_server, token="message")
            ws.submit(image(40 + i, 30, seed=i), dict(FAST, seed=i))
            results[i] = ws.until("result", timeout=300)
            ws.layers(results[i])
            ws.close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=400)
    assert not errors, errors
    assert {i: r["canvas"]["width"] for i, r in results.items()} == {0: 40, 1: 41, 2: 42}
    assert len({r["job"] for r in results.values()}) == 3


def test_ping_and_status_over_websocket(live_server):
    ws = WS(live_server)
    ws.send({"type": "ping", "ref": 5})
    assert ws.until("pong")["ref"] == 5
    ws.send({"type": "status"})
    assert ws.until("status")["model"]["state"] in ("ready", "loading", "not_loaded")
    ws.close()


def test_job_states_start_in_a_running_stage_and_end_without_position(live_server):
    blocker = submit_http(live_server, image(64, 64), dict(FAST, steps=12))[1]["job"]
    job = submit_http(live_server, image(48, 48, seed=9))[1]["job"]  # queued behind the blocker
    ws = WS(live_server)
    ws.send({"type": "subscribe", "job": job})
    body = request(live_server, "GET", f"/v1/jobs/{job}/events", timeout=180)[2]
    ndjson = [e for e in map(json.loads, body.splitlines()) if e["type"] == "progress"]
    over_ws = [ws.until("progress", job=job)]
    while over_ws[-1]["state"] not in ("done", "failed", "cancelled"):
        over_ws.append(ws.until("progress", job=job))
    ws.close()
    for events in (ndjson, over_ws):
        assert events[0]["state"] == "queued", "the blocker ended before the test could watch the job start"
        assert events[-1]["state"] == "done" and events[-1]["position"] is None
        running = [e for e in events if e["state"] == "running"]
        assert running and running[0]["stage"] in ("loading_model", "captioning", "encoding"), running[:1]
        assert all(e["stage"] != "queued" and e["position"] == 0 for e in running)
    assert live_server.get_json(f"/v1/jobs/{job}")["position"] is None
    timings = live_server.get_json(f"/v1/jobs/{job}/result")["timings"]
    assert next(iter(timings)) == "queued_s" and timings["queued_s"] > 0
    assert wait_state(live_server, blocker)["position"] is None


def test_upload_completes_only_when_every_byte_arrived(live_server):
    src = image(64, 48, seed=10)
    data = src.tobytes()
    half = len(data) // 2
    ws = WS(live_server)
    ws.send({"type": "submit", "ref": "dup", "params": FAST,
             "image": {"format": "rgba8", "width": 64, "height": 48, "bytes": len(data), "transfer": 5}})
    ws.ws.send(FRAME.pack(b"LBPX", 5, 0) + data[:half])
    ws.ws.send(FRAME.pack(b"LBPX", 5, 0) + data[:half])  # resent: as many bytes as the image, half of it
    ws.send({"type": "ping", "ref": "p"})
    assert ws.recv() == {"type": "pong", "ref": "p"}, "the upload was taken with a hole"
    ws.ws.send(FRAME.pack(b"LBPX", 5, half - 100) + data[half - 100:])  # overlaps the first half
    assert ws.until("accepted")["ref"] == "dup"
    result = ws.until("result")
    layers = ws.layers(result)
    ws.close()
    reference = wait_state(live_server, submit_http(live_server, src)[1]["job"])["job"]
    for entry, pixels in zip(result["layers"], layers):
        assert pixels.tobytes() == request(live_server, "GET", f"/v1/jobs/{reference}/layers/{entry['index']}")[2]


def test_cancel_from_another_connection_answers_and_then_reports_the_end(live_server):
    owner = WS(live_server)
    owner.submit(image(64, 64), dict(FAST, steps=40))
    job = owner.until("accepted")["job"]
    owner.until("progress", stage="denoising")
    other = WS(live_server)
    other.send({"type": "cancel", "job": job, "ref": "c"})
    answer = other.recv()
    assert answer["type"] == "progress" and answer["ref"] == "c" and answer["state"] in ("running", "cancelled")
    final = answer if answer["state"] == "cancelled" else other.until("progress", state="cancelled", timeout=60)
    assert final["stage"] == "cancelled" and final["position"] is None
    assert owner.until("progress", state="cancelled")["job"] == job
    other.send({"type": "cancel", "job": job, "ref": "again"})  # idempotent, and nothing more to follow
    assert other.recv() == dict(live_server.get_json(f"/v1/jobs/{job}"), ref="again")
    other.send({"type": "ping", "ref": "p"})
    assert other.recv() == {"type": "pong", "ref": "p"}
    other.close()
    owner.close()


def test_subscribe_answer_echoes_ref(live_server):
    job = wait_state(live_server, submit_http(live_server, image(16, 16))[1]["job"])["job"]
    ws = WS(live_server)
    for ref in ("first", "again"):  # the second while the connection already follows the job
        ws.send({"type": "subscribe", "job": job, "ref": ref})
        answer = ws.until("progress")
        assert answer["ref"] == ref and answer["job"] == job and answer["state"] == "done"
    ws.close()


def test_sigterm_closes_open_websockets_with_going_away_and_stops_quickly(tiny_model, tmp_path):
    from server_process import start_server, stop_server

    server = start_server(tiny_model, tmp_path)
    try:
        ws = WS(server)
        assert ws.hello["type"] == "hello"
        queued = submit_http(server, params=dict(FAST, steps=100, layers=4))[1]["job"]  # running
        waiting = submit_http(server, params=dict(FAST, steps=2))[1]["job"]  # behind it in the queue
        for job in (queued, waiting):
            ws.send({"type": "subscribe", "job": job, "ref": job})
        ws.until("progress", job=queued, state="running", timeout=60)
        server.proc.send_signal(signal.SIGTERM)
        told = {}
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                msg = ws.recv(timeout=15)
                if msg["type"] == "error":
                    told[msg["job"]] = msg["code"]
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        # both followed jobs ended with an error saying why, before the connection closed
        assert told == {queued: "server_stopped", waiting: "server_stopped"}, told
        assert server.proc.wait(timeout=10) == 0  # the tray launcher gives 15 s before SIGKILL
    finally:
        stop_server(server)


# The server as `layerbridge` runs it, but with a model load that takes minutes, as 57 GB from disk can.
SLOW_LOAD = """
import sys, time
from backend.model import engine
engine.Engine.load = lambda self, *a, **k: time.sleep(300)
from backend.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_a_long_model_load_stops_at_once(tiny_model, tmp_path):
    """Python waits for the model thread at exit: a stop during a load waited for the load, past the launcher's 15 s."""
    from server_process import start_server, stop_server

    server = start_server(tiny_model, tmp_path, "--preload", launcher=[sys.executable, "-c", SLOW_LOAD])
    try:
        assert server.get_json("/v1/status")["model"]["state"] == "loading"
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
        assert "not waiting for it" in server.log()
    finally:
        stop_server(server)


def test_sigterm_ends_open_event_streams_and_stops_quickly(tiny_model, tmp_path):
    """An /events stream on a running job held a stop until aiohttp's shutdown timeout (60 s)."""
    import http.client
    import urllib.parse

    from server_process import start_server, stop_server

    server = start_server(tiny_model, tmp_path)
    try:
        status, answer = submit_http(server, params=dict(FAST, steps=100, layers=4))
        assert status == 202, answer
        url = urllib.parse.urlsplit(server.url)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        conn.request("GET", f"/v1/jobs/{answer['job']}/events", headers={"Authorization": f"Bearer {server.token}"})
        stream = conn.getresponse()
        assert stream.status == 200
        while json.loads(stream.readline())["state"] != "running":
            pass
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        rest = [json.loads(line) for line in stream.read().splitlines() if line.strip()]  # until the server closes it
        assert all(s["state"] == "running" for s in rest[:-1])
        # the last line says why: the server stopped, not the user cancelling
        assert rest[-1]["state"] == "failed" and rest[-1]["error"]["code"] == "server_stopped", rest[-1]
        assert "server was stopped" in rest[-1]["message"]
        assert server.proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 10
    finally:
        stop_server(server)


NAMED = """
import sys
from backend.model import engine
engine.name_layers = lambda pipe, layers, language, check: ["Background", "Café sign", "咖啡杯"][:len(layers)]
from backend.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_layer_names_reach_clients_whole(tiny_model, tmp_path):
    """Names as the text encoder gives them (given here: the tiny model answers noise), non-ASCII included: whole in
    the result, percent-encoded UTF-8 in X-Layer-Name."""
    import urllib.parse

    from server_process import start_server, stop_server

    server = start_server(tiny_model, tmp_path, launcher=[sys.executable, "-c", NAMED])
    try:
        job = submit_http(server, image(40, 30), dict(FAST, layers=3))[1]["job"]
        assert wait_state(server, job)["state"] == "done"
        result = server.get_json(f"/v1/jobs/{job}/result")
        assert [layer["name"] for layer in result["layers"]] == ["Background", "Café sign", "咖啡杯"]
        for entry in result["layers"]:
            status, headers, _ = request(server, "GET", f"/v1/jobs/{job}/layers/{entry['index']}")
            assert status == 200 and headers["X-Layer-Name"].isascii()
            assert urllib.parse.unquote(headers["X-Layer-Name"]) == entry["name"]
        assert request(server, "GET", f"/v1/jobs/{job}/layers/1")[1]["X-Layer-Name"] == "Caf%C3%A9 sign"
        ws = WS(server)
        ws.send({"type": "fetch", "job": job})
        assert [layer["name"] for layer in ws.until("result")["layers"]] == ["Background", "Café sign", "咖啡杯"]
        ws.close()
    finally:
        stop_server(server)
