"""Bad input gets a JSON error with a stable code, and the server keeps serving."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from websockets.exceptions import ConnectionClosed

from backend.core import options
from backend.core.errors import ErrorCode, LayerBridgeError
from backend.imaging.image import decode, from_raw
from backend.core.job import JobParams

from .wire import FAST, WS, image, multipart, png_bytes, request, submit_http, wait_state


def post(server, body: bytes, ctype: str):
    status, _, data = request(server, "POST", "/v1/jobs", body, {"Content-Type": ctype})
    return status, json.loads(data)


def encoded(mode: str, fmt: str = "PNG", size=(31, 17), **kw) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"", "invalid_image"),
        (b"not an image at all", "invalid_image"),
        (png_bytes(image(40, 40))[:200], "invalid_image"),  # truncated
        (encoded("F", "TIFF"), "unsupported_image"),
    ],
)
def test_broken_images(live_server, data, expected):
    body, ctype = multipart(FAST, data, "image/png")
    status, err = post(live_server, body, ctype)
    assert err["code"] == expected and status in (400, 415) and "Traceback" not in err["message"]


@pytest.mark.parametrize("mode,fmt", [("CMYK", "JPEG"), ("P", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("RGB", "PNG"),
                                      ("I;16", "PNG"), ("1", "PNG")])
def test_other_modes_are_converted(mode, fmt):
    out = decode(encoded(mode, fmt), 10**8)
    assert out.shape == (17, 31, 4) and out.dtype == np.uint8


def test_decompression_bomb_is_refused():
    buf = io.BytesIO()
    Image.new("L", (20000, 20000)).save(buf, "PNG")  # tiny file, 400 MP
    with pytest.raises(LayerBridgeError) as info:
        decode(buf.getvalue(), 100_000_000)
    assert info.value.code == ErrorCode.image_too_large


def test_huge_and_zero_dimensions(live_server):
    status, err = submit_http(live_server, image(4, 4), dict(FAST, width=40000, height=1))
    assert err["code"] == "image_too_large"
    status, err = submit_http(live_server, np.zeros((0, 5, 4), np.uint8), dict(FAST))
    assert err["code"] == "invalid_image"
    body, ctype = multipart(dict(FAST, width=10, height=10), b"\0" * 399, "application/octet-stream")
    assert post(live_server, body, ctype)[1]["code"] == "invalid_image"


def test_unknown_or_misplaced_pixel_format_is_refused(live_server):
    status, err = submit_http(live_server, image(8, 8), dict(FAST, pixel_format="argb8"))
    assert status == 400 and err["code"] == "invalid_params" and "rgba8, bgra8" in err["message"]
    status, err = submit_http(live_server, image(8, 8), dict(FAST, pixel_format="bgra8"), raw=False)
    assert status == 400 and err["code"] == "invalid_params" and "raw image" in err["message"]
    ws = WS(live_server)
    ws.send({"type": "submit", "params": FAST, "image": {"format": "argb8", "width": 2, "height": 2, "bytes": 16, "transfer": 1}})
    assert ws.recv()["code"] == "bad_request"
    ws.close()


def test_limits_are_configurable(tiny_model, tmp_path):
    from server_process import start_server, stop_server

    server = start_server(tiny_model, tmp_path, "--max-pixels", "1000", "--max-upload-mb", "1", "--max-results", "1")
    try:
        assert submit_http(server, image(40, 40))[1]["code"] == "image_too_large"
        body, ctype = multipart(dict(FAST, width=1000, height=1000), b"\0" * (1000 * 1000 * 4), "application/octet-stream")
        status, err = post(server, body, ctype)
        assert status == 413 and err["code"] == "payload_too_large"
        ws = WS(server)
        ws.send({"type": "submit", "params": FAST, "image": {"format": "rgba8", "width": 40, "height": 40, "bytes": 6400, "transfer": 1}})
        assert ws.recv()["code"] == "image_too_large"
        ws.close()
        assert request(server, "GET", "/health", token=False)[0] == 200
        # finished results are bounded: the oldest goes when a newer one finishes
        first = wait_state(server, submit_http(server, image(30, 30))[1]["job"])["job"]
        second = wait_state(server, submit_http(server, image(30, 30))[1]["job"])["job"]
        assert request(server, "GET", f"/v1/jobs/{second}/result")[0] == 200
        assert request(server, "GET", f"/v1/jobs/{first}/result")[0] == 404
    finally:
        stop_server(server)


@pytest.mark.parametrize(
    "params, field",
    [({"layers": 1}, "layers"), ({"layers": 11}, "layers"), ({"resolution": 800}, "resolution"), ({"steps": 1}, "steps"),
     ({"cfg_scale": "x"}, "cfg_scale"), ({"seed": -1}, "seed"), ({"preset": "ultra"}, "preset"), ({"bogus": 1}, "bogus"),
     ({"prompt": 5}, "prompt"), ({"restore": "yes"}, "restore"), ({"layers": True}, "layers")],
)
def test_out_of_range_params(live_server, params, field):
    status, err = submit_http(live_server, image(8, 8), dict(FAST, **params))
    assert status == 400 and err["code"] == "invalid_params" and field in err["message"]


def test_malformed_json_and_bodies(live_server):
    body, ctype = multipart("{not json", png_bytes(image(8, 8)), "image/png")
    assert post(live_server, body, ctype)[1]["code"] == "bad_request"
    assert post(live_server, b"garbage", "multipart/form-data; boundary=zzz")[1]["code"] in ("bad_request",)
    assert post(live_server, b"{}", "application/json")[1]["code"] == "bad_request"
    body, ctype = multipart(FAST, b"", "image/png")
    assert post(live_server, body.replace(b'name="image"', b'name="other"'), ctype)[1]["code"] == "bad_request"


def parts(*named: tuple[str, bytes]) -> tuple[bytes, str]:
    """A multipart body of these parts, in order, repeats included."""
    boundary = "b0undary"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + data + b"\r\n"
        for name, data in named
    )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_a_repeated_part_is_refused_and_the_server_keeps_serving(live_server):
    params, png = json.dumps(FAST).encode(), png_bytes(image(8, 8))
    status, err = post(live_server, *parts(("params", params), ("image", png), ("image", png_bytes(image(16, 16)))))
    assert status == 400 and err["code"] == "bad_request" and "more than one image part" in err["message"]
    status, err = post(live_server, *parts(("params", params), ("params", b'{"layers": 3}'), ("image", png)))
    assert status == 400 and err["code"] == "bad_request" and "more than one params part" in err["message"]
    status, answer = post(live_server, *parts(("params", params), ("image", png)))
    assert status == 202 and wait_state(live_server, answer["job"])["state"] == "done"


def test_raw_pixels_sent_as_an_encoded_image_are_refused_in_words(live_server):
    a = image(40, 30)
    body, ctype = multipart(dict(FAST, width=40, height=30), a.tobytes(), "image/png")
    status, err = post(live_server, body, ctype)
    assert status == 400 and err["code"] == "invalid_image"
    assert "application/octet-stream" in err["message"] and "BytesIO" not in err["message"]


def test_unknown_job_and_layer(live_server):
    for method, path in [("GET", "/v1/jobs/j_nope"), ("POST", "/v1/jobs/j_nope/cancel"), ("GET", "/v1/jobs/j_nope/result"),
                         ("GET", "/v1/jobs/j_nope/layers/0"), ("GET", "/v1/nothing")]:
        status, _, body = request(live_server, method, path, body=b"" if method == "POST" else None)
        assert status == 404 and json.loads(body)["code"] == "not_found", path
    job = wait_state(live_server, submit_http(live_server, image(16, 16))[1]["job"])["job"]
    for index in ("9", "-1", "x"):
        status, _, body = request(live_server, "GET", f"/v1/jobs/{job}/layers/{index}")
        assert status == 404 and json.loads(body)["code"] == "not_found"


def test_websocket_bad_messages_keep_the_connection(live_server):
    ws = WS(live_server, hello=False)
    ws.send({"type": "submit"})
    assert ws.recv()["code"] == "bad_request"  # before hello
    ws.ws.send("{oops")
    assert ws.recv()["code"] == "bad_request"
    ws.send({"type": "hello", "protocol": 1})
    assert ws.recv()["type"] == "hello"
    for msg, code in [({"type": "warp"}, "bad_request"), ({"no": "type"}, "bad_request"),
                      ({"type": "cancel"}, "bad_request"), ({"type": "cancel", "job": "j_x"}, "not_found"),
                      ({"type": "submit", "params": {"layers": 50}, "image": {"format": "rgba8", "width": 2, "height": 2, "bytes": 16, "transfer": 1}}, "invalid_params"),
                      ({"type": "submit", "image": {"format": "png"}}, "bad_request"),
                      ({"type": "submit", "image": {"format": "rgba8", "width": 2, "height": 2, "bytes": 15, "transfer": 1}}, "invalid_image")]:
        ws.send(dict(msg, ref="x"))
        reply = ws.recv()
        assert reply["code"] == code and reply["ref"] == "x", msg
    ws.ws.send(b"LBPX" + struct.pack("<II", 77, 0) + b"abcd")
    assert ws.recv()["code"] == "bad_request"
    ws.ws.send(b"nonsense")
    assert ws.recv()["code"] == "bad_request"
    ws.send({"type": "submit", "params": FAST, "image": {"format": "rgba8", "width": 2, "height": 2, "bytes": 16, "transfer": 3}})
    ws.ws.send(b"LBPX" + struct.pack("<II", 3, 8) + b"x" * 12)
    assert ws.recv()["code"] == "invalid_image"
    ws.send({"type": "ping"})
    assert ws.recv()["type"] == "pong"
    ws.close()


def test_oversized_frame_closes_only_that_connection(live_server):
    ws = WS(live_server)
    ws.ws.send(b"LBPX" + b"\0" * 8 + b"x" * (5 * 1024 * 1024))
    with pytest.raises(Exception):
        for _ in range(5):
            ws.recv(timeout=10)
    assert request(live_server, "GET", "/health", token=False)[0] == 200


def test_websocket_size_limits_are_the_documented_ones(live_server):
    ws = WS(live_server)
    ws.ws.send(b"LBPX" + struct.pack("<II", 99, 0) + bytes(4 * 1024 * 1024))  # 4 MiB + 12 bytes: read
    assert "transfer 99" in ws.recv()["message"]
    pad = 1024 * 1024 - len(json.dumps({"type": "warp", "pad": ""}))
    ws.ws.send(json.dumps({"type": "warp", "pad": "x" * pad}))  # 1 MiB: read
    assert "warp" in ws.recv()["message"]
    ws.close()
    over = [
        b"LBPX" + struct.pack("<II", 99, 0) + bytes(4 * 1024 * 1024 + 1),  # one byte over
        json.dumps({"type": "ping", "pad": "é" * (600 * 1024)}, ensure_ascii=False),  # 0.6 M characters, 1.2 MB
        "x" * (5 * 1024 * 1024),  # over anything the server reads
    ]
    for compression in ("deflate", None):  # aiohttp limits compressed and plain messages apart
        for message in over:
            ws = WS(live_server, compression=compression)
            ws.ws.send(message)
            assert ws.recv(timeout=20)["code"] == "payload_too_large", (compression, len(message))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=20)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
            ws.close()
    assert request(live_server, "GET", "/health", token=False)[0] == 200


@pytest.mark.parametrize("params", [0, False, "", [], "{}", 5])
def test_non_object_params_are_refused_on_both_transports(live_server, params):
    status, err = submit_http(live_server, image(8, 8), json.dumps(params))
    assert status == 400 and err["code"] == "invalid_params"
    ws = WS(live_server)
    ws.send({"type": "submit", "ref": "p", "params": params,
             "image": {"format": "rgba8", "width": 2, "height": 2, "bytes": 16, "transfer": 1}})
    reply = ws.recv()
    assert reply["code"] == "invalid_params" and reply["ref"] == "p"
    ws.close()


def test_client_vanishing_mid_job_does_not_break_the_worker(live_server):
    ws = WS(live_server)
    ws.submit(image(50, 50), dict(FAST, steps=4))
    job = ws.until("accepted")["job"]
    ws.ws.socket.close()  # abrupt
    assert wait_state(live_server, job)["state"] == "done"
    assert wait_state(live_server, submit_http(live_server, image(20, 20))[1]["job"])["state"] == "done"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_decoder_never_crashes(data):
    try:
        out = decode(data, 10**7)
    except LayerBridgeError as exc:
        assert exc.code in (ErrorCode.invalid_image, ErrorCode.unsupported_image, ErrorCode.image_too_large)
    else:
        assert out.ndim == 3 and out.shape[2] == 4


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["layers", "resolution", "steps", "cfg_scale", "seed", "prompt", "preset", "restore", "name_layers", "x"]),
                       st.one_of(st.integers(-5, 5000), st.floats(allow_nan=True), st.text(max_size=5), st.booleans(), st.none())))
@example({"layers": float("inf")})
@example({"steps": float("-inf")})
@example({"seed": float("nan")})
@example({"layers": 4.0})
def test_fuzz_params_validate_or_refuse(raw):
    try:
        p = JobParams.parse(raw)
    except LayerBridgeError as exc:
        assert exc.code == ErrorCode.invalid_params
    else:
        assert options.LAYERS.min <= p.layers <= options.LAYERS.max and p.resolution in options.RESOLUTION.choices


@settings(max_examples=50, deadline=None)
@given(st.integers(-3, 50), st.integers(-3, 50), st.binary(max_size=64))
def test_fuzz_raw_rgba(width, height, data):
    try:
        out = from_raw(data, width, height, 10**6)
    except LayerBridgeError as exc:
        assert exc.code in (ErrorCode.invalid_image, ErrorCode.image_too_large)
    else:
        assert out.shape == (height, width, 4)


def test_a_wrong_transformer_file_fails_jobs_in_words_and_the_server_keeps_serving(tiny_model, tmp_path):
    from safetensors.torch import load_file, save_file
    from server_process import start_server, stop_server

    weights = load_file(tiny_model / "transformer" / "diffusion_pytorch_model.safetensors")
    save_file({k: v for k, v in weights.items() if "transformer_blocks.1." not in k}, tmp_path / "other.safetensors")
    server = start_server(tiny_model, tmp_path / "server", "--transformer-file", str(tmp_path / "other.safetensors"))
    try:
        status, answer = submit_http(server, image(30, 30))
        state = wait_state(server, answer["job"]) if status == 202 else answer
        error = state.get("error") or state
        assert error["code"] == "model_unavailable", state
        assert "not a Qwen-Image-Layered transformer" in error["message"] and "transformer_blocks.1." in error["message"]
        model = server.get_json("/v1/status")["model"]
        assert model["state"] == "failed" and model["transformer_file"].endswith("other.safetensors")
        assert "not a Qwen-Image-Layered transformer" in model["error"]
        assert request(server, "GET", "/health", token=False)[0] == 200
        assert server.proc.poll() is None
    finally:
        stop_server(server)


@pytest.mark.parametrize("resolution", [512, 800, 2048])
def test_a_resolution_the_model_has_no_bucket_for_is_named_as_a_choice(resolution):
    from backend.core.errors import LayerBridgeError
    from backend.core.job import JobParams

    with pytest.raises(LayerBridgeError) as info:
        JobParams.parse({"resolution": resolution})
    assert info.value.message == f"resolution must be 640 or 1024 (got {resolution})"
