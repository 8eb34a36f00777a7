"""Protocol v1 over HTTP, without Qt: request bodies, event parsing, and words for people."""

import json
import os
from typing import Dict, List, Optional, Tuple

PROTOCOL = 1
CLIENT = "krita-layerbridge/0.1.0"
TERMINAL_STATES = ("done", "failed", "cancelled")


def multipart(params: Dict[str, object], rgba: bytes, boundary: Optional[str] = None) -> Tuple[bytes, str]:
    """The body of `POST /v1/jobs` with a raw image and its content type.
    `params` must hold `width` and `height` (and `pixel_format`, unless the image is rgba8)."""
    boundary = boundary or "lb" + os.urandom(12).hex()
    b = boundary.encode("ascii")
    head = (
        b"--" + b + b"\r\n"
        b'Content-Disposition: form-data; name="params"\r\n'
        b"Content-Type: application/json\r\n\r\n"
        + json.dumps(params).encode("utf-8") + b"\r\n"
        b"--" + b + b"\r\n"
        b'Content-Disposition: form-data; name="image"; filename="image.raw"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    tail = b"\r\n--" + b + b"--\r\n"
    return b"".join((head, rgba, tail)), "multipart/form-data; boundary=" + boundary


class LineBuffer:
    """Splits an NDJSON stream arriving in arbitrary chunks into JSON objects."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> List[dict]:
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        out = []
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line.decode("utf-8"))
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("type") != "keepalive":
                out.append(obj)
        return out


STAGES = {
    "uploading": "Uploading",
    "queued": "Waiting in the queue",
    "loading_model": "Loading the model",
    "captioning": "Describing the image",
    "encoding": "Preparing",
    "denoising": "Separating layers",
    "decoding": "Decoding layers",
    "finishing": "Finishing",
    "done": "Done",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "reconnecting": "The server stopped answering",
}


def format_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return ""
    s = max(0, int(round(seconds)))
    if s < 60:
        return "%d s" % s
    if s < 3600:
        return "%d min %02d s" % (s // 60, s % 60)
    return "%d h %02d min" % (s // 3600, (s % 3600) // 60)


def describe_progress(state: dict) -> str:
    """One line for the progress bar: stage, step count, time left."""
    stage = str(state.get("stage") or state.get("state") or "")
    text = STAGES.get(stage, stage.replace("_", " ").capitalize() or "Working")
    if stage == "finishing" and state.get("message"):
        text = str(state["message"])        # the server's words: naming the layers, restoring full resolution
    if stage == "uploading" and state.get("bytes"):
        text += " %d%%" % (100 * int(state.get("sent") or 0) // int(state["bytes"]))
    if stage == "reconnecting":
        return "%s %s ago. Trying to reach it again…" % (text, format_duration(state.get("lost_s") or 0))
    if stage == "queued" and state.get("position"):
        text += " (position %d)" % int(state["position"])
    total = state.get("total") or 0
    if stage == "denoising" and total:
        text += " %d/%d" % (int(state.get("step") or 0), int(total))
    eta = state.get("eta_s")
    if eta is not None and state.get("state") not in TERMINAL_STATES:
        text += " — about %s left" % format_duration(eta)
    return text


def progress_fraction(state: dict) -> Optional[float]:
    """0..1 for a determinate bar, None when the length is unknown."""
    total = state.get("total") or 0
    if state.get("state") == "done":
        return 1.0
    if state.get("stage") == "denoising" and total:
        return min(1.0, float(state.get("step") or 0) / float(total))
    if state.get("stage") == "uploading" and state.get("bytes"):
        return min(1.0, float(state.get("sent") or 0) / float(state["bytes"]))
    if state.get("stage") in ("decoding", "finishing"):
        return 1.0
    return None


def format_bytes(n: Optional[float]) -> str:
    if not n:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return ("%.0f %s" if unit in ("B", "KB") else "%.1f %s") % (n, unit)
        n /= 1000.0
    return "?"


def describe_status(status: dict) -> Tuple[str, str]:
    """(short state, sentence) for the connection line: ready / loading / downloading / busy / failed."""
    model = status.get("model") or {}
    state = model.get("state")
    queue = status.get("queue") or {}
    if state == "downloading":
        done, total = model.get("bytes_done"), model.get("bytes_total")
        pct = " (%d%%)" % int(100 * done / total) if done and total else ""
        return "downloading", "Downloading the model: %s of %s%s" % (format_bytes(done), format_bytes(total), pct)
    if state == "loading":
        return "loading", "Loading the model…"
    if state == "failed":
        return "failed", "The model could not be loaded: %s" % (model.get("error") or "unknown reason")
    if state == "not_loaded":
        return "ready", "Connected. The model loads on the first decomposition."
    waiting = int(queue.get("length") or 0)
    if waiting:
        return "busy", "Busy: %d job%s waiting" % (waiting, "" if waiting == 1 else "s")
    if queue.get("running"):
        return "busy", "Busy: running a job"
    return "ready", "Ready"


MESSAGES = {
    "unreachable": ("The LayerBridge server is not running.",
                    "Start it (“layerbridge serve”, or the tray launcher), check the address, then press Retry."),
    "timeout": ("The LayerBridge server does not answer.",
                "It may be starting or overloaded. Wait a moment and press Retry."),
    "unauthorized": ("The server refused the token.",
                     "For a server on this computer, leave the token empty. For another computer, paste the token "
                     "that “layerbridge token” prints there."),
    "forbidden_host": ("The server refused this address.",
                       "Start the server with --allowed-host for this address, or use 127.0.0.1."),
    "forbidden_origin": ("The server refused the request.", "The server's allowed origins block this client."),
    "protocol_mismatch": ("This plugin and the server are different versions.", ""),
    "out_of_memory": ("The graphics card ran out of memory.",
                      "Try resolution 640, fewer layers, or a lower-memory mode on the server."),
    "image_too_large": ("The image is too large for the server.", ""),  # its message: the size, and what to do
    "payload_too_large": ("The image is too large to upload.",
                          "Select a smaller area, or scale the image down, and try again."),
    "queue_full": ("The server is busy with too many jobs.", "Wait for some to finish and try again."),
    "model_unavailable": ("The model is not available.", ""),
    "unsupported_image": ("The server cannot read this kind of image.", ""),
    "invalid_image": ("The server refused the image.", ""),  # the advice is its message: what is wrong with it
    "invalid_params": ("A setting is out of range.", ""),
    "job_failed": ("The decomposition failed.", ""),
    "internal": ("The server hit an internal problem.", "Its log has the details. Try again."),
    "cancelled": ("Cancelled.", ""),
    "server_stopped": ("The job was lost when the LayerBridge server stopped or restarted.",
                       "Start it again if it is not running (“layerbridge serve”, or the tray launcher), "
                       "then decompose again."),
    "not_found": ("The server no longer has this job.",
                  "Results are kept for an hour; please decompose again."),
    "bad_response": ("The server's answer was not understood.", "Is the address a LayerBridge server?"),
    "unsupported_document": ("This document's colour format is not supported.", ""),
    "document": ("Cannot decompose.", ""),
}


def friendly(code: str, message: str = "") -> Tuple[str, str]:
    """(headline, advice) for an error code; the server's own message is kept for the details."""
    title, advice = MESSAGES.get(code, ("Something went wrong (%s)." % code, ""))
    if not advice and message:
        advice = message
    return title, advice


def error_from_body(status: int, body: bytes) -> Tuple[str, str]:
    """(code, message) from an HTTP error answer, whatever its shape."""
    try:
        obj = json.loads(body.decode("utf-8"))
        if isinstance(obj, dict) and obj.get("code"):
            return str(obj["code"]), str(obj.get("message") or "")
    except (ValueError, UnicodeDecodeError):
        pass
    by_status = {401: "unauthorized", 403: "forbidden_origin", 404: "not_found", 413: "image_too_large",
                 426: "protocol_mismatch", 507: "out_of_memory"}
    return by_status.get(status, "bad_response"), "HTTP %d: %s" % (status, body[:200].decode("utf-8", "replace"))


def check_hello(hello: dict) -> Optional[Tuple[str, str]]:
    """None when this client may talk to the server, else (code, message)."""
    if hello.get("server") != "layerbridge" and hello.get("type") != "hello":
        return "bad_response", "Not a LayerBridge server."
    try:
        high, low = int(hello.get("protocol", 0)), int(hello.get("min_protocol", hello.get("protocol", 0)))
    except (TypeError, ValueError):
        return "bad_response", "The server did not state its protocol version."
    if PROTOCOL > high:
        return "protocol_mismatch", ("The server speaks protocol %d, this plugin %d: update the LayerBridge server."
                                     % (high, PROTOCOL))
    if PROTOCOL < low:
        return "protocol_mismatch", ("The server needs protocol %d or newer, this plugin speaks %d: "
                                     "update the Krita plugin." % (low, PROTOCOL))
    if "bgra8" not in (hello.get("capabilities") or ()):
        return "protocol_mismatch", "The server is older than this plugin (it takes no bgra8 pixels): update the LayerBridge server."
    return None


# -- the job options the server announces (hello's `job_options`) ---------------------------------------------
# What a server too old to announce them takes: the controls fall back to these.
FALLBACK_OPTIONS: Dict[str, object] = {
    "presets": [
        {"name": "best", "label": "Best", "steps": 50, "summary": ""},
        {"name": "balanced", "label": "Balanced", "steps": 30, "summary": ""},
        {"name": "fast", "label": "Fast", "steps": 20, "summary": ""},
    ],
    "preset": "best",
    "layers": {"min": 2, "max": 10, "default": 4},
    "resolution": {"choices": [640, 1024], "default": 640},
    "steps": {"min": 2, "max": 100, "default": None},
    "cfg_scale": {"min": 1.0, "max": 20.0, "default": 4.0},
    "caption_language": {"choices": ["en", "zh"], "default": "en"},
}


def _number_range(given: object, fallback: dict, kind: type) -> dict:
    """{min, max, default} from the server when it is well formed (min <= default <= max), else the fallback."""
    if not isinstance(given, dict):
        return dict(fallback)
    try:
        low, high = kind(given["min"]), kind(given["max"])
        default = given.get("default")
        default = None if default is None else kind(default)
    except (KeyError, TypeError, ValueError):
        return dict(fallback)
    if low > high or (default is not None and not low <= default <= high):
        return dict(fallback)
    if default is None and fallback.get("default") is not None:
        default = max(low, min(high, fallback["default"]))
    return {"min": low, "max": high, "default": default}


def _choices(given: object, fallback: dict, kind: type) -> dict:
    """{choices, default} from the server when it is well formed, else the fallback."""
    if not isinstance(given, dict) or not isinstance(given.get("choices"), list):
        return dict(fallback)
    try:
        choices = [kind(c) for c in given["choices"]]
    except (TypeError, ValueError):
        return dict(fallback)
    if not choices:
        return dict(fallback)
    default = given.get("default")
    return {"choices": choices, "default": default if default in choices else choices[0]}


def job_options(hello: Optional[dict]) -> Dict[str, object]:
    """The job options a server announces in its hello (GET /v1/info, the WebSocket `hello`): presets, the ranges of
    layers, steps and guidance, the resolutions and caption languages. Each part the server leaves out or sends
    malformed (an older server sends none) falls back to FALLBACK_OPTIONS."""
    given = (hello or {}).get("job_options")
    given = given if isinstance(given, dict) else {}
    fb = FALLBACK_OPTIONS
    presets = []
    for p in given.get("presets") or []:
        if isinstance(p, dict) and isinstance(p.get("name"), str) and p["name"]:
            presets.append({"name": p["name"], "label": str(p.get("label") or p["name"].capitalize()),
                            "steps": p.get("steps"), "summary": str(p.get("summary") or "")})
    presets = presets or [dict(p) for p in fb["presets"]]
    names = [p["name"] for p in presets]
    return {
        "presets": presets,
        "preset": given.get("preset") if given.get("preset") in names else names[0],
        "layers": _number_range(given.get("layers"), fb["layers"], int),
        "resolution": _choices(given.get("resolution"), fb["resolution"], int),
        "steps": _number_range(given.get("steps"), fb["steps"], int),
        "cfg_scale": _number_range(given.get("cfg_scale"), fb["cfg_scale"], float),
        "caption_language": _choices(given.get("caption_language"), fb["caption_language"], str),
    }
