"""CFG parallel: one job on two devices. Each CFG step's two transformer passes (with the prompt, and with the empty
negative prompt) run side by side on two ranks of a torch.distributed group, which then swap their predictions.

Both ranks run the same pipeline call with the same inputs and seed. `CfgSplit` wraps the transformer's forward
(below a preset's late-CFG skip, which wraps it in turn): at a step with CFG, rank 0 computes the conditional
prediction and rank 1 the unconditional one; one all_gather gives each rank both, so both take the same scheduler
step and hold the same latents. The pipeline calls the conditional pass first: rank 1 hands it back an empty tensor
of the prediction's shape, filled in place (the pipeline keeps a view of it) when the swap comes with the
unconditional call. Each pass runs exactly the computation one device runs, so the latents equal the one-device
run's bit for bit (on the same kind of device and thread count). After the preset's last CFG step rank 1 leaves the
job: rank 0 runs the conditional-only steps, decodes and finishes alone.

`Partner` is rank 1's side in a server: a process started next to the engine (the next GPU), which loads the same
model and runs the CFG part of each job the engine sends it (engine.py's `cfg_partner_main`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

from .device import visible_gpus

log = logging.getLogger("layerbridge.cfg_parallel")

WORLD = 2


class PartnerLeft(Exception):
    """Raised in rank 1's pipeline after its last CFG step: the rest of the job is rank 0's."""


@dataclass
class CfgJob:
    """What rank 1 needs to run the same pipeline call as rank 0."""

    image: Any  # the model's input picture (PIL)
    prompt: str
    params: Any  # JobParams
    seed: int


class CfgSplit:
    """Wraps `transformer.forward` on one rank of two for one job at a time (`begin`, then `end`).

    Args:
        transformer: the pipeline's transformer.
        rank: 0 (the conditional passes, and the whole job's other work) or 1 (the unconditional passes).
        group: the torch.distributed group of the two ranks (default: the world).
    """

    def __init__(self, transformer: Any, rank: int, group: Any = None):
        self.transformer = transformer
        self.rank = rank
        self.group = group
        self.cfg_steps = 0
        self.cancelled: Callable[[], bool] = lambda: False
        self.stopped = False
        self.exchanges = 0  # steps whose passes were split (for tests and the log)
        self._cond_embeds: Any = None
        self._step = -1
        self._cond: Any = None
        self.inner = transformer.forward
        self.previous = vars(transformer).get("forward")
        transformer.forward = self

    def begin(self, cfg_steps: int, cancelled: Callable[[], bool] = lambda: False) -> None:
        """A new job: its first `cfg_steps` steps have both passes. `cancelled` is asked (on rank 0) before each
        of them; both ranks then stop together (`stopped` turns true, JobCancelled is raised in the pipeline)."""
        self.cfg_steps = cfg_steps
        self.cancelled = cancelled
        self.stopped = False
        self.exchanges = 0
        self._cond_embeds = None
        self._step = -1
        self._cond = None

    def _stop_together(self) -> bool:
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1 if (self.rank == 0 and self.cancelled()) else 0], dtype=torch.int32,
                            device=self._device())
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return bool(flag.item())

    def _device(self) -> Any:
        import torch.distributed as dist

        return "cuda" if dist.get_backend(self.group) == "nccl" else "cpu"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch
        import torch.distributed as dist

        embeds = kwargs.get("encoder_hidden_states")
        if self._cond_embeds is None:
            self._cond_embeds = embeds  # the pipeline's first call of a job is the conditional pass
        is_cond = embeds is self._cond_embeds
        if is_cond:
            self._step += 1
        if self._step >= self.cfg_steps:
            if self.rank == 1:
                raise PartnerLeft()
            return self.inner(*args, **kwargs)  # a step without CFG: rank 0 alone
        if is_cond:
            if self._stop_together():
                from .job_hooks import JobCancelled

                self.stopped = True
                raise JobCancelled()
            if self.rank == 0:
                self._cond = self.inner(*args, **kwargs)
                return self._cond
            hidden = kwargs["hidden_states"]
            width = self.transformer.proj_out.out_features
            self._cond = (torch.empty(*hidden.shape[:2], width, dtype=hidden.dtype, device=hidden.device),)
            return self._cond  # filled in place by the swap below
        # the unconditional pass of a CFG step: rank 1 computes it; the two predictions are swapped
        mine = self._cond[0] if self.rank == 0 else self.inner(*args, **kwargs)[0]
        mine = mine.contiguous()
        both = [torch.empty_like(mine) for _ in range(WORLD)]
        dist.all_gather(both, mine, group=self.group)
        self.exchanges += 1
        if self.rank == 1:
            self._cond[0].copy_(both[0])
        return (both[1],)

    def remove(self) -> None:
        attributes = vars(self.transformer)
        if attributes.get("forward") is not self:
            return
        if self.previous is None:
            del attributes["forward"]
        else:
            attributes["forward"] = self.previous


# ---- a server's rank 1: the partner process ---------------------------------------------------------------------


def init_group(rank: int, init_file: str, device_kind: str) -> None:
    """Join the two-rank group: NCCL between GPUs, gloo on the CPU."""
    import torch.distributed as dist

    dist.init_process_group("nccl" if device_kind == "cuda" else "gloo", init_method=f"file://{init_file}",
                            rank=rank, world_size=WORLD)


def send_job(job: CfgJob | None) -> None:
    """Rank 0: the next job for rank 1 (None: stop)."""
    import torch.distributed as dist

    box = [job]
    dist.broadcast_object_list(box, src=0)


def receive_job() -> CfgJob | None:
    import torch.distributed as dist

    box: list[Any] = [None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class Partner:
    """Rank 1 started from rank 0's engine: a spawned process on the second GPU (or the CPU), loading its model while
    rank 0 loads its own; `join` then forms the group.

    Args:
        settings: the engine's settings (the partner loads the same model with them).
        device_kind: "cuda" or "cpu", rank 0's.
        main: the partner process's function, main(settings, init_file, gpu, threads) (engine.py's
            `cfg_partner_main`: it loads an Engine, which this module cannot import).
    """

    def __init__(self, settings: Any, device_kind: str, main: Callable[..., None]):
        import torch

        self.device_kind = device_kind
        self.init_file = os.path.join(tempfile.mkdtemp(prefix="layerbridge-cfg-"), "group")
        gpu = threads = None
        if device_kind == "cuda":
            ids = visible_gpus()
            if len(ids) < WORLD:
                raise RuntimeError("--cfg-parallel needs two GPUs visible to the server (or to each replica)")
            gpu = ids[1]  # rank 0 runs on the first visible GPU, as the engine does without CFG parallel
        else:
            threads = torch.get_num_threads()  # the same float sums on both ranks: the same thread count
        self.process = mp.get_context("spawn").Process(
            target=main, args=(settings, self.init_file, gpu, threads), name="layerbridge-cfg-partner",
            daemon=True)
        self.process.start()

    def join(self) -> None:
        started = time.monotonic()
        init_group(0, self.init_file, self.device_kind)
        log.info("CFG parallel: partner process %d joined in %.1f s", self.process.pid, time.monotonic() - started)

    def stop(self) -> None:
        """Tell the partner to stop, leave the group, and wait for its process (killed after 10 s)."""
        import torch.distributed as dist

        try:
            if dist.is_initialized():
                send_job(None)
                dist.destroy_process_group()
        finally:
            self.process.join(timeout=10)
            if self.process.is_alive():
                self.process.kill()

    def kill(self) -> None:
        """Kill the partner at once and leave the group: after a job broke between the ranks, the partner waits inside
        a collective call that will not come, so it cannot be told to stop."""
        import torch.distributed as dist

        self.process.kill()
        if dist.is_initialized():
            dist.destroy_process_group()
