"""Docker settings: defaults, validation, persistence, and the local server's token."""

import json
import os
import sys
from typing import Callable, Dict, Optional
from urllib.parse import urlsplit

from . import protocol

DEFAULT_URL = "http://127.0.0.1:7860"
GROUP = "layerbridge"

DEFAULTS: Dict[str, object] = {
    "url": DEFAULT_URL,
    "token": "",            # only for a remote server; a local one's token is read from its config file
    "layers": 4,
    "resolution": 640,
    "steps": 0,             # 0: auto, the preset's count
    "prompt": "",
    "seed": -1,             # -1: random
    "cfg_scale": 4.0,
    "preset": "best",
    "caption_language": "en",
    "restore": True,
    "text_layers": True,        # text read in the layers comes back as editable text (docs/krita.md)
    "split_elements": True,     # each layer's separate elements come back as a group of layers
    "advanced_open": False,
    "version": 2,           # 2: steps 0 means auto (version 1 stored its default, 50)
}



def _clamp(value: object, low: float, high: float, default: object, kind: type) -> object:
    try:
        v = kind(value)
    except (TypeError, ValueError):
        return default
    return max(low, min(high, v))


def normalize(values: Dict[str, object], options: Optional[Dict[str, object]] = None) -> Dict[str, object]:
    """Defaults filled in, every value of the right type and in the range of `options` (protocol.job_options:
    what the server announces; without them, what a server too old to announce them takes)."""
    opts = options or protocol.job_options(None)
    out = dict(DEFAULTS)
    for key, value in values.items():
        if key in DEFAULTS and value is not None:
            out[key] = value
    out["url"] = str(out["url"]).strip().rstrip("/") or DEFAULT_URL
    out["token"] = str(out["token"]).strip()
    layers = opts["layers"]
    out["layers"] = _clamp(out["layers"], layers["min"], layers["max"], layers["default"], int)
    resolution = opts["resolution"]
    res = _clamp(out["resolution"], 0, 100000, resolution["default"], int)
    out["resolution"] = res if res in resolution["choices"] else resolution["default"]
    steps = opts["steps"]
    n = _clamp(out["steps"], 0, steps["max"], DEFAULTS["steps"], int)
    out["steps"] = n if n >= max(2, steps["min"]) else 0            # 0: auto, the preset's count
    out["prompt"] = str(out["prompt"])[:2000]
    out["seed"] = _clamp(out["seed"], -1, 2 ** 32 - 1, -1, int)
    cfg = opts["cfg_scale"]
    out["cfg_scale"] = _clamp(out["cfg_scale"], cfg["min"], cfg["max"], cfg["default"], float)
    names = [p["name"] for p in opts["presets"]]
    out["preset"] = out["preset"] if out["preset"] in names else opts["preset"]
    languages = opts["caption_language"]
    out["caption_language"] = (out["caption_language"] if out["caption_language"] in languages["choices"]
                               else languages["default"])
    for key in ("restore", "text_layers", "split_elements", "advanced_open"):
        v = out[key]
        out[key] = v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")
    out["version"] = DEFAULTS["version"]
    return out


def job_params(values: Dict[str, object], name: str) -> Dict[str, object]:
    """The job parameters (docs/protocol.md §3) for settings already normalised (normalize: once, where they are
    read from the docker or the settings store)."""
    s = values
    params: Dict[str, object] = {
        "layers": s["layers"],
        "resolution": s["resolution"],
        "steps": s["steps"] or None,       # None: the preset's count
        "cfg_scale": s["cfg_scale"],
        "prompt": s["prompt"],
        "caption_language": s["caption_language"],
        "seed": None if s["seed"] < 0 else s["seed"],
        "preset": s["preset"],
        "restore": s["restore"],
        "text_layers": s["text_layers"],
        "split_elements": s["split_elements"],
        "name": name,
    }
    return params


Reader = Callable[[str, str], str]
Writer = Callable[[str, str], None]


def load(read: Reader) -> Dict[str, object]:
    """Settings from a string store (Krita's kritarc); everything is kept as one JSON value."""
    raw = read(GROUP, "settings") or ""
    try:
        values = json.loads(raw) if raw else {}
    except ValueError:
        values = {}
    values = values if isinstance(values, dict) else {}
    if "version" not in values and values.get("steps") == 50:
        values["steps"] = 0         # the old default, kept by every save: auto now, so the preset decides
    return normalize(values)


def save(write: Writer, values: Dict[str, object]) -> None:
    write(GROUP, "settings", json.dumps(normalize(values), sort_keys=True))


def config_dir(env: Optional[Dict[str, str]] = None, platform: Optional[str] = None) -> str:
    """The server's config dir, as the server computes it (platformdirs user_config_dir)."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if env.get("LAYERBRIDGE_CONFIG_DIR"):
        return env["LAYERBRIDGE_CONFIG_DIR"]
    home = env.get("HOME") or env.get("USERPROFILE") or os.path.expanduser("~")
    if platform.startswith("win"):
        base = env.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
        return os.path.join(base, "layerbridge")
    if platform == "darwin":
        return os.path.join(home, "Library", "Application Support", "layerbridge")
    base = env.get("XDG_CONFIG_HOME", "").strip() or os.path.join(home, ".config")
    return os.path.join(base, "layerbridge")


def is_local(url: str) -> bool:
    host = (urlsplit(url if "://" in url else "http://" + url).hostname or "").lower()
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def local_token(env: Optional[Dict[str, str]] = None, platform: Optional[str] = None) -> str:
    """The local server's token, or "" when its file does not exist (yet)."""
    path = os.path.join(config_dir(env, platform), "token")
    try:
        with open(path, "r", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def effective_token(values: Dict[str, object], env: Optional[Dict[str, str]] = None) -> str:
    """A pasted token wins; otherwise a local server's own token file."""
    token = str(values.get("token") or "").strip()
    if token:
        return token
    if is_local(str(values.get("url") or DEFAULT_URL)):
        return local_token(env)
    return ""
