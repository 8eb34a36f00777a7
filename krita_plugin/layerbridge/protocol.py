"""Protocol v1 over HTTP, without Qt: request bodies, event parsing, and words for people."""

import copy
import json
import math
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


def features(hello: Optional[dict]) -> Dict[str, bool]:
    """What this server does beyond the basic job, from its hello's `capabilities` (docs/protocol.md §5):
    `text_layers` (the job option, and each result layer's text blocks) and `split_elements` (the job option, the
    result's group hierarchy and the split task). Mirrors features in photoshop_uxp/src/protocol.js.

    Args:
        hello: the server's hello (GET /v1/info), or None when none was read.
    """
    capabilities = (hello or {}).get("capabilities") if isinstance(hello, dict) else None
    capabilities = capabilities if isinstance(capabilities, list) else []
    return {"text_layers": "text_layers" in capabilities, "split_elements": "split_elements" in capabilities}


def supported_params(params: Dict[str, object], hello: Optional[dict]) -> Dict[str, object]:
    """`params` without the options (features) this server does not announce: it would refuse them
    (invalid_params), an older server doing as before without them.

    Args:
        params: the job parameters (docs/protocol.md §3).
        hello: the server's hello (GET /v1/info), or None when none was read.
    """
    announced = features(hello)
    return {k: v for k, v in params.items() if announced.get(k, True)}


def split_params(name: str = "", text_layers: bool = True) -> Dict[str, object]:
    """The split task's `params` (docs/protocol.md, the split task): the layer's name and whether to read its
    text. Mirrors splitParams in photoshop_uxp/src/protocol.js."""
    return {"name": str(name or "")[:200], "text_layers": bool(text_layers)}


def has_pixels(layer: dict) -> bool:
    """Whether a result layer has pixels to fetch: not a group entry (docs/protocol.md, Result; a group's box is
    its children's) and not empty. Mirrors hasPixels in photoshop_uxp/src/protocol.js."""
    if layer.get("group") is True:
        return False
    try:
        return int(layer.get("width", 0)) * int(layer.get("height", 0)) > 0
    except (TypeError, ValueError):
        return False


def editable_blocks(layer: dict) -> List[dict]:
    """The text blocks of a result layer to set as live text: `editable`, with words and at least one line
    (docs/text.md). Mirrors editableBlocks in photoshop_uxp/src/protocol.js."""
    out = []
    for block in layer.get("text") or ():
        if not isinstance(block, dict) or block.get("editable") is not True:
            continue
        lines = [l for l in block.get("lines") or () if isinstance(l, dict) and str(l.get("text") or "").strip()]
        size = block.get("size")
        if lines and _number(size) and size > 0:
            out.append(block)
    return out


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
    "worker_lost": ("The job was lost twice: the machines running it went away.",
                    "The server is still up; decompose again."),
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


# What jobs may ask for on a server that does not announce it (before `job_options`, docs/protocol.md §5): the
# values this plugin offered before servers announced them. A preset's levers are then unknown (None).
FALLBACK_JOB_OPTIONS = {
    "presets": [
        {"name": name, "label": name.capitalize(), "steps": None, "cfg_until": None, "caption_tokens": None,
         "name_layers": None, "summary": ""}
        for name in ("best", "balanced", "fast")
    ],
    "preset": "best",
    "layers": {"min": 2, "max": 10, "default": 4},
    "resolution": {"choices": [640, 1024], "default": 640},
    "steps": {"min": 2, "max": 100, "default": None},
    "cfg_scale": {"min": 1.0, "max": 20.0, "default": 4.0},
    "caption_language": {"choices": ["en", "zh"], "default": "en"},
}
LANGUAGE_NAMES = {"en": "English", "zh": "Chinese"}  # a code not here is shown as it is


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _range(announced: object, fallback: dict) -> dict:
    """{min, max, default}: the announced range when it is one, its default kept inside it (None: the preset's)."""
    if not isinstance(announced, dict) or not (_number(announced.get("min")) and _number(announced.get("max"))):
        return dict(fallback)
    low, high = announced["min"], announced["max"]
    if low > high:
        return dict(fallback)
    default = announced.get("default")  # null: the preset's (or the server's) choice; absent: the fallback's
    if "default" not in announced or not (default is None or (_number(default) and low <= default <= high)):
        default = fallback["default"]
        if default is not None:
            default = min(max(default, low), high)
    return {"min": low, "max": high, "default": default}


def _choice(announced: object, fallback: dict) -> dict:
    """{choices, default}: the announced choices when there are some, the default one of them."""
    choices = announced.get("choices") if isinstance(announced, dict) else None
    if not isinstance(choices, list) or not choices or not all(_number(c) or isinstance(c, str) for c in choices):
        return copy.deepcopy(fallback)
    default = announced.get("default")
    if not (_number(default) or isinstance(default, str)) or default not in choices:
        default = fallback["default"] if fallback["default"] in choices else choices[0]
    return {"choices": list(choices), "default": default}


def _presets(announced: object) -> List[dict]:
    """The announced presets (each with a name), in order, every field present."""
    if not isinstance(announced, list):
        return copy.deepcopy(FALLBACK_JOB_OPTIONS["presets"])
    out = []
    for p in announced:
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not p["name"] \
                or any(p["name"] == q["name"] for q in out):
            continue
        label = p.get("label")
        out.append({
            "name": p["name"],
            "label": label if isinstance(label, str) and label else p["name"].capitalize(),
            "steps": p["steps"] if _number(p.get("steps")) else None,
            "cfg_until": p["cfg_until"] if _number(p.get("cfg_until")) else None,
            "caption_tokens": p["caption_tokens"] if _number(p.get("caption_tokens")) else None,
            "name_layers": p["name_layers"] if isinstance(p.get("name_layers"), bool) else None,
            "summary": p["summary"] if isinstance(p.get("summary"), str) else "",
        })
    return out or copy.deepcopy(FALLBACK_JOB_OPTIONS["presets"])


def job_options(hello: Optional[dict]) -> dict:
    """What jobs may ask for on this server, to build the controls from: the `job_options` of its hello
    (docs/protocol.md §5), in the same shape, every part present. A server older than `job_options` (or a part it
    announces malformed) gets FALLBACK_JOB_OPTIONS's. Mirrors jobOptions in photoshop_uxp/src/protocol.js.

    Args:
        hello: the server's hello (GET /v1/info), or None when none was read.
    """
    announced = hello.get("job_options") if isinstance(hello, dict) else None
    if not isinstance(announced, dict):
        announced = {}
    fallback = FALLBACK_JOB_OPTIONS
    presets = _presets(announced.get("presets"))
    names = [p["name"] for p in presets]
    preset = announced.get("preset")
    if preset not in names:
        preset = fallback["preset"] if fallback["preset"] in names else names[0]
    return {
        "presets": presets,
        "preset": preset,
        "layers": _range(announced.get("layers"), fallback["layers"]),
        "resolution": _choice(announced.get("resolution"), fallback["resolution"]),
        "steps": _range(announced.get("steps"), fallback["steps"]),
        "cfg_scale": _range(announced.get("cfg_scale"), fallback["cfg_scale"]),
        "caption_language": _choice(announced.get("caption_language"), fallback["caption_language"]),
    }
