"""`layerbridge decompose`: one image or many, through the running server or with the model loaded here, written
without ever overwriting what the user did not name."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..core.settings import DEFAULT_PORT, Settings
from .output import out_refused, write_beside
from .progress import Bar, progress_line


def job_params(a: argparse.Namespace, name: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        "layers": a.layers, "resolution": a.resolution, "cfg_scale": a.cfg_scale, "cfg_normalize": not a.no_cfg_normalize,
        "prompt": a.prompt, "preset": a.preset, "restore": not a.no_restore, "name": name,
    }
    if a.steps is not None:
        params["steps"] = a.steps
    if a.seed is not None:
        params["seed"] = a.seed
    if a.name_layers is not None:
        params["name_layers"] = a.name_layers
    if a.split_elements:  # only when asked: a server older than the option keeps working
        params["split_elements"] = True
    return params


# What a folder given to `decompose` contributes: the files it holds with these suffixes (lower case).
IMAGE_SUFFIXES = frozenset(
    ".png .jpg .jpeg .webp .avif .heic .heif .tif .tiff .bmp .gif .psd .psb .ora .kra .jp2 .tga .qoi".split()
)


def _sources(args: list[str]) -> tuple[list[Path], bool]:
    """The images named: a folder stands for the images in it (not its subfolders), and a pattern such as *.png that
    names no file is expanded here, as Windows' shells leave that to the program. Also whether any was a folder."""
    import glob

    sources: list[Path] = []
    expanded = False
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            expanded = True
            sources += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                              and not p.name.startswith("."))
        elif not path.exists() and glob.has_magic(arg):
            sources += sorted(Path(p) for p in glob.glob(arg) if Path(p).is_file())
            expanded = True
        else:
            sources.append(path)
    return sources, expanded


def cmd_decompose(a: argparse.Namespace) -> int:
    sources, expanded = _sources(a.image)
    out = Path(a.out)
    if not sources:
        print(f"error: no images in {' '.join(a.image)}", file=sys.stderr)
        return 2
    if len(sources) > 1 or expanded:
        return _decompose_batch(a, sources, out)
    if out_refused(out, a.overwrite):
        return 2
    runner = _Runner(a)
    try:
        return runner.decompose(sources[0], out, os.path.lexists(out) and a.overwrite)
    except _NoServer as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


# What each file gets in the OUT folder of a batch, by --format.
BATCH_SUFFIX = {"psd": ".psd", "ora": ".ora", "png": ""}


def _decompose_batch(a: argparse.Namespace, sources: list[Path], out: Path) -> int:
    """Several images into the folder OUT, one file each (named after the image, in --format), with the model loaded
    once. An image that fails is reported and the others go on; existing files are skipped unless --overwrite."""
    if out.exists() and not out.is_dir():
        print(f"error: with several images, --out is a folder; {out} is a file", file=sys.stderr)
        return 2
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"error: cannot make the folder {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if not os.access(out, os.W_OK):
        print(f"error: cannot write into {out}", file=sys.stderr)
        return 2
    targets: list[Path] = []
    for source in sources:  # one name each, even for photo.png and photo.jpg
        target, n = out / f"{source.stem}{BATCH_SUFFIX[a.format]}", 1
        while target in targets:
            n += 1
            target = out / f"{source.stem} ({n}){BATCH_SUFFIX[a.format]}"
        targets.append(target)
    runner = _Runner(a)
    failed = skipped = 0
    for i, (source, target) in enumerate(zip(sources, targets), 1):
        print(f"[{i}/{len(sources)}] {source}", file=sys.stderr)
        if os.path.lexists(target) and not a.overwrite:
            print(f"skipped: {target} exists; pass --overwrite to replace it", file=sys.stderr)
            skipped += 1
            continue
        try:
            code = runner.decompose(source, target, os.path.lexists(target))
        except _NoServer as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if code == 130:
            return 130
        failed += code != 0
    done = len(sources) - failed - skipped
    print(f"{done} of {len(sources)} images decomposed into {out}"
          + (f"; {failed} failed" if failed else "") + (f"; {skipped} skipped" if skipped else ""), file=sys.stderr)
    return 1 if failed else 0


class _NoServer(Exception):
    """--server named a server that does not answer."""


