"""Single-file transformers (FP8 safetensors in ComfyUI's layout, GGUF) in place of the model's own, on the tiny
pipeline: real files written with safetensors and gguf, loaded through the server's own path."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from backend.model import download, transformer_file
from backend.model.engine import Engine, ModelState
from backend.core.errors import ErrorCode, LayerBridgeError
from backend.core.job import JobParams
from backend.model.device import DeviceInfo
from backend.model.plan import MemoryMode, component_bytes, plan
from backend.core.settings import Settings

IMG = np.random.default_rng(4).integers(0, 256, (48, 64, 4), dtype=np.uint8)
JOB = {"layers": 2, "steps": 2, "prompt": "x", "seed": 1}
FP8_MAX = torch.finfo(torch.float8_e4m3fn).max

pytestmark = pytest.mark.xdist_group("transformer_file")  # one worker: the module's reference latents are shared


def state(tiny_model: Path) -> dict[str, torch.Tensor]:
    return load_file(tiny_model / "transformer" / "diffusion_pytorch_model.safetensors")


def write_comfy_fp8(tiny_model: Path, path: Path) -> dict[str, torch.Tensor]:
    """ComfyUI's scaled-FP8 layout: prefixed keys, float8 matrices with a per-tensor `scale_weight`, a marker key,
    input scales; vectors left in full precision. Returns the weights the file stands for."""
    out: dict[str, torch.Tensor] = {"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}
    meant = {}
    for key, value in state(tiny_model).items():
        name = "model.diffusion_model." + key
        if value.dim() == 2:
            scale = value.abs().max().float() / FP8_MAX
            q = (value.float() / scale).to(torch.float8_e4m3fn)
            out[name] = q
            out[name.removesuffix(".weight") + ".scale_weight"] = scale.reshape(())
            out[name.removesuffix(".weight") + ".scale_input"] = torch.ones(())
            meant[key] = q.float() * scale
        else:
            out[name] = value
            meant[key] = value
    save_file(out, path)
    return meant


def write_gguf(tiny_model: Path, path: Path) -> int:
    """The tiny transformer as GGUF, mixed as converters write it: Q8_0 where a row is whole 32-value blocks, other
    matrices F16, vectors (biases, norms) BF16 and F32 by turns. Returns how many tensors are Q8_0."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch="qwen_image")
    quantised = 0
    for i, (key, value) in enumerate(state(tiny_model).items()):
        array = value.float().numpy()
        if array.ndim == 2 and array.shape[-1] % 32 == 0:
            packed = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(key, packed, raw_shape=packed.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            quantised += 1
        elif array.ndim == 2:
            writer.add_tensor(key, array.astype(np.float16))
        elif i % 2:
            packed = gguf.quants.quantize(array, gguf.GGMLQuantizationType.BF16)
            writer.add_tensor(key, packed, raw_shape=packed.shape, raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            writer.add_tensor(key, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return quantised


def run(engine: Engine) -> torch.Tensor:
    result = engine.run(IMG, JobParams.parse(JOB), lambda p: None, lambda: False)
    assert result.canvas_width == 64 and result.canvas_height == 48 and len(result.layers) == 2
    return engine.last_latents.clone()


@pytest.fixture(scope="module")
def reference(engine) -> torch.Tensor:
    """The tiny model's own latents for JOB, without a transformer file."""
    return run(engine)


def test_plain_safetensors_file_gives_the_models_own_result(tiny_model, tmp_path, reference):
    save_file(state(tiny_model), tmp_path / "transformer.safetensors")
    engine = Engine(Settings(model=str(tiny_model), transformer_file=str(tmp_path / "transformer.safetensors")))
    assert torch.equal(run(engine), reference)


def test_comfy_scaled_fp8_file_loads_with_its_scales(tiny_model, tmp_path, reference):
    path = tmp_path / "qwen_image_layered_fp8_scaled.safetensors"
    meant = write_comfy_fp8(tiny_model, path)
    t = transformer_file.load(path, str(tiny_model), torch.float32)
    loaded = t.state_dict()
    assert set(loaded) == set(meant)
    kept = {k for k, v in loaded.items() if transformer_file.is_fp8_weight(v)}
    # every linear layer's matrix stays FP8 in memory; the embedding table (no linear layer) is widened
    embedding = "time_text_embed.addition_t_embedding.weight"
    assert kept == {k for k, v in meant.items() if v.dim() == 2} - {embedding}
    assert type(loaded[embedding]) is torch.Tensor and loaded[embedding].dtype == torch.float32
    assert all(loaded[k].qdata.dtype == torch.float8_e4m3fn for k in kept)
    plain = {k: v.dequantize() if k in kept else v for k, v in loaded.items()}
    assert all(torch.equal(plain[k], v.float()) for k, v in meant.items())  # fp8 × scale, not the raw fp8 values
    # in memory: a byte per FP8 weight, the rest (vectors) as bf16; scale and marker keys not counted
    assert transformer_file.memory_bytes(path) == sum(v.numel() * (1 if v.dim() == 2 else 2) for v in meant.values())
    assert transformer_file.has_fp8_weights(str(path))

    engine = Engine(Settings(model=str(tiny_model), transformer_file=str(path)))
    latents = run(engine)
    deviation = ((latents - reference).norm() / reference.norm()).item()
    assert 0 < deviation < 0.1  # FP8's rounding, bounded
    assert engine.status_json()["model"]["transformer_file"] == str(path)
    assert engine.memory.fp8_file_weights and "FP8 weights kept" in engine.memory.reason
    # kept FP8, the file computes what its weights widened at load would (to float32 rounding: the FP8 layers
    # multiply and add the bias in two steps, as torchao does, where a plain layer fuses them)
    save_file({k: v.float().contiguous() for k, v in meant.items()}, tmp_path / "widened.safetensors")
    widened = run(Engine(Settings(model=str(tiny_model), transformer_file=str(tmp_path / "widened.safetensors"))))
    assert ((widened - latents).norm() / widened.norm()).item() < 1e-5


def test_gguf_file_stays_quantised_and_runs(tiny_model, tmp_path, reference):
    from diffusers.quantizers.gguf.utils import GGUFParameter

    path = tmp_path / "qwen-image-layered-Q8_0.gguf"
    quantised = write_gguf(tiny_model, path)
    assert quantised > 10
    engine = Engine(Settings(model=str(tiny_model), transformer_file=str(path)))
    latents = run(engine)
    transformer = engine.pipe.transformer
    packed = [p for p in transformer.parameters() if isinstance(p, GGUFParameter)]
    # every packed linear layer stays packed; the one packed embedding table and the BF16 vectors (not linear layers'
    # weights) are unpacked at load
    embedding = transformer.time_text_embed.addition_t_embedding.weight
    assert len(packed) == quantised - 1 and all(p.dtype == torch.uint8 for p in packed)
    assert not isinstance(embedding, GGUFParameter) and embedding.dtype == torch.float32
    deviation = ((latents - reference).norm() / reference.norm()).item()
    assert 0 < deviation < 0.05  # Q8_0's rounding, bounded
    assert torch.equal(run(engine), latents)  # deterministic
    assert not engine.memory.fp8
    assert transformer_file.memory_bytes(path) == path.stat().st_size


def test_gguf_transformer_survives_host_offload(tiny_model, tmp_path):
    from backend.model.offload import HostOffload
    from diffusers.quantizers.gguf.utils import GGUFParameter

    path = tmp_path / "t.gguf"
    write_gguf(tiny_model, path)
    engine = Engine(Settings(model=str(tiny_model), transformer_file=str(path)))
    first = run(engine)
    offload = HostOffload(engine.pipe, "cpu")
    try:
        assert torch.equal(run(engine), first)  # onload, offload (host tensors assigned back), onload again
        assert torch.equal(run(engine), first)
        assert any(isinstance(p, GGUFParameter) for p in engine.pipe.transformer.parameters())
    finally:
        offload.remove()


def test_plan_sizes_the_transformer_from_the_file(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr("backend.model.plan.host_ram_bytes", lambda: 64 * 2**30)
    path = tmp_path / "t.gguf"
    write_gguf(tiny_model, path)
    sizes = component_bytes(str(tiny_model), str(path))
    assert sizes["transformer"] == path.stat().st_size
    assert sizes["text_encoder"] == component_bytes(str(tiny_model))["text_encoder"]
    # the published model with an 11 GiB GGUF transformer on a 24 GiB Ada card: the largest component (the 15.4 GiB
    # text encoder) fits, so one at a time; GGUF is already quantised, so no FP8 and no compile on auto
    gib = 2**30
    big = tmp_path / "qwen-image-layered-Q4_K_M.gguf"
    with open(big, "wb") as f:
        f.truncate(11 * gib)  # sparse: only its size is read
    card = DeviceInfo("cuda", "RTX 4090", 24 * gib, int(23.5 * gib), (8, 9))
    choice = plan(card, "Qwen/Qwen-Image-Layered", transformer_file=str(big))
    assert choice.mode == MemoryMode.host_offload and not choice.fp8 and not choice.compile
    assert "GGUF" in choice.reason
    assert not plan(card, "Qwen/Qwen-Image-Layered", quantize="fp8", transformer_file=str(big)).fp8
    # a 24 GB card without FP8 units (RTX 3090) kept in bf16: the transformer is streamed, a Q8_0 file (20.2 GiB)
    # placed whole (on auto, the model's own is placed whole in int8: tests/test_int8_transformer.py)
    ampere = DeviceInfo("cuda", "RTX 3090", 24 * gib, int(23.5 * gib), (8, 6))
    streamed = plan(ampere, "Qwen/Qwen-Image-Layered", quantize="none")
    assert streamed.mode == MemoryMode.group_offload
    assert "a GGUF transformer file of at most 20.5 GiB" in streamed.reason  # the plan says what would help
    q8 = tmp_path / "qwen-image-layered-Q8_0.gguf"
    with open(q8, "wb") as f:
        f.truncate(int(20.2 * gib))
    placed = plan(ampere, "Qwen/Qwen-Image-Layered", transformer_file=str(q8))
    assert placed.mode == MemoryMode.host_offload and "GGUF transformer file of at most" not in placed.reason
    # a card too small for even the int8 text encoder gets no such advice
    tiny_card = DeviceInfo("cuda", "GPU", 8 * gib, int(7.5 * gib), (8, 6))
    assert "GGUF transformer file" not in plan(tiny_card, "Qwen/Qwen-Image-Layered").reason
    # not on this machine yet (a Hub address): planned as the model's own bf16 transformer until it is
    remote = "https://huggingface.co/someone/qwen-image-layered-gguf/blob/main/q4.gguf"
    assert component_bytes("Qwen/Qwen-Image-Layered", remote)["transformer"] == component_bytes("Qwen/Qwen-Image-Layered")["transformer"]


@pytest.mark.parametrize("damage", ["missing", "shape"])
def test_a_file_of_another_model_fails_the_load_in_words_and_the_engine_recovers(tiny_model, tmp_path, damage):
    sd = state(tiny_model)
    key = next(k for k in sd if k.endswith("img_mlp.net.2.weight"))
    if damage == "missing":
        del sd[key]
    else:
        sd[key] = torch.zeros(sd[key].shape[0], sd[key].shape[1] * 2)
    path = tmp_path / "other.safetensors"
    save_file(sd, path)
    engine = Engine(Settings(model=str(tiny_model), transformer_file=str(path)))
    with pytest.raises(LayerBridgeError) as caught:
        engine.load()
    assert caught.value.code == ErrorCode.model_unavailable
    message = caught.value.message
    assert "is not a Qwen-Image-Layered transformer" in message and key in message
    assert ("missing" if damage == "missing" else "another shape") in message
    assert engine.model_status.state == ModelState.failed and engine.model_status.error == message
    save_file(state(tiny_model), path)  # the right file now: the same engine loads it
    engine.load()
    assert engine.model_status.state == ModelState.ready


def test_per_row_int8_scales_are_applied_and_block_scales_refused(tiny_model, tmp_path):
    weights = state(tiny_model)
    key = next(k for k, v in weights.items() if v.dim() == 2 and v.shape[1] % 16 == 0)
    value = weights[key]
    scale = value.abs().amax(1) / 127
    rows = dict(weights, **{key: (value / scale[:, None]).round().to(torch.int8), key[:-7] + ".weight_scale": scale})
    save_file(rows, tmp_path / "rows.safetensors")
    loaded = transformer_file.read_checkpoint(tmp_path / "rows.safetensors", torch.float32)
    assert torch.allclose(loaded[key], value, atol=float(scale.max()) / 2 + 1e-7)
    assert key[:-7] + ".weight_scale" not in loaded
    blocks = dict(rows, **{key[:-7] + ".weight_scale": scale[:, None].repeat(1, value.shape[1] // 16)})
    save_file(blocks, tmp_path / "blocks.safetensors")
    with pytest.raises(LayerBridgeError, match="scales .* in blocks"):
        transformer_file.read_checkpoint(tmp_path / "blocks.safetensors", torch.float32)
    unscaled = {k: v for k, v in rows.items() if not k.endswith("weight_scale")}
    save_file(unscaled, tmp_path / "unscaled.safetensors")
    with pytest.raises(LayerBridgeError, match="int8 weights without a scale"):
        transformer_file.read_checkpoint(tmp_path / "unscaled.safetensors", torch.float32)


def test_a_missing_file_is_named(tiny_model, tmp_path):
    engine = Engine(Settings(model=str(tiny_model), transformer_file=str(tmp_path / "nowhere.gguf")))
    assert not engine.downloaded()
    with pytest.raises(LayerBridgeError, match="nowhere.gguf does not exist"):
        engine.load()


def test_hub_addresses_are_parsed():
    assert transformer_file.hub_location(
        "https://huggingface.co/Comfy-Org/Qwen-Image-Layered_ComfyUI/blob/main/split_files/diffusion_models/x_fp8.safetensors"
    ) == ("Comfy-Org/Qwen-Image-Layered_ComfyUI", "main", "split_files/diffusion_models/x_fp8.safetensors")
    assert transformer_file.hub_location("https://huggingface.co/a/b/resolve/abc123/q.gguf") == ("a/b", "abc123", "q.gguf")
    assert transformer_file.hub_location("/models/q.gguf") is None


class Hub:
    """huggingface_hub's calls the download makes, as documented (`HfApi.model_info(files_metadata=True)` lists
    `siblings` with `rfilename` and `size`; `snapshot_download(repo, ignore_patterns=…)` and `hf_hub_download(repo,
    filename, revision=…)` return local paths), for a Hub this machine cannot reach. Files are written as they
    would land, so the byte progress reads real files."""

    FILES = {
        "model_index.json": 1_000,
        "transformer/config.json": 1_000,
        "transformer/diffusion_pytorch_model.safetensors.index.json": 100_000,
        "transformer/diffusion_pytorch_model-00001-of-00009.safetensors": 4_900_000,
        "transformer/diffusion_pytorch_model-00009-of-00009.safetensors": 1_100_000,
        "text_encoder/model-00001-of-00004.safetensors": 3_900_000,
        "vae/diffusion_pytorch_model.safetensors": 250_000,
    }

    def __init__(self, cache: Path):
        self.cache = cache
        self.snapshots: list[dict] = []

    def model_info(self, repo, revision=None, files_metadata=False):
        from types import SimpleNamespace

        files = self.FILES if repo == "Qwen/Qwen-Image-Layered" else {"q4.gguf": 2_000_000}
        return SimpleNamespace(siblings=[SimpleNamespace(rfilename=n, size=s) for n, s in files.items()])

    def _land(self, repo: str, sizes: dict[str, int]) -> Path:
        folder = self.cache / ("models--" + repo.replace("/", "--"))
        blobs, snapshot = folder / "blobs", folder / "snapshots" / "0123abcd"
        blobs.mkdir(parents=True, exist_ok=True)
        for name, size in sizes.items():
            (blobs / name.replace("/", "_")).write_bytes(b"\0" * size)
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            (snapshot / name).write_bytes(b"")
        return snapshot

    def snapshot_download(self, repo, ignore_patterns=None, local_files_only=False):
        import fnmatch

        self.snapshots.append({"repo": repo, "ignore_patterns": ignore_patterns})
        kept = {n: s for n, s in self.FILES.items() if not any(fnmatch.fnmatch(n, p) for p in ignore_patterns or [])}
        return str(self._land(repo, kept))

    def hf_hub_download(self, repo, filename, revision=None, local_files_only=False):
        return str(self._land(repo, {filename: 2_000_000}) / filename)


def test_download_leaves_out_the_models_transformer_where_a_file_replaces_it(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    hub = Hub(tmp_path / "hub")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub.cache))
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: hub)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub.hf_hub_download)

    seen: list[tuple[int, int]] = []
    download.fetch("Qwen/Qwen-Image-Layered", lambda d, t: seen.append((d, t)), skip_transformer=True)
    ignored = hub.snapshots[-1]["ignore_patterns"]
    total = seen[-1][1]
    # the transformer's weights (6 MB here, 41 GB for real) are neither fetched nor counted; its config and index are
    assert total == 1_000 + 1_000 + 100_000 + 3_900_000 + 250_000 and seen[-1][0] == total
    assert all(download._ignored(n, ignored) == (n.startswith("transformer/") and n.endswith(".safetensors"))
               for n in Hub.FILES)

    download.fetch("Qwen/Qwen-Image-Layered", lambda d, t: seen.append((d, t)))
    assert hub.snapshots[-1]["ignore_patterns"] is None and seen[-1][1] == sum(Hub.FILES.values())

    got = download.fetch_file("someone/gguf", "main", "q4.gguf", lambda d, t: seen.append((d, t)))
    assert got.name == "q4.gguf" and seen[-1] == (2_000_000, 2_000_000)
    with pytest.raises(LayerBridgeError, match="no file someone/gguf/q5.gguf"):
        download.fetch_file("someone/gguf", "main", "q5.gguf")


def header_only_fp8_file(path: Path, fp8_gib: float, bf16_gib: float) -> Path:
    """A safetensors file as an FP8 transformer's header describes it: `fp8_gib` of F8_E4M3 matrices, `bf16_gib` of
    BF16 vectors. The plan reads only the header, so the data is left out."""
    fp8 = int(fp8_gib * 2**30) // 3072
    bf16 = int(bf16_gib * 2**30) // 2
    header = {"m.weight": {"dtype": "F8_E4M3", "shape": [fp8, 3072], "data_offsets": [0, fp8 * 3072]},
              "m.bias": {"dtype": "BF16", "shape": [bf16], "data_offsets": [fp8 * 3072, fp8 * 3072 + 2 * bf16]}}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


@pytest.mark.parametrize(
    "gib, capability, ram_gib, quantize, mode, fp8, kept",
    [
        (24, (8, 6), 64, "auto", MemoryMode.host_offload, False, True),  # RTX 3090: the file's FP8, bf16 products
        (24, (8, 9), 64, "auto", MemoryMode.host_offload, True, False),  # RTX 4090: FP8 activations added
        (24, (8, 9), 48, "auto", MemoryMode.host_offload, True, False),  # RAM for 20 GiB, not 41
        (24, (8, 9), 32, "auto", MemoryMode.model_offload, True, False),
        (24, (8, 9), 64, "none", MemoryMode.host_offload, False, True),  # exact to the file's weights
        (24, (8, 6), 64, "fp8", MemoryMode.host_offload, False, True),  # asked for, no FP8 units: said why
        (16, (8, 6), 64, "auto", MemoryMode.group_offload, False, False),  # streamed: widened at load
        (80, (9, 0), 128, "auto", MemoryMode.gpu, True, False),
    ],
)
def test_plan_for_an_fp8_file_keeps_its_weights_fp8(tmp_path, monkeypatch, gib, capability, ram_gib, quantize, mode,
                                                     fp8, kept):
    monkeypatch.setattr("backend.model.device._has_torchao", lambda: True)
    monkeypatch.setattr("backend.model.plan.host_ram_bytes", lambda: ram_gib * 2**30)
    path = header_only_fp8_file(tmp_path / "qwen_image_layered_fp8_scaled.safetensors", 19.0, 0.05)
    assert component_bytes("Qwen/Qwen-Image-Layered", str(path))["transformer"] / 2**30 == pytest.approx(19.05, abs=0.01)
    device = DeviceInfo("cuda", "GPU", gib * 2**30, int((gib - 0.5) * 2**30), capability)
    choice = plan(device, "Qwen/Qwen-Image-Layered", "auto", quantize, transformer_file=str(path))
    assert (choice.mode, choice.fp8, choice.fp8_file_weights, choice.transformer_int8) == (mode, fp8, kept, False), \
        choice.reason
    assert "transformer from an FP8 file" in choice.reason
    if quantize == "fp8" and not fp8:
        assert "no FP8 units" in choice.reason
    if mode == MemoryMode.group_offload:
        assert "widened to bf16 at load" in choice.reason


def test_an_fp8_files_reason_says_what_of_fp8_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr("backend.model.device._has_torchao", lambda: True)
    monkeypatch.setattr("backend.model.plan.host_ram_bytes", lambda: 64 * 2**30)
    path = str(header_only_fp8_file(tmp_path / "fp8.safetensors", 19.0, 0.05))
    problem = "FP8 failed a check on this card: txt_mlp (12288 → 3072, 6 rows): CUBLAS_STATUS_NOT_SUPPORTED"
    rtx4090 = DeviceInfo("cuda", "RTX 4090", 24 * 2**30, int(23.5 * 2**30), (8, 9), fp8_problem=problem)
    choice = plan(rtx4090, "Qwen/Qwen-Image-Layered", transformer_file=path)
    assert choice.fp8_file_weights and not choice.fp8
    assert f"no FP8 activations: {problem}" in choice.reason and "no FP8 weights" not in choice.reason
    asked = plan(rtx4090, "Qwen/Qwen-Image-Layered", quantize="int8", transformer_file=path)
    assert not asked.transformer_int8
    assert "int8 was asked for, but the file's weights take one byte each" in asked.reason


def test_a_plan_reads_the_files_header_once_and_again_when_the_file_changes(tmp_path, monkeypatch):
    from backend.model import transformer_file

    monkeypatch.setattr("backend.model.device._has_torchao", lambda: True)
    monkeypatch.setattr("backend.model.transformer_file.has_torchao", lambda: True)
    path = header_only_fp8_file(tmp_path / "fp8.safetensors", 19.0, 0.05)
    device = DeviceInfo("cuda", "GPU", 24 * 2**30, int(23.5 * 2**30), (8, 6))
    transformer_file._read_header.cache_clear()
    assert plan(device, "Qwen/Qwen-Image-Layered", transformer_file=str(path)).fp8_file_weights
    assert transformer_file._read_header.cache_info().misses == 1  # sized and checked for FP8 from one read
    header_only_fp8_file(path, 30.0, 0.05)  # replaced by a larger file under the same name
    assert transformer_file.memory_bytes(path) / 2**30 == pytest.approx(30.05, abs=0.01)
    assert transformer_file._read_header.cache_info().misses == 2


def test_an_fp8_file_streamed_is_widened_and_with_fp8_activations_is_requantised(tiny_model, tmp_path, monkeypatch,
                                                                               fp8_on_cpu):
    from backend.model.plan import MemoryChoice

    path = tmp_path / "fp8.safetensors"
    write_comfy_fp8(tiny_model, path)
    monkeypatch.setattr("backend.model.loading.probe_device", lambda: DeviceInfo("cpu", "CPU"))
    monkeypatch.setattr("backend.model.loading.model_dtype", lambda device: torch.bfloat16)  # as on a GPU: FP8 needs bf16
    kinds = {}
    for label, choice in (("streamed", MemoryChoice(MemoryMode.group_offload, "test")),
                          ("fp8", MemoryChoice(MemoryMode.cpu, "test", fp8=True))):
        monkeypatch.setattr(Engine, "_plan", lambda self, d, choice=choice: choice)
        engine = Engine(Settings(model=str(tiny_model), transformer_file=str(path)))
        engine.load()
        linears = [m.weight for m in engine.pipe.transformer.modules() if isinstance(m, torch.nn.Linear)]
        kinds[label] = {type(w).__name__ for w in linears}
        assert torch.isfinite(run(engine)).all()
    assert kinds["streamed"] == {"Parameter"}  # plain weights for the streaming hooks
    # FP8 weights and activations (torchao's dynamic config), from the file's values widened one layer at a time
    fp8_weights = [w for m in engine.pipe.transformer.modules() if isinstance(m, torch.nn.Linear) for w in [m.weight]]
    assert kinds["fp8"] == {"Float8Tensor"} and all(w.act_quant_kwargs is not None for w in fp8_weights)
