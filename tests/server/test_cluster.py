"""A team server (docs/team-server.md): `layerbridge serve --cluster local --replicas 2`, two CPU replicas of the tiny
model behind the one aiohttp front, through Ray Serve. One server (one small Ray instance) for the whole module, in
one xdist worker; the test that kills replicas runs last."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("ray.serve", reason="the cluster extra is not installed (pip install -e \".[cluster]\")")

from backend.core.job import JobParams  # noqa: E402
from qt_client import run_client  # noqa: E402
from server_process import start_server, stop_server  # noqa: E402

from .wire import FAST, WS, image, request, submit_http, wait_state  # noqa: E402

pytestmark = pytest.mark.xdist_group("cluster")

REPLICAS = 2


def status(server) -> dict:
    return json.loads(request(server, "GET", "/v1/status")[2])


def wait_replicas_ready(server, count: int = REPLICAS, timeout: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replicas = status(server).get("replicas", [])
        if sum(r["state"] == "ready" for r in replicas) >= count:
            return replicas
        time.sleep(0.2)
    raise TimeoutError(f"{count} replicas not ready: {replicas}\n{server.log()[-3000:]}")


@pytest.fixture(scope="module")
def cluster_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    server = start_server(tiny_model, tmp_path_factory.mktemp("cluster"), "--cluster", "local",
                          "--replicas", str(REPLICAS), timeout=120)
    try:
        wait_replicas_ready(server)
        yield server
    finally:
        stop_server(server)


def layers_of(server, job: str) -> list[tuple[int, int, np.ndarray]]:
    result = json.loads(request(server, "GET", f"/v1/jobs/{job}/result")[2])
    out = []
    for entry in result["layers"]:
        code, headers, body = request(server, "GET", f"/v1/jobs/{job}/layers/{entry['index']}")
        assert code == 200
        pixels = np.frombuffer(body, np.uint8).reshape(entry["height"], entry["width"], 4)
        out.append((entry["x"], entry["y"], pixels))
    return out


def follow(server, jobs: list[str], timeout: float = 180) -> dict[str, list[tuple[float, dict]]]:
    """Every progress message of these jobs, timed, over one WebSocket, until each has ended."""
    ws = WS(server)
    seen: dict[str, list[tuple[float, dict]]] = {job: [] for job in jobs}
    for job in jobs:
        ws.send({"type": "subscribe", "job": job})
    ended: set[str] = set()
    deadline = time.monotonic() + timeout
    while ended != set(jobs):
        msg = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        if msg.get("type") == "progress" and msg.get("job") in seen:
            seen[msg["job"]].append((time.monotonic(), msg))
            if msg["state"] in ("done", "failed", "cancelled"):
                ended.add(msg["job"])
    ws.close()
    return seen


def test_status_lists_the_replicas_and_the_model(cluster_server):
    s = status(cluster_server)
    assert s["model"]["state"] == "ready" and s["memory_mode"]["mode"] == "cpu"
    assert s["cluster"]["replicas"] == REPLICAS and s["cluster"]["address"] == "local"
    replicas = s["replicas"]
    assert len(replicas) == REPLICAS and len({r["pid"] for r in replicas}) == REPLICAS
    assert all(r["host"] and r["gpu"] is None and r["state"] == "ready" and r["job"] is None for r in replicas)
    assert s["queue"] == {"length": 0, "running": None, "running_jobs": []}


def test_two_jobs_run_at_once_on_two_replicas(cluster_server):
    params = dict(FAST, steps=8)
    started = time.monotonic()
    alone = submit_http(cluster_server, image(64, 64), params)[1]["job"]
    assert wait_state(cluster_server, alone)["state"] == "done"
    one_job = time.monotonic() - started

    started = time.monotonic()
    jobs = [submit_http(cluster_server, image(64, 64, seed=i), params)[1] for i in range(2)]
    events = follow(cluster_server, [j["job"] for j in jobs])
    both = time.monotonic() - started
    denoising = []
    for job, seen in events.items():
        assert seen[-1][1]["state"] == "done", seen[-1]
        steps = [t for t, m in seen if m["stage"] == "denoising"]
        assert steps, seen
        denoising.append((steps[0], steps[-1]))
    (a0, a1), (b0, b1) = denoising
    assert a0 < b1 and b0 < a1, f"the denoising intervals do not overlap: {denoising}"
    print(f"\none job alone: {one_job:.1f} s; two jobs at once on {REPLICAS} replicas: {both:.1f} s "
          f"(one replica runs them one after the other: about {2 * one_job:.1f} s)")


def test_results_equal_the_in_process_result_for_the_same_seed(cluster_server, engine):
    source = image(83, 57, seed=3)
    params = dict(FAST, steps=3, seed=1234)
    job = submit_http(cluster_server, source, params)[1]["job"]
    assert wait_state(cluster_server, job)["state"] == "done"
    remote = layers_of(cluster_server, job)
    # A CPU replica has one thread (Ray's num_cpus=1); the thread count orders the CPU's float sums, so the
    # in-process run gets one too (on a GPU, the same card runs the same kernels either way).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = engine.run(source, JobParams.parse(params), lambda p: None, lambda: False)
    finally:
        torch.set_num_threads(threads)
    assert len(remote) == len(local.layers) == params["layers"]
    for (x, y, pixels), layer in zip(remote, local.layers):
        assert (x, y) == (layer.x, layer.y)
        assert np.array_equal(pixels, layer.pixels)


def test_cancel_of_one_job_leaves_the_other_running(cluster_server):
    long = dict(FAST, steps=40)
    keep = submit_http(cluster_server, image(64, 64, seed=1), dict(FAST, steps=10))[1]["job"]
    drop = submit_http(cluster_server, image(64, 64, seed=2), long)[1]["job"]
    ws = WS(cluster_server)
    ws.send({"type": "subscribe", "job": drop})
    ws.until("progress", job=drop, stage="denoising")
    replica = next(r for r in status(cluster_server)["replicas"] if r["job"] == drop)
    ws.send({"type": "cancel", "job": drop})
    final = ws.until("progress", job=drop, state="cancelled")
    ws.close()
    assert final["step"] < long["steps"]
    assert wait_state(cluster_server, keep)["state"] == "done"
    # the cancel reached the replica: it stopped within a step and is free again (it ran 40 steps otherwise)
    deadline = time.monotonic() + 30
    while True:
        mine = next(r for r in status(cluster_server)["replicas"] if r["id"] == replica["id"])
        if mine["state"] == "ready":
            break
        assert time.monotonic() < deadline, mine
        time.sleep(0.1)
    code, _, body = request(cluster_server, "GET", f"/v1/jobs/{drop}/result")
    assert code == 409 and json.loads(body)["code"] == "cancelled"


def test_four_clients_three_jobs_each_none_lost_or_duplicated(cluster_server):
    clients, per_client = 4, 3
    outcomes: dict[int, dict] = {}
    errors: list[BaseException] = []
    busy_seen: list[dict] = []

    def client(c: int) -> None:
        try:
            ws = WS(cluster_server)
            for k in range(per_client):
                ws.submit(image(48, 40, seed=10 * c + k), dict(FAST, seed=100 * c + k), transfer=k + 1, ref=f"c{c}k{k}")
            accepted: dict[str, str] = {}
            positions: dict[str, list[int]] = {}
            results: dict[str, dict] = {}
            while len(results) < per_client:
                msg = ws.recv(timeout=300)
                if msg["type"] == "accepted":
                    accepted[msg["job"]] = msg["ref"]
                elif msg["type"] == "progress" and msg.get("position") is not None:
                    positions.setdefault(msg["job"], []).append(msg["position"])
                elif msg["type"] == "result":
                    assert msg["job"] not in results, "a result came twice"
                    results[msg["job"]] = msg
                    ws.layers(msg)
                elif msg["type"] == "error":
                    raise AssertionError(msg)
            ws.close()
            outcomes[c] = {"accepted": accepted, "positions": positions, "results": results}
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            errors.append(exc)

    def watch() -> None:
        while len(outcomes) + len(errors) < clients:
            busy_seen.append(status(cluster_server)["queue"])
            time.sleep(0.3)

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    watcher = threading.Thread(target=watch)
    for t in threads + [watcher]:
        t.start()
    for t in threads + [watcher]:
        t.join(timeout=400)
    assert not errors, errors
    every_job = [job for o in outcomes.values() for job in o["results"]]
    assert len(every_job) == len(set(every_job)) == clients * per_client
    for c, o in outcomes.items():
        assert set(o["accepted"]) == set(o["results"]), o
        assert sorted(o["accepted"].values()) == [f"c{c}k{k}" for k in range(per_client)]
        for job, seen in o["positions"].items():
            assert seen == sorted(seen, reverse=True), f"{job}'s position went up: {seen}"
        assert {r["seed"] for r in o["results"].values()} == {100 * c + k for k in range(per_client)}
    assert max(len(q["running_jobs"]) for q in busy_seen) == REPLICAS, busy_seen
    assert all(len(q["running_jobs"]) <= REPLICAS for q in busy_seen)
    print(f"\n{clients} clients × {per_client} jobs on {REPLICAS} replicas: {time.monotonic() - started:.1f} s")


def running_on(server, job: str, not_pids: set[int], timeout: float = 120) -> dict:
    """The replica that runs `job`, once it has started denoising there (on none of `not_pids`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = json.loads(request(server, "GET", f"/v1/jobs/{job}")[2])
        assert state["state"] == "running", state
        if state["stage"] == "denoising":
            replica = next((r for r in status(server)["replicas"] if r["job"] == job), None)
            if replica is not None and replica["pid"] not in not_pids:
                return replica
        time.sleep(0.05)
    raise TimeoutError(f"job {job} did not start denoising on a new replica")


def test_the_krita_plugins_client_runs_a_job_on_the_cluster_unchanged(cluster_server):
    # the Krita docker's own network client (krita_plugin/layerbridge, under Debian's PyQt5 as in Krita 5), as its
    # end-to-end test runs it against one process (tests/krita/test_krita_qtclient.py)
    out = run_client("PyQt5", cluster_server.url, cluster_server.token)
    assert out["ok"], out
    assert out["names"] == ["Background", "Layer 1"] and out["sizes"] == {"0": 24 * 16 * 4, "1": 24 * 16 * 4}
    assert any("Separating layers" in p for p in out["progress"])
    job = json.loads(request(cluster_server, "GET", f"/v1/jobs/{out['job']}")[2])
    assert job["state"] == "done"


def test_a_killed_replica_gives_one_retry_then_worker_lost_and_the_server_keeps_serving(cluster_server):
    """Last in the module: it kills both replicas (Serve starts new ones)."""
    health: list[tuple[int, float]] = []
    done = threading.Event()

    def watch_health() -> None:
        while not done.is_set():
            t = time.monotonic()
            code = request(cluster_server, "GET", "/health", token=False, timeout=10)[0]
            health.append((code, time.monotonic() - t))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_health)
    watcher.start()
    try:
        job = submit_http(cluster_server, image(64, 64), dict(FAST, steps=100))[1]["job"]
        first = running_on(cluster_server, job, set())
        os.kill(first["pid"], signal.SIGKILL)
        second = running_on(cluster_server, job, {first["pid"]})  # run again, on a replica that is alive
        assert second["id"] != first["id"]
        os.kill(second["pid"], signal.SIGKILL)
        final = wait_state(cluster_server, job, timeout=120)
        assert final["state"] == "failed" and final["error"]["code"] == "worker_lost", final
        code, _, body = request(cluster_server, "GET", f"/v1/jobs/{job}/result")
        assert code == 503 and json.loads(body)["code"] == "worker_lost"
        # Serve starts new replicas in place of the dead ones; the next job runs
        after = submit_http(cluster_server, image(64, 64))[1]["job"]
        assert wait_state(cluster_server, after, timeout=180)["state"] == "done"
    finally:
        done.set()
        watcher.join()
    assert health and all(code == 200 for code, _ in health), [c for c, _ in health if c != 200]
    slowest = max(t for _, t in health)
    print(f"\n/health answered {len(health)} times while replicas died, slowest in {slowest * 1000:.0f} ms")
    assert slowest < 5
