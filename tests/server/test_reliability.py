"""What a careless client or another program on the machine may send, and the server's memory of its jobs
(docs/reliability.md): coded errors, memory held only as bytes arrive, results kept, ids known after a restart."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time

import numpy as np
import pytest

from backend.core.errors import ErrorCode, LayerBridgeError
from backend.core.job import Job, JobParams, JobResult, JobState, Progress
from backend.core.layer import PlacedLayer
from backend.server.job_ids import RecentJobIds
from backend.server.worker import ENDED_WITHOUT_RESULT_KEPT, Worker

from .wire import FAST, WS, image, multipart, request, submit_http, wait_state

NESTED = "[" * 1000 + "]" * 1000


def raw_http(server, data: bytes, timeout: float = 10) -> bytes:
    """What the server answers to these bytes, up to its closing the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def body_json(answer: bytes) -> dict:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return json.loads(body)


# ---- defect 3: nested JSON ------------------------------------------------------------------------------------


def test_deeply_nested_json_gets_a_coded_error_and_the_connection_goes_on(live_server):
    ws = WS(live_server)
    try:
        ws.ws.send(NESTED)
        assert ws.recv(timeout=10)["code"] == "bad_request"
        ws.send({"type": "ping", "ref": "after"})
        assert ws.recv(timeout=10) == {"type": "pong", "ref": "after"}
    finally:
        ws.close()
    body, ctype = multipart(NESTED, image(4, 4).tobytes(), "application/octet-stream")
    status, _, data = request(live_server, "POST", "/v1/jobs", body, {"Content-Type": ctype})
    assert status == 400 and json.loads(data)["code"] == "bad_request"
    assert "RecursionError" not in live_server.log()


# ---- defect 4: upload memory --------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_an_announced_upload_holds_no_memory_before_its_bytes_arrive(live_server):
    before = rss_bytes(live_server.proc.pid)
    sockets = [WS(live_server) for _ in range(2)]
    try:
        for i, ws in enumerate(sockets):  # 5000×5000 rgba8: 100,000,000 bytes announced each, none sent
            ws.send({"type": "submit", "ref": "big", "params": FAST,
                     "image": {"format": "rgba8", "width": 5000, "height": 5000, "bytes": 100_000_000, "transfer": 1}})
            ws.send({"type": "ping", "ref": i})
            assert ws.recv(timeout=10) == {"type": "pong", "ref": i}  # the submit before it was taken
        grown = rss_bytes(live_server.proc.pid) - before
        assert grown < 40_000_000, f"{grown / 1e6:.0f} MB held for uploads that sent nothing"
    finally:
        for ws in sockets:
            ws.close()


def test_an_upload_out_of_order_is_assembled_and_only_what_arrived_is_reserved():
    from backend.server.upload import ImageSpec, Upload, UploadBudget

    budget = UploadBudget(1000)
    upload = Upload("r", JobParams.parse({}), ImageSpec(10, 5), budget)  # 200 bytes
    data = bytes(range(200))
    upload.write(150, memoryview(data[150:]))
    assert budget.held == 50 and not upload.complete
    upload.write(0, memoryview(data[:100]))
    upload.write(50, memoryview(data[50:150]))  # overlaps what came: counted once
    assert upload.complete and bytes(upload.buffer) == data and budget.held == 200
    upload.discard()
    assert budget.held == 0
    small = Upload("r", JobParams.parse({}), ImageSpec(10, 5), UploadBudget(100))
    small.write(0, memoryview(data[:100]))
    with pytest.raises(LayerBridgeError) as err:
        small.write(100, memoryview(data[100:101]))
    assert err.value.code == ErrorCode.payload_too_large


# ---- defect 5: results kept ---------------------------------------------------------------------------------


def ended(worker: Worker, state: JobState, age_s: float, with_result: bool = False) -> Job:
    job = Job(JobParams.parse({}), np.zeros((0, 0, 4), np.uint8))
    job.state = state
    job.progress = Progress()
    if with_result:
        layer = PlacedLayer("Background", 0, 0, np.zeros((2, 2, 4), np.uint8))
        job.result = JobResult(2, 2, [layer], seed=1, caption="", restored=True, timings={})
    job.finished_at = time.monotonic() - age_s
    worker.jobs[job.id] = job
    return job


