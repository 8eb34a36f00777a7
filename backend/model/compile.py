"""Regional compilation of the transformer's repeated blocks (torch.compile), with its cache on disk."""

from __future__ import annotations

from typing import Any


def has_triton() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def enable_compile(transformer: Any) -> None:
    """Regional compilation: each repeated transformer block's forward is compiled once, cached on disk across starts.

    The blocks' `forward` is compiled, not their whole call (what `compile_repeated_blocks` does): step caches such as
    the first-block cache wrap each block's forward in a hook object of its own; compiled inside the call, every hook
    instance is a new guard, so torch recompiles per block until its recompile limit and then runs every block eagerly.
    Compiled below the hooks, all blocks share one graph with or without a cache.
    """
    import functools

    import torch

    use_compile_cache()
    torch._inductor.config.fx_graph_cache = True
    compiled = torch.compile(_call)
    for block in repeated_blocks(transformer):  # between jobs: no step-cache hook is on the blocks
        block.forward = functools.partial(compiled, type(block).forward, block)


def use_compile_cache() -> None:
    """torch's compile cache (inductor's graphs and kernels) in the user cache folder: each machine compiles once, not
    after every reboot that empties the temporary folder, torch's default. A folder chosen with
    TORCHINDUCTOR_CACHE_DIR stays."""
    import os

    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    from torch._inductor.utils import clear_caches

    from ..core.settings import cache_dir

    # torch writes its default into the variable the first time anything asks (importing diffusers does), so the
    # default there is not a user's choice
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen is None or os.path.abspath(chosen) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir() / "inductor")
        clear_caches()  # lookups torch memoised under the old folder


def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    return function(*args, **kwargs)


def disable_compile(transformer: Any) -> None:
    """Back to eager blocks (benchmarks compare both on one loaded model)."""
    for block in repeated_blocks(transformer):
        vars(block).pop("forward", None)


def repeated_blocks(transformer: Any) -> list[Any]:
    names = set(getattr(transformer, "_repeated_blocks", None) or ())
    return [m for m in transformer.modules() if type(m).__name__ in names]
