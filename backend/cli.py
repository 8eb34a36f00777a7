"""The `layerbridge` command: serve, decompose, restore, download, make-tiny-model, token, doctor, tray."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__
from .settings import DEFAULT_PORT, MEMORY_CHOICES, Settings


def _settings_args(p: argparse.ArgumentParser) -> None:
    help_ = Settings.help()
    p.add_argument("--host", default="127.0.0.1", help=help_["host"])
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=help_["port"])
    p.add_argument("--model", default=Settings.model, help=help_["model"])
    _memory_arg(p)
    p.add_argument("--preset", default="best", choices=["best", "balanced", "fast"], help=help_["preset"])
    _quantize_arg(p)
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"], help=help_["compile"])
    p.add_argument("--attention", default="auto", help=help_["attention"])
    p.add_argument("--transformer-file", default=None, help=help_["transformer_file"])
    p.add_argument("--max-pixels", type=int, default=Settings.max_pixels, help=help_["max_pixels"])
    p.add_argument("--max-upload-mb", type=int, default=Settings.max_upload_mb, help=help_["max_upload_mb"])
    p.add_argument("--max-queue", type=int, default=Settings.max_queue, help=help_["max_queue"])
    p.add_argument("--result-ttl", type=int, default=Settings.result_ttl_s, help=help_["result_ttl_s"])
    p.add_argument("--max-results", type=int, default=Settings.max_results, help=help_["max_results"])
    p.add_argument("--max-results-mb", type=int, default=Settings.max_results_mb, help=help_["max_results_mb"])
    p.add_argument("--allowed-origin", action="append", default=[], help=help_["allowed_origins"])
    p.add_argument("--allowed-host", action="append", default=[], help=help_["allowed_hosts"])
    p.add_argument("--preload", action="store_true", help=help_["preload"])
    p.add_argument("--port-file", default=None, help=help_["port_file"])


def _memory_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory", default="auto", choices=MEMORY_CHOICES, help=Settings.help()["memory"])


def _quantize_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quantize", default="auto", choices=["auto", "none", "fp8", "int8"], help=Settings.help()["quantize"])


def _settings(a: argparse.Namespace) -> Settings:
    return Settings(
        host=a.host, port=a.port, model=a.model, memory=a.memory, preset=a.preset, max_pixels=a.max_pixels,
        quantize=a.quantize, compile=a.compile, attention=a.attention, transformer_file=a.transformer_file,
        max_upload_mb=a.max_upload_mb, max_queue=a.max_queue, result_ttl_s=a.result_ttl, max_results=a.max_results,
        max_results_mb=a.max_results_mb,
        allowed_origins=a.allowed_origin, allowed_hosts=a.allowed_host, preload=a.preload, port_file=a.port_file,
    )


def _job_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layers", type=int, default=4, help="number of layers, 2-10 (default 4)")
    p.add_argument("--resolution", type=int, default=640, choices=[640, 1024], help="model resolution bucket")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the preset's; best = 50)")
    p.add_argument("--cfg-scale", type=float, default=4.0, help="true CFG scale (1 turns CFG off)")
    p.add_argument("--no-cfg-normalize", action="store_true", help="turn CFG normalisation off")
    p.add_argument("--prompt", default="", help="describe the whole image (empty: the model captions it)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    p.add_argument("--preset", default="best", choices=["best", "balanced", "fast"])
    p.add_argument("--no-restore", action="store_true", help="plain resampling instead of full-resolution restoration")
    p.add_argument("--name-layers", action=argparse.BooleanOptionalAction, default=None,
                   help="name each layer by what it shows (default: the preset's; best and balanced do, fast does not, "
                        "nor does a server that streams the model on a 16 GB card)")


def _job_params(a: argparse.Namespace, name: str) -> dict[str, Any]:
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
    return params


class Bar:
    """A one-line terminal progress bar."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = ""

    def show(self, fraction: float, text: str) -> None:
        width = 30
        filled = int(max(0.0, min(1.0, fraction)) * width)
        line = f"[{'#' * filled}{'.' * (width - filled)}] {text}"
        if self.tty:
            sys.stderr.write("\r" + line.ljust(78)[:120])
            sys.stderr.flush()
        elif text != self.last:
            sys.stderr.write(line + "\n")
        self.last = text

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def _progress_line(state: dict) -> tuple[float, str]:
    total = state.get("total") or 0
    step = state.get("step") or 0
    eta = state.get("eta_s")
    text = state.get("message") or state.get("stage", "")
    if eta is not None:
        text += f" · {eta:.0f} s left"
    return (step / total if total else 0.0), text


