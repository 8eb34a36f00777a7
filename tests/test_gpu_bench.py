"""scripts/gpu_bench.py on the tiny architecture, no GPU: the FLOP count (no pipeline build), GGUF packing, and the
gguf and int8 phases through the server's own loading and placing."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _load_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", REPO / "scripts" / "gpu_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _flops_rows(bench, out: Path, layers: int) -> list[dict]:
    assert bench.main(["--arch", "tiny", "--phases", "flops", "--layers", str(layers), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert not any(r["phase"] == "build" for r in rows), "the flops phase must not build the pipeline"
    assert not any("error" in r for r in rows), rows
    return rows


def _phase_rows(phase: str, out: Path) -> list[dict]:
    """One phase on the tiny model with a small source image; its rows, none of them an error."""
    args = ["--arch", "tiny", "--phases", phase, "--layers", "2", "--width", "96", "--height", "64", "--out", str(out)]
    assert _load_bench().main(args) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert not any("error" in r for r in rows), rows
    return rows


def test_flops_phase_counts_tiny_transformer(tmp_path: Path) -> None:
    bench = _load_bench()
    four = _flops_rows(bench, tmp_path / "four", 4)
    two = _flops_rows(bench, tmp_path / "two", 2)

    forwards = {r["pass"]: r for r in four if r["phase"] == "flops"}
    assert set(forwards) == {"cond-short", "cond-worst", "uncond"}
    for row in forwards.values():
        assert row["flops"] > 0 and row["attention_flops"] > 0 and row["rest_flops"] > 0
        assert row["attention_flops"] + row["rest_flops"] == row["flops"]
        assert row["attention_calls"] == 2  # one joint attention per block of the tiny transformer
        assert row["frames"] == 4 + 2  # the layers, the composite, the condition image
    assert forwards["cond-short"]["text_tokens"] == 155
    assert forwards["cond-worst"]["text_tokens"] == 512  # the pipeline cuts the text embeddings at 512
    assert forwards["uncond"]["text_tokens"] < forwards["cond-short"]["text_tokens"]
    assert forwards["cond-worst"]["flops"] > forwards["cond-short"]["flops"] > forwards["uncond"]["flops"]

    best = {r["caption"]: r for r in four if r["phase"] == "flops-best"}
    assert best["short"]["flops"] == 50 * (forwards["cond-short"]["flops"] + forwards["uncond"]["flops"])
    assert {"H100 bf16", "H200 bf16"} <= set(best["short"]["seconds_at_peak"])

    fewer = {r["pass"]: r for r in two if r["phase"] == "flops"}
    assert fewer["cond-short"]["image_tokens"] < forwards["cond-short"]["image_tokens"]
    for name in forwards:
        assert forwards[name]["flops"] > fewer[name]["flops"]


def test_gguf_packing_is_byte_for_byte_ggufs() -> None:
    import gguf
    import numpy as np
    import torch

    bench = _load_bench()
    rng = np.random.default_rng(7)
    weight = (rng.standard_normal((48, 128)) * rng.uniform(0.01, 3, (48, 1))).astype(np.float32)
    weight[3, :32] = 0  # an all-zero block (scale 0)
    weight[5, 40] = -weight[5, 32:64].__abs__().max() * 2  # the block's largest magnitude negative (Q4_0's sign)
    for kind, kind_id in (("q8_0", gguf.GGMLQuantizationType.Q8_0), ("q4_0", gguf.GGMLQuantizationType.Q4_0)):
        ours = bench.gguf_pack(torch.from_numpy(weight), kind).numpy()
        theirs = gguf.quants.quantize(weight, kind_id)
        assert ours.dtype == np.uint8 and ours.shape == theirs.shape
        assert np.array_equal(ours, theirs), kind
        back = gguf.quants.dequantize(ours, kind_id)
        error = np.abs(back - weight).max(axis=1) / np.abs(weight).max(axis=1).clip(1e-9)
        assert error.max() < (0.01 if kind == "q8_0" else 0.15)


def test_gguf_phase_runs_the_server_loader_on_the_tiny_model(tmp_path: Path) -> None:
    rows = _phase_rows("gguf", tmp_path)
    phases = [r["phase"] for r in rows]
    assert phases[:5] == ["start", "build", "gguf-reference-bf16", "gguf-load", "gguf"]
    load = rows[phases.index("gguf-load")]
    assert 0 < load["packed_linear_layers"] <= load["linear_layers"]
    gguf_row = rows[phases.index("gguf")]
    # the same random weights in Q8_0: close to bf16's result, not identical (the weights did change)
    assert gguf_row["finite"] and 0 < gguf_row["deviation_vs_first_same_preset"] < 0.05
    offloaded = [r for r in rows if r["phase"] == "gguf-card24"]
    assert offloaded and all(r["mode"] == "host_offload" for r in offloaded)
    assert all(r["deviation_vs_first_same_preset"] == gguf_row["deviation_vs_first_same_preset"] for r in offloaded)


def test_int8_phase_quantises_as_the_server_does_and_runs_host_offload_on_the_tiny_model(tmp_path: Path) -> None:
    rows = _phase_rows("int8", tmp_path)
    phases = [r["phase"] for r in rows]
    assert phases[:5] == ["start", "build", "int8-reference-bf16", "int8-staged-quantize", "int8"]
    int8_row = rows[phases.index("int8")]
    assert int8_row["transformer_int8"] and not rows[phases.index("int8-reference-bf16")]["transformer_int8"]
    # int8 weights move the result a little from the unquantised one on the same seed, not a lot
    assert int8_row["finite"] and 0 < int8_row["deviation_vs_first_same_preset"] < 0.05
    offloaded = [r for r in rows if r["phase"] == "int8-card24"]
    assert len(offloaded) == 2 and all(r["mode"] == "host_offload" and r["transformer_int8"] for r in offloaded)
    assert all(r["deviation_vs_first_same_preset"] == int8_row["deviation_vs_first_same_preset"] for r in offloaded)


def test_fp8file_phase_keeps_the_files_fp8_weights_on_the_tiny_model(tmp_path: Path) -> None:
    rows = _phase_rows("fp8file", tmp_path)
    phases = [r["phase"] for r in rows]
    assert phases[:5] == ["start", "build", "fp8file-reference-bf16", "fp8file-load", "fp8file"]
    load = rows[phases.index("fp8file-load")]
    assert load["packed_linear_layers"] == load["linear_layers"] > 0  # every linear layer kept its FP8 weight
    fp8_row = rows[phases.index("fp8file")]
    # the same random weights rounded to FP8: close to the unquantised result, not identical
    assert fp8_row["finite"] and 0 < fp8_row["deviation_vs_first_same_preset"] < 0.1
    offloaded = [r for r in rows if r["phase"] == "fp8file-card24"]
    assert len(offloaded) == 2 and all(r["mode"] == "host_offload" for r in offloaded)
    assert all(r["deviation_vs_first_same_preset"] == fp8_row["deviation_vs_first_same_preset"] for r in offloaded)


def test_compile_phase_says_what_came_from_the_compile_cache(tmp_path: Path, start_env: dict) -> None:
    """In a process of its own (a start): the first compiled job fills the cache under the user cache folder."""
    import subprocess
    import sys

    out = tmp_path / "out"
    args = ["--arch", "tiny", "--phases", "compile", "--layers", "2", "--width", "96", "--height", "64",
            "--budget-s", "100", "--out", str(out)]
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_bench.py"), *args], env=start_env, cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert not any("error" in r for r in rows), rows
    phases = [r["phase"] for r in rows]
    assert phases[:5] == ["start", "build", "compile-first", "compile-cache", "compiled"], phases
    cache = rows[phases.index("compile-cache")]
    assert cache["folder"] == str(tmp_path / "cache" / "inductor") and cache["fxgraph_cache_miss"] >= 1, cache
    compiled = rows[phases.index("compiled")]
    assert compiled["compiled"] and compiled["finite"] and compiled["deviation_vs_first_same_preset"] < 0.01, compiled


def test_naming_phase_times_the_engines_naming_on_the_tiny_model(tmp_path: Path) -> None:
    rows = _phase_rows("naming", tmp_path)
    row = next(r for r in rows if r["phase"] == "naming")
    assert row["layers"] == 2 and row["max_tokens"] == 8 and row["name_s"] > 0 and row["mode"] == "cpu"
    assert row["bucket"] == "768x512" and 0 <= row["named"] <= 1
