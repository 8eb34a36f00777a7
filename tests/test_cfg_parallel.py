"""CFG parallel (backend/model/cfg_parallel.py): one job's conditional and unconditional passes on two gloo ranks on
the CPU (this process and the partner process the engine starts), against the same job in one process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from backend.core.job import JobParams
from backend.core.settings import Settings
from backend.model.engine import Engine, JobCancelled

JOB = {"layers": 2, "steps": 3, "prompt": "a test card", "cfg_scale": 4.0, "seed": 11, "text_layers": False,
       "restore": False, "name_layers": False}


@pytest.fixture(scope="module")
def split_engine(tiny_model: Path):
    engine = Engine(Settings(model=str(tiny_model), cfg_parallel=True))
    engine.load()
    yield engine
    engine.close()


def run(engine: Engine, params: dict, cancelled=lambda: False) -> tuple:
    result = engine.run(np.full((40, 56, 4), 200, np.uint8), JobParams.parse(params), lambda p: None, cancelled)
    return result, engine.last_latents.clone()


@pytest.mark.parametrize("preset, steps, cfg_steps", [("best", 3, 3), ("fast", 5, 2)])
def test_two_ranks_give_the_one_process_latents_bit_for_bit(engine, split_engine, preset, steps, cfg_steps):
    params = dict(JOB, preset=preset, steps=steps)
    threads = torch.get_num_threads()  # the partner runs with this process's thread count, the reference too
    one, one_latents = run(engine, params)
    assert torch.get_num_threads() == threads
    two, two_latents = run(split_engine, params)
    assert split_engine.cfg_split.exchanges == cfg_steps  # Best: every step; Fast: CFG on its first 40 %
    assert torch.equal(one_latents, two_latents)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(one.layers, two.layers))


def test_cancel_stops_both_ranks_within_a_step_and_the_next_job_runs(engine, split_engine):
    asked = {"steps": 0}

    def cancelled() -> bool:
        asked["steps"] += 1
        return asked["steps"] > 2

    with pytest.raises(JobCancelled):
        run(split_engine, dict(JOB, steps=12), cancelled)
    assert split_engine.cfg_split.stopped and split_engine.cfg_split.exchanges < 12
    one, one_latents = run(engine, JOB)
    two, two_latents = run(split_engine, JOB)  # the partner left the cancelled job and takes the next
    assert torch.equal(one_latents, two_latents)


def test_without_cfg_the_partner_is_not_asked(engine, split_engine):
    params = dict(JOB, cfg_scale=1.0)
    _, one_latents = run(engine, params)
    _, two_latents = run(split_engine, params)
    assert split_engine.cfg_split.exchanges == 0
    assert torch.equal(one_latents, two_latents)