class _Runner:
    """Runs decompositions one after another through the running server, or in this process with one model load."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.client: Any = None
        self.engine: Any = None
        self._looked = False

    def _find_server(self) -> None:
        if self._looked or self.a.in_process:
            return
        self._looked = True
        from ..server.auth import load_or_create_token, token_path
        from .client import Client, server_alive

        url = self.a.server or f"http://127.0.0.1:{DEFAULT_PORT}"
        alive = server_alive(url)
        if self.a.server and not alive:
            raise _NoServer(f"no LayerBridge server answers at {url}")
        if alive and (self.a.token or token_path().is_file()):
            print(f"using the LayerBridge server at {url}", file=sys.stderr)
            self.client = Client(url, self.a.token or load_or_create_token())

    def decompose(self, source: Path, out: Path, replace: bool) -> int:
        """One image to OUT: 0 when written, 1 when it failed (said on stderr), 2 when the image cannot be read,
        130 on Ctrl+C."""
        from ..core.errors import LayerBridgeError
        from ..imaging.image import decode

        try:
            image = decode(source.read_bytes(), 10**9)
        except (OSError, LayerBridgeError) as exc:
            print(f"error: cannot read {source}: {getattr(exc, 'message', exc)}", file=sys.stderr)
            return 2
        params = job_params(self.a, source.stem)
        bar = Bar()
        try:
            self._find_server()
            if self.client is not None:
                remote = self.client.decompose(image, params, lambda s: bar.show(*progress_line(s)))
                layers, width, height, info = remote.layers, remote.width, remote.height, remote.info
            else:
                layers, width, height, info = self._in_process(image, params, bar)
        except LayerBridgeError as exc:
            bar.done()
            unauthorized = exc.code.value == "unauthorized"
            hint = "; `layerbridge token` on the server's machine prints its token" if unauthorized else ""
            print(f"error ({exc.code.value}): {exc.message}{hint}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            bar.done()
            print("cancelled", file=sys.stderr)
            return 130
        bar.done()
        return write_result(out, replace, layers, width, height, info)

    def _in_process(self, image: Any, params: dict, bar: Bar) -> tuple:
        from ..model.engine import Engine
        from ..core.job import JobParams
        from ..model.loading import quiet_libraries

        if self.engine is None:
            quiet_libraries()
            a = self.a
            self.engine = Engine(Settings(model=a.model, memory=a.memory, quantize=a.quantize,
                                          transformer_file=a.transformer_file))

        def on_progress(p: Any) -> None:
            bar.show(p.step / p.total if p.total else 0.0, p.message + (f" · {p.eta_s:.0f} s left" if p.eta_s else ""))

        r = self.engine.run(image, JobParams.parse(params), on_progress, lambda: False)
        return r.layers, r.canvas_width, r.canvas_height, {"seed": r.seed, "caption": r.caption}


def write_result(out: Path, replace: bool, layers: list, width: int, height: int, info: dict) -> int:
    """Writes the layers at OUT as `write_beside` does (nothing the user has is lost); 0 when written there, 1 when
    writing failed or the layers went to `OUT (n)` because something appeared at OUT meanwhile (said on stderr)."""
    from ..core.errors import LayerBridgeError
    from ..imaging import export

    try:
        target, kind = write_beside(out, replace, lambda tmp: export.write(
            tmp, layers, width, height, {"seed": info.get("seed"), "caption": info.get("caption")}))
    except (OSError, LayerBridgeError) as exc:  # the writers leave nothing at tmp when they fail
        code = f" ({exc.code.value})" if isinstance(exc, LayerBridgeError) else ""
        print(f"error{code}: cannot write {out}: {getattr(exc, 'message', None) or getattr(exc, 'strerror', None) or exc}",
              file=sys.stderr)
        return 1
    pixel_layers = [layer for layer in layers if not layer.group]
    groups = len(layers) - len(pixel_layers)
    in_groups = f" in {groups} group{'s' if groups > 1 else ''}" if groups else ""
    names = ", ".join(layer.name for layer in layers if layer.parent is None)
    done = f"{len(pixel_layers)} layers{in_groups} ({width}×{height}, seed {info.get('seed')}: {names})"
    if target != out:
        print(f"error: {out} appeared while the job ran and was left as it is; wrote {done} to {target} [{kind}]",
              file=sys.stderr)
        return 1
    print(f"wrote {done} to {out} [{kind}]", file=sys.stderr)
    return 0