def cmd_serve(a: argparse.Namespace) -> int:
    from .server import serve

    return serve(_settings(a))


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
    if out.exists() and not a.overwrite:
        print(f"error: {out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    folder = out.absolute().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        print(f"error: cannot write {out}: {folder} is not a folder this user can write to", file=sys.stderr)
        return 2
    runner = _Runner(a)
    try:
        return runner.decompose(sources[0], out, out.exists() and a.overwrite)
    except _NoServer as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


# What each file gets in the OUT folder of a batch, by --format.
_BATCH_SUFFIX = {"psd": ".psd", "ora": ".ora", "png": ""}


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
        target, n = out / f"{source.stem}{_BATCH_SUFFIX[a.format]}", 1
        while target in targets:
            n += 1
            target = out / f"{source.stem} ({n}){_BATCH_SUFFIX[a.format]}"
        targets.append(target)
    runner = _Runner(a)
    failed = skipped = 0
    for i, (source, target) in enumerate(zip(sources, targets), 1):
        print(f"[{i}/{len(sources)}] {source}", file=sys.stderr)
        if target.exists() and not a.overwrite:
            print(f"skipped: {target} exists; pass --overwrite to replace it", file=sys.stderr)
            skipped += 1
            continue
        try:
            code = runner.decompose(source, target, target.exists())
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
        from .auth import load_or_create_token, token_path
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
        from .errors import LayerBridgeError
        from .image import decode

        try:
            image = decode(source.read_bytes(), 10**9)
        except (OSError, LayerBridgeError) as exc:
            print(f"error: cannot read {source}: {getattr(exc, 'message', exc)}", file=sys.stderr)
            return 2
        params = _job_params(self.a, source.stem)
        bar = Bar()
        try:
            self._find_server()
            if self.client is not None:
                remote = self.client.decompose(image, params, lambda s: bar.show(*_progress_line(s)))
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
        return _write_result(out, replace, layers, width, height, info)

    def _in_process(self, image: Any, params: dict, bar: Bar) -> tuple:
        from .engine import Engine
        from .job import JobParams
        from .server import quiet_libraries

        if self.engine is None:
            quiet_libraries()
            a = self.a
            self.engine = Engine(Settings(model=a.model, memory=a.memory, quantize=a.quantize,
                                          transformer_file=a.transformer_file))

        def on_progress(p: Any) -> None:
            bar.show(p.step / p.total if p.total else 0.0, p.message + (f" · {p.eta_s:.0f} s left" if p.eta_s else ""))

        r = self.engine.run(image, JobParams.parse(params), on_progress, lambda: False)
        return r.layers, r.canvas_width, r.canvas_height, {"seed": r.seed, "caption": r.caption}


def _write_result(out: Path, replace: bool, layers: list, width: int, height: int, info: dict) -> int:
    """Writes beside OUT, then moves it into place; only a path that was there at the start and --overwrite named is
    replaced. Whatever appeared at OUT while the job ran is left as it is, and the layers keep a name of their own."""
    import shutil

    from . import export
    from .errors import LayerBridgeError

    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")  # same suffix: it picks the format
    # what a run that was killed while writing left under this name of ours: not to be merged into
    shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    try:
        kind = export.write(tmp, layers, width, height, {"seed": info.get("seed"), "caption": info.get("caption")})
    except (OSError, LayerBridgeError) as exc:  # the writers leave nothing at tmp when they fail
        code = f" ({exc.code.value})" if isinstance(exc, LayerBridgeError) else ""
        print(f"error{code}: cannot write {out}: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    target, n = out, 0
    if out.exists() and replace:
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    while target.exists():
        n += 1
        target = out.with_name(f"{out.stem} ({n}){out.suffix}")
    os.replace(tmp, target)
    done = f"{len(layers)} layers ({width}×{height}, seed {info.get('seed')}: {', '.join(layer.name for layer in layers)})"
    if target != out:
        print(f"error: {out} appeared while the job ran and was left as it is; wrote {done} to {target} [{kind}]",
              file=sys.stderr)
        return 1
    print(f"wrote {done} to {out} [{kind}]", file=sys.stderr)
    return 0


def cmd_restore(a: argparse.Namespace) -> int:
    from . import export
    from .engine import finish_layers
    from .errors import LayerBridgeError
    from .image import decode

    try:
        source = decode(Path(a.source).read_bytes(), 10**9)
        model_layers = [decode(Path(p).read_bytes(), 10**9) for p in a.layers]
    except (OSError, LayerBridgeError) as exc:
        print(f"error: cannot read the images: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    sizes = {layer.shape[:2] for layer in model_layers}
    if len(sizes) != 1:
        print("error: every layer must have the same size", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        placed = finish_layers(source, model_layers, not a.no_restore, [Path(p).stem for p in a.layers])
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    height, width = source.shape[:2]
    export.write_folder(Path(a.out), placed, width, height)
    print(f"restored {len(placed)} layers to {width}×{height} in {time.monotonic() - started:.2f} s → {a.out}", file=sys.stderr)
    return 0


def cmd_download(a: argparse.Namespace) -> int:
    from . import download, transformer_file
    from .errors import LayerBridgeError

    bar = Bar()

    def show(done: int, total: int) -> None:
        bar.show(done / total if total else 0.0, f"{done / 1e9:.1f} / {total / 1e9:.1f} GB")

    try:
        path = download.fetch(a.model, show, skip_transformer=bool(a.transformer_file))
        bar.done()
        print(f"model ready in {path}", file=sys.stderr)
        if a.transformer_file:
            path = transformer_file.resolve(a.transformer_file, show)
            bar.done()
            print(f"transformer file ready: {path}", file=sys.stderr)
    except LayerBridgeError as exc:
        bar.done()
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 0


def cmd_make_tiny_model(a: argparse.Namespace) -> int:
    from .server import quiet_libraries
    from .tiny_model import make_tiny_model

    quiet_libraries()
    path = make_tiny_model(a.dir, seed=a.seed)
    print(f"tiny random-weights pipeline written to {path}; use it with --model {path}", file=sys.stderr)
    return 0


def cmd_token(a: argparse.Namespace) -> int:
    from .auth import load_or_create_token, rotate_token, token_path

    token = rotate_token() if a.rotate else load_or_create_token()
    if a.rotate:
        print("a new token was made; restart the server and update remote clients", file=sys.stderr)
    print(f"token file: {token_path()}", file=sys.stderr)
    print(token)
    return 0


def cmd_doctor(a: argparse.Namespace) -> int:
    from .doctor import report

    data = report(Settings(model=a.model, memory=a.memory, quantize=a.quantize, port=a.port,
                           transformer_file=a.transformer_file))
    if a.json:
        print(json.dumps(data, indent=2))
    else:
        width = max(map(len, data))
        for key, value in data.items():
            print(f"{key:>{width}}: {value}")
    return 0


def cmd_tray(a: argparse.Namespace) -> int:
    from .tray import main

    return main(a.rest)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="layerbridge", description="Decompose flat images into editable RGBA layers.")
    p.add_argument("--version", action="version", version=f"layerbridge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the local server")
    _settings_args(s)
    s.set_defaults(func=cmd_serve)

    d = sub.add_parser("decompose", help="decompose an image into a PSD, ORA or folder of PNGs")
    d.add_argument("image", nargs="+", help="the image; several (or a folder of them) go into the folder OUT, one file each")
    d.add_argument("--out", required=True, help="OUT.psd, OUT.ora, or a folder (of PNGs; with several images, of files)")
    d.add_argument("--format", default="psd", choices=sorted(_BATCH_SUFFIX),
                   help="with several images: what each gets in OUT (png: a folder of PNGs); default psd")
    d.add_argument("--model", default=Settings.model)
    _memory_arg(d)
    _quantize_arg(d)
    d.add_argument("--transformer-file", default=None, help=Settings.help()["transformer_file"] + " (when loading here)")
    d.add_argument("--server", default=None, help="server URL (default: the local server, when it is running)")
    d.add_argument("--token", default=None, help="access token for --server (default: read from the config folder)")
    d.add_argument("--in-process", action="store_true", help="never use a running server; load the model here")
    d.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    _job_args(d)
    d.set_defaults(func=cmd_decompose)

    r = sub.add_parser("restore", help="restore model layers to a source image's full resolution")
    r.add_argument("source")
    r.add_argument("layers", nargs="+", help="the model's layers, bottom to top")
    r.add_argument("--out", required=True, help="output folder (PNGs + layers.json)")
    r.add_argument("--no-restore", action="store_true", help="plain premultiplied resampling instead")
    r.set_defaults(func=cmd_restore)

    dl = sub.add_parser("download", help="fetch the model weights ahead of the first job (resumable)")
    dl.add_argument("--model", default=Settings.model)
    dl.add_argument("--transformer-file", default=None,
                    help="also fetch this single-file transformer (a Hugging Face file address), and not the model's own")
    dl.set_defaults(func=cmd_download)

    t = sub.add_parser("make-tiny-model", help="write a tiny random-weights pipeline for trying every path without a GPU")
    t.add_argument("dir")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_make_tiny_model)

    tok = sub.add_parser("token", help="show (or --rotate) the access token")
    tok.add_argument("--rotate", action="store_true")
    tok.set_defaults(func=cmd_token)

    doc = sub.add_parser("doctor", help="GPU, VRAM, torch and CUDA, memory mode, model cache, port")
    doc.add_argument("--model", default=Settings.model)
    _memory_arg(doc)
    _quantize_arg(doc)
    doc.add_argument("--transformer-file", default=None, help=Settings.help()["transformer_file"])
    doc.add_argument("--port", type=int, default=DEFAULT_PORT)
    doc.add_argument("--json", action="store_true")
    doc.set_defaults(func=cmd_doctor)

    tr = sub.add_parser("tray", help="tray launcher: start, watch and stop the server")
    tr.add_argument("rest", nargs=argparse.REMAINDER)
    tr.set_defaults(func=cmd_tray)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["tray"]:  # the launcher parses its own options (they are forwarded to the server)
        from .tray import main as tray_main

        return tray_main(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