def test_cancelled_and_failed_jobs_do_not_push_a_result_out():
    worker = Worker(None, max_queue=64, result_ttl_s=3600, max_results=2)
    done = ended(worker, JobState.done, 100, with_result=True)
    for i in range(16):
        ended(worker, JobState.cancelled if i % 2 else JobState.failed, 50 - i)
    worker._expire()
    assert done.id in worker.jobs and len(worker.jobs) == 17
    newer = [ended(worker, JobState.done, 10 - i, with_result=True) for i in range(2)]
    worker._expire()  # three results for two places: the oldest result goes, still not for the cancelled ones
    assert done.id not in worker.jobs and all(j.id in worker.jobs for j in newer)
    for i in range(ENDED_WITHOUT_RESULT_KEPT):
        ended(worker, JobState.cancelled, 5)
    worker._expire()  # those without a result are bounded on their own
    assert len(worker.jobs) == 2 + ENDED_WITHOUT_RESULT_KEPT


# ---- defect 9: ids across a restart -------------------------------------------------------------------------


def test_a_job_of_an_earlier_run_answers_server_stopped(tiny_model, tmp_path):
    from server_process import start_server, stop_server

    server = start_server(tiny_model, tmp_path)
    try:
        status, accepted = submit_http(server)
        assert status == 202
        job = accepted["job"]
    finally:
        stop_server(server)
    server = start_server(tiny_model, tmp_path)  # the same config folder: a restart
    try:
        for path in (f"/v1/jobs/{job}", f"/v1/jobs/{job}/result", f"/v1/jobs/{job}/layers/0"):
            status, _, data = request(server, "GET", path)
            err = json.loads(data)
            assert status == 503 and err["code"] == "server_stopped" and err["job"] == job, path
        status, _, data = request(server, "GET", "/v1/jobs/j_0123456789abcdef")
        assert status == 404 and json.loads(data)["code"] == "not_found"  # an id it never gave: as before
        ws = WS(server)
        try:
            ws.send({"type": "subscribe", "job": job, "ref": "s"})
            err = ws.recv(timeout=10)
            assert err["code"] == "server_stopped" and err["ref"] == "s"
        finally:
            ws.close()
    finally:
        stop_server(server)
    stored = json.loads((tmp_path / "config" / "recent-jobs.json").read_text())
    assert stored == {"jobs": [job]}  # ids only


def test_the_ids_file_keeps_the_newest_and_survives_a_broken_file(tmp_path, caplog):
    path = tmp_path / "recent-jobs.json"
    path.write_text("{not json")
    ids = RecentJobIds(path)
    assert "cannot read" in caplog.text and not ids.before_restart("j_1")
    for i in range(1005):
        ids.remember(f"j_{i}")
    again = RecentJobIds(path)
    assert again.before_restart("j_1004") and again.before_restart("j_5") and not again.before_restart("j_4")
    assert not RecentJobIds(None).before_restart("j_1004")


# ---- the minor ones -----------------------------------------------------------------------------------------


def test_a_request_without_host_or_a_websocket_without_upgrade_gets_a_coded_json_error(live_server):
    answer = raw_http(live_server, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]
    assert body_json(answer)["code"] == "bad_request"
    answer = raw_http(live_server, b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                      + live_server.token.encode() + b"\r\nConnection: close\r\n\r\n")
    assert b" 400 " in answer.split(b"\r\n")[0] and body_json(answer)["code"] == "bad_request"
    assert "Missing 'Host'" in live_server.log() and "BadHttpMessage" not in live_server.log()


