"""The benchmark's FLOP count (scripts/gpu_bench.py --phases flops), on the tiny architecture: no GPU, no pipeline build."""

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
