"""The `layerbridge` command: serve, decompose, split, restore, text, download, make-tiny-model, token, doctor, tray."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .. import __version__
from ..core import options
from ..core.settings import CLUSTER_AUTO, CLUSTER_LOCAL, DEFAULT_PORT, MEMORY_CHOICES, Settings
from .decompose import BATCH_SUFFIX, cmd_decompose
from .progress import Bar
from .text import add_text_command
from .split import add_parser as add_split_parser


def _settings_args(p: argparse.ArgumentParser) -> None:
    help_ = Settings.help()
    p.add_argument("--host", default="127.0.0.1", help=help_["host"])
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=help_["port"])
    p.add_argument("--model", default=Settings.model, help=help_["model"])
    _memory_arg(p)
    p.add_argument("--preset", default=Settings.preset, choices=list(options.PRESETS), help=help_["preset"])
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
    p.add_argument("--max-uploads-mb", type=int, default=Settings.max_uploads_mb, help=help_["max_uploads_mb"])
    p.add_argument("--max-connections", type=int, default=Settings.max_connections, help=help_["max_connections"])
    p.add_argument("--header-timeout", type=float, default=Settings.header_timeout_s, help=help_["header_timeout_s"])
    p.add_argument("--idle-timeout", type=float, default=Settings.idle_timeout_s, help=help_["idle_timeout_s"])
    p.add_argument("--allowed-origin", action="append", default=[], help=help_["allowed_origins"])
    p.add_argument("--allowed-host", action="append", default=[], help=help_["allowed_hosts"])
    p.add_argument("--preload", action="store_true", help=help_["preload"])
    p.add_argument("--port-file", default=None, help=help_["port_file"])
    p.add_argument("--cluster", default=None, type=_cluster_address, metavar="local|auto|ray://HEAD:10001",
                   help=help_["cluster"])
    p.add_argument("--replicas", type=int, default=Settings.replicas, help=help_["replicas"])
    p.add_argument("--cfg-parallel", action="store_true", help=help_["cfg_parallel"])


def _cluster_address(text: str) -> str:
    if text in (CLUSTER_LOCAL, CLUSTER_AUTO) or (text.startswith("ray://") and len(text) > len("ray://")):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not {CLUSTER_LOCAL}, {CLUSTER_AUTO} or ray://HEAD:PORT")


def _memory_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory", default="auto", choices=MEMORY_CHOICES, help=Settings.help()["memory"])


def _quantize_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quantize", default="auto", choices=["auto", "none", "fp8", "int8"], help=Settings.help()["quantize"])


def _settings(a: argparse.Namespace) -> Settings:
    return Settings(
        host=a.host, port=a.port, model=a.model, memory=a.memory, preset=a.preset, max_pixels=a.max_pixels,
        quantize=a.quantize, compile=a.compile, attention=a.attention, transformer_file=a.transformer_file,
        max_upload_mb=a.max_upload_mb, max_queue=a.max_queue, result_ttl_s=a.result_ttl, max_results=a.max_results,
        max_results_mb=a.max_results_mb, max_uploads_mb=a.max_uploads_mb, max_connections=a.max_connections,
        header_timeout_s=a.header_timeout, idle_timeout_s=a.idle_timeout,
        allowed_origins=a.allowed_origin, allowed_hosts=a.allowed_host, preload=a.preload, port_file=a.port_file,
        cluster=a.cluster, replicas=a.replicas, cfg_parallel=a.cfg_parallel,
    )


def _job_args(p: argparse.ArgumentParser) -> None:
    layers, resolution, steps, cfg = options.LAYERS, options.RESOLUTION, options.STEPS, options.CFG_SCALE
    default = options.PRESETS[options.DEFAULT_PRESET]
    naming = ", ".join(f"{name}: {'yes' if spec.names else 'no'}" for name, spec in options.PRESETS.items())
    p.add_argument("--layers", type=int, default=layers.default,
                   help=f"number of layers, {layers.min}-{layers.max} (default {layers.default})")
    p.add_argument("--resolution", type=int, default=resolution.default, choices=list(resolution.choices),
                   help="model resolution bucket")
    p.add_argument("--steps", type=int, default=steps.default,
                   help=f"denoising steps, {steps.min}-{steps.max} (default: the preset's; "
                        f"{options.DEFAULT_PRESET} = {default.steps})")
    p.add_argument("--cfg-scale", type=float, default=cfg.default,
                   help=f"true CFG scale, {cfg.min:g}-{cfg.max:g} (1 turns CFG off)")
    p.add_argument("--no-cfg-normalize", action="store_true", help="turn CFG normalisation off")
    p.add_argument("--prompt", default="", help="describe the whole image (empty: the model captions it)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    p.add_argument("--preset", default=options.DEFAULT_PRESET, choices=list(options.PRESETS),
                   help="quality preset: " + "; ".join(f"{name}: {spec.summary}" for name, spec in options.PRESETS.items()))
    p.add_argument("--no-restore", action="store_true", help="plain resampling instead of full-resolution restoration")
    p.add_argument("--name-layers", action=argparse.BooleanOptionalAction, default=None,
                   help=f"name each layer by what it shows (default: the preset's, {naming}; no on a server that "
                        "streams the model on a 16 GB card)")


def cmd_serve(a: argparse.Namespace) -> int:
    from ..server.serve import serve

    if a.replicas < 0 or (a.replicas and not a.cluster):
        print("error: --replicas goes with --cluster (and is 0 or more)", file=sys.stderr)
        return 2
    if a.cluster:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            print('error: --cluster needs Ray Serve: pip install -e ".[cluster]" (docs/team-server.md)', file=sys.stderr)
            return 2
    return serve(_settings(a))


def cmd_restore(a: argparse.Namespace) -> int:
    from ..imaging import export
    from ..imaging.finish import finish_layers
    from ..core.errors import LayerBridgeError
    from ..imaging.image import decode

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
    from ..model import download, transformer_file
    from ..core.errors import LayerBridgeError

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
    from ..model.loading import quiet_libraries
    from ..model.tiny_model import make_tiny_model

    quiet_libraries()
    path = make_tiny_model(a.dir, seed=a.seed)
    print(f"tiny random-weights pipeline written to {path}; use it with --model {path}", file=sys.stderr)
    return 0


def cmd_token(a: argparse.Namespace) -> int:
    from ..server.auth import load_or_create_token, rotate_token, token_path

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
    from ..launcher.tray import main

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
    d.add_argument("--format", default="psd", choices=sorted(BATCH_SUFFIX),
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
    d.add_argument("--split-elements", action="store_true",
                   help="each layer but the background that holds several separate elements becomes a group of them, "
                        "one layer each (PSD groups, OpenRaster stacks, layers.json parent/children; docs/elements.md)")
    d.set_defaults(func=cmd_decompose)

    add_split_parser(sub)

    r = sub.add_parser("restore", help="restore model layers to a source image's full resolution")
    r.add_argument("source")
    r.add_argument("layers", nargs="+", help="the model's layers, bottom to top")
    r.add_argument("--out", required=True, help="output folder (PNGs + layers.json)")
    r.add_argument("--no-restore", action="store_true", help="plain premultiplied resampling instead")
    r.set_defaults(func=cmd_restore)

    add_text_command(sub)

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
        from ..launcher.tray import main as tray_main

        return tray_main(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