def test_a_request_with_two_origins_is_refused(live_server):
    conn = http.client.HTTPConnection("127.0.0.1", live_server.port, timeout=10)
    conn.putrequest("GET", "/v1/status")
    conn.putheader("Authorization", f"Bearer {live_server.token}")
    conn.putheader("Origin", "uxp://com.layerbridge.photoshop")
    conn.putheader("Origin", "https://evil.example")
    conn.endheaders()
    answer = conn.getresponse()
    assert answer.status == 403 and json.loads(answer.read())["code"] == "forbidden_origin"
    assert answer.getheader("Access-Control-Allow-Origin") is None
    conn.close()


def test_an_unknown_multipart_part_is_refused_before_its_bytes_are_read(live_server):
    boundary = "b0undary"
    head = (f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {live_server.token}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 50000000\r\n\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="junk"\r\n\r\n').encode() + b"x" * 1000
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as s:
        s.sendall(head)  # and not the other 49,999,000 bytes
        answer = s.recv(65536)
    assert b" 400 " in answer.split(b"\r\n")[0] and "junk" in body_json(answer)["message"]


def test_a_layer_index_is_plain_ascii_digits(live_server):
    status, accepted = submit_http(live_server)
    assert status == 202 and wait_state(live_server, accepted["job"])["state"] == "done"
    job = accepted["job"]
    assert request(live_server, "GET", f"/v1/jobs/{job}/layers/1")[0] == 200
    for index in ("%201", "%EF%BC%91", "+1", "1%20", "-0"):  # " 1", full-width "１"
        status, _, data = request(live_server, "GET", f"/v1/jobs/{job}/layers/{index}")
        assert status == 404 and json.loads(data)["code"] == "not_found", index


def test_the_server_header_names_no_versions(live_server):
    for path in ("/health", "/v1/status", "/v1/jobs/j_x"):
        _, headers, _ = request(live_server, "GET", path)
        assert headers["Server"] == "LayerBridge", path


# ---- one parse per job --------------------------------------------------------------------------------------


class InstantEngine:
    """Stands for the model: every job ends at once with one layer (what is tested is the server's parsing)."""

    is_local = True

    def first_progress(self, params: JobParams) -> Progress:
        return Progress()

    def run(self, image, params, on_progress, cancelled) -> JobResult:
        h, w = image.shape[:2]
        return JobResult(w, h, [PlacedLayer("Background", 0, 0, image)], seed=1, caption="", restored=True, timings={})


def test_a_websocket_jobs_params_are_parsed_once_and_kept_with_the_upload(monkeypatch, tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from backend.core import job as job_module
    from backend.core.settings import Settings
    from backend.server.app import create_app
    from backend.server.appkeys import WORKER

    calls = []
    original = job_module.JobParams.parse.__func__

    def counting(cls, raw, default_preset="best"):
        calls.append(dict(raw or {}))
        return original(cls, raw, default_preset)

    monkeypatch.setattr(job_module.JobParams, "parse", classmethod(counting))
    monkeypatch.setenv("LAYERBRIDGE_CONFIG_DIR", str(tmp_path))

    async def scenario() -> Job:
        app = create_app(Settings(), engine=InstantEngine(), token="t" * 40)
        async with TestClient(TestServer(app)) as client:
            ws = await client.ws_connect("/v1/ws", headers={"Authorization": "Bearer " + "t" * 40})
            await ws.send_json({"type": "hello", "protocol": 1})
            await ws.receive_json()
            pixels = image(7, 3).tobytes()
            await ws.send_json({"type": "submit", "ref": "one", "params": {"layers": 3, "seed": 9},
                                "image": {"format": "bgra8", "width": 7, "height": 3, "bytes": len(pixels), "transfer": 5}})
            await ws.send_bytes(b"LBPX" + (5).to_bytes(4, "little") + (0).to_bytes(4, "little") + pixels)
            accepted = await ws.receive_json()
            assert accepted["type"] == "accepted", accepted
            job = app[WORKER].get(accepted["job"])
            await ws.close()
            return job

    job = asyncio.run(scenario())
    assert calls == [{"layers": 3, "seed": 9}]  # once, and without the image's description mixed in
    assert job.params.layers == 3 and job.params.seed == 9
