#!/usr/bin/env python3
"""What a team server's result costs to bring back from a replica (docs/team-server.md): a Serve streaming response
carrying a JobResult of full-size layers (restored on the replica) against one of 640-px model layers (restored on the
front), on a local Ray instance. Prints seconds; needs the `cluster` extra.

    python scripts/bench_cluster_transfer.py [--megapixels 24] [--layers 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402

from backend.core.job import JobResult  # noqa: E402
from backend.core.layer import PlacedLayer  # noqa: E402


@serve.deployment(max_ongoing_requests=1, ray_actor_options={"num_cpus": 1})
class Sender:
    async def run(self, width: int, height: int, layers: int):
        pixels = [np.full((height, width, 4), i, np.uint8) for i in range(layers)]
        yield ("started", {})
        yield ("result", JobResult(width, height, [PlacedLayer(f"Layer {i}", 0, 0, p) for i, p in enumerate(pixels)],
                                   1, "", True, {}))


async def fetch(handle, width: int, height: int, layers: int) -> float:
    started = time.monotonic()
    async for event in handle.options(stream=True).run.remote(width, height, layers):
        if event[0] == "result":
            assert sum(layer.pixels.nbytes for layer in event[1].layers) == width * height * 4 * layers
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    a = parser.parse_args()
    height = int((a.megapixels * 1e6 / 1.5) ** 0.5)
    width = int(height * 1.5)
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    serve.start(proxy_location="Disabled")
    handle = serve.run(Sender.bind(), name="bench", route_prefix=None)
    for label, (w, h) in (("full size (restored on the replica)", (width, height)), ("640 px (model layers)", (640, 640))):
        times = [asyncio.run(fetch(handle, w, h, a.layers)) for _ in range(a.repeat)]
        mb = w * h * 4 * a.layers / 1e6
        print(f"{label}: {a.layers} layers of {w}×{h} ({mb:.0f} MB): best {min(times):.2f} s, "
              f"median {sorted(times)[len(times) // 2]:.2f} s over {a.repeat}")
    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
