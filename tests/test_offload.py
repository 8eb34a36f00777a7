"""Host offload on the tiny pipeline: one component placed at a time, no copy on the way back, same results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.model.engine import Engine
from backend.core.job import JobParams
from backend.model.device import DeviceInfo
from backend.model.plan import MemoryMode, plan
from backend.model.offload import HostOffload
from backend.core.settings import Settings

IMG = np.random.default_rng(9).integers(0, 256, (40, 56, 4), dtype=np.uint8)
FAST = {"layers": 2, "preset": "fast", "steps": 4, "seed": 5, "prompt": ""}


@pytest.fixture()
def engine(tiny_model):
    e = Engine(Settings(model=str(tiny_model)))
    e.load()
    yield e
    if e.offload is not None:
        e.offload.remove()


def run(engine: Engine) -> torch.Tensor:
    engine._captions.clear()
    engine.run(IMG, JobParams.parse(FAST), lambda p: None, lambda: False)
    return engine.last_latents.clone()


def test_one_component_at_a_time_and_back_to_the_host_copy_without_a_copy(engine):
    pipe = engine.pipe
    before = {name: p.detach().clone() for name, p in pipe.transformer.named_parameters()}
    offload = HostOffload(pipe, "meta")  # the meta device drops data: only host copies can bring it back
    engine.offload = offload
    host = offload.host["transformer"]

    offload.onload("transformer")
    assert {p.device.type for p in pipe.transformer.parameters()} == {"meta"}
    assert {p.device.type for p in pipe.vae.parameters()} == {"cpu"}
    offload.onload("vae")
    assert {p.device.type for p in pipe.vae.parameters()} == {"meta"}
    for name, p in pipe.transformer.named_parameters():
        assert p.device.type == "cpu" and p.data_ptr() == host[name].data_ptr(), name
        assert torch.equal(p, before[name]), name
    assert offload.current == "vae" and pipe._execution_device == torch.device("meta")
    assert offload.weight_bytes() == sum(t.untyped_storage().nbytes() for s in offload.host.values() for t in s.values())

    offload.remove()
    engine.offload = None
    assert all(not hasattr(m, "_hf_hook") for m in (pipe.transformer, pipe.vae, pipe.text_encoder))
    assert {p.device.type for p in pipe.vae.parameters()} == {"cpu"}


def test_jobs_place_each_component_when_it_runs_and_give_the_same_latents(engine, monkeypatch):
    plain = run(engine)
    offload = HostOffload(engine.pipe, "cpu")
    engine.offload = offload
    placed: list[str] = []
    onload = offload.onload

    def recording(name: str) -> None:
        if offload.current != name:
            placed.append(name)
        onload(name)

    monkeypatch.setattr(offload, "onload", recording)
    first = run(engine)
    assert placed == ["text_encoder", "vae", "transformer", "vae"]  # caption, encode, denoise, decode
    # Fast's late-CFG skip wraps the transformer's forward for the job: the offload hook must survive it
    assert getattr(vars(engine.pipe.transformer).get("forward"), "func", None) is not None
    placed.clear()
    second = run(engine)
    assert placed == ["text_encoder", "vae", "transformer", "vae"]
    assert torch.equal(first, plain) and torch.equal(second, plain)
    # a job that names its layers brings the text encoder back after decoding
    placed.clear()
    engine.run(IMG, JobParams.parse(dict(FAST, preset="best", steps=2)), lambda p: None, lambda: False)
    assert placed == ["text_encoder", "vae", "transformer", "vae", "text_encoder"]


@pytest.mark.parametrize("gib, cap, fp8", [(24, (8, 9), True), (48, (8, 9), False), (24, (8, 6), False)])
def test_host_offload_plan_takes_fp8_where_the_transformer_does_not_fit(gib, cap, fp8, monkeypatch):
    monkeypatch.setattr("backend.model.plan.has_triton", lambda: True)
    monkeypatch.setattr("backend.model.plan.host_ram_bytes", lambda: 128 * 2**30)
    device = DeviceInfo("cuda", "GPU", gib * 2**30, int((gib - 0.5) * 2**30), cap)
    choice = plan(device, "Qwen/Qwen-Image-Layered", "host_offload", "auto", "auto")
    assert (choice.mode, choice.fp8, choice.compile) == (MemoryMode.host_offload, fp8, True), choice.reason
    assert plan(device, "Qwen/Qwen-Image-Layered", "host_offload", "none", "auto").fp8 is False


@torch.no_grad()
def dequantized(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    def plain(p: torch.Tensor) -> torch.Tensor:
        return p.dequantize() if type(p) is not torch.nn.Parameter else p

    return {n: plain(p).float().clone() for n, p in module.named_parameters()}


def test_fp8_staged_layer_by_layer_equals_quantising_the_whole_transformer(engine, fp8_on_cpu):
    import copy

    from backend.model.quantize import enable_fp8

    transformer = engine.pipe.transformer.to(torch.bfloat16)
    whole = copy.deepcopy(transformer)
    enable_fp8(whole)
    enable_fp8(transformer, staging="cpu")
    kinds = {type(p).__name__ for p in transformer.parameters()}
    assert any(kind != "Parameter" for kind in kinds), kinds  # some weights really are FP8 tensors now
    staged, reference = dequantized(transformer), dequantized(whole)
    assert staged.keys() == reference.keys()
    for name in reference:
        assert torch.equal(staged[name], reference[name]), name


def test_fp8_scales_per_row_for_the_image_stream_only(engine, fp8_on_cpu):
    from backend.model.quantize import enable_fp8

    transformer = engine.pipe.transformer.to(torch.bfloat16)
    enable_fp8(transformer, staging="cpu")
    scales = {name: m.weight.scale.numel() for name, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)}
    block = "transformer_blocks.0."
    for name in ("attn.to_q", "attn.to_out.0", "img_mlp.net.0.proj", "img_mlp.net.2"):
        assert scales[block + name] == transformer.get_submodule(block + name).out_features > 1, name
    for name in ("txt_mlp.net.2", "txt_mlp.net.0.proj", "attn.add_q_proj", "attn.to_add_out", "img_mod.1"):
        assert scales[block + name] == 1, name
    assert scales["img_in"] > 1 and scales["proj_out"] > 1 and scales["txt_in"] == 1 and scales["norm_out.linear"] == 1


def cublaslt_rowwise(monkeypatch) -> None:
    """torch's FP8 product as cuBLASLt runs it on Hopper with CUDA 13: no per-row kernel for a few rows against a long
    inner dimension (measured on an H200: 12,288 inputs with 1 or 6 rows fail, 300 run); here 128 inputs are long."""
    real = torch._scaled_mm

    def scaled_mm(a, b, *args, **kwargs):
        scale_b = kwargs.get("scale_b", args[1] if len(args) > 1 else None)  # the weight's: one per output if per row
        if scale_b is not None and scale_b.numel() > 1 and a.shape[0] < 257 and a.shape[1] >= 128:
            raise RuntimeError("CUDA error: CUBLAS_STATUS_NOT_SUPPORTED when calling `cublasLtMatmulAlgoGetHeuristic`")
        return real(a, b, *args, **kwargs)

    monkeypatch.setattr(torch, "_scaled_mm", scaled_mm)


def test_fp8_kernel_check_runs_each_shape_with_a_jobs_rows(engine, fp8_on_cpu, monkeypatch):
    from backend.model.quantize import fp8_kernel_check, fp8_kernel_problem, linear_shapes

    cublaslt_rowwise(monkeypatch)
    shapes = linear_shapes(engine.pipe.transformer)
    names = [name for name, _, _ in shapes]
    assert "transformer_blocks.0.txt_mlp.net.2" in names and "transformer_blocks.0.img_mlp.net.2" in names
    assert len(names) == len(set(names)) and not any(name.startswith("transformer_blocks.1.") for name in names)
    rowwise = fp8_kernel_check(shapes, "cpu", lambda name: "row")
    failed = {(c["layer"], c["rows"]) for c in rowwise if "error" in c}
    assert {("transformer_blocks.0.txt_mlp.net.2", 1), ("transformer_blocks.0.txt_mlp.net.2", 6)} <= failed
    assert ("transformer_blocks.0.txt_mlp.net.2", 300) not in failed
    assert not any(layer.startswith("transformer_blocks.0.img_") for layer, _ in failed)  # thousands of rows run
    assert fp8_kernel_problem(shapes, "cpu") is None  # the server's scales: per-tensor where rows are few

    monkeypatch.setattr("backend.model.quantize.fp8_granularity", lambda name: "row")
    problem = fp8_kernel_problem(shapes, "cpu")
    assert problem and "CUBLAS_STATUS_NOT_SUPPORTED" in problem and "rows" in problem


def test_plan_goes_without_fp8_where_its_kernels_fail(monkeypatch):
    monkeypatch.setattr("backend.model.device._has_torchao", lambda: True)
    monkeypatch.setattr("backend.model.plan.host_ram_bytes", lambda: 64 * 2**30)
    device = DeviceInfo("cuda", "GPU", 24 * 2**30, int(23.5 * 2**30), (8, 9))
    choice = plan(device, "Qwen/Qwen-Image-Layered", "auto", "auto", "auto")
    assert (choice.mode, choice.fp8) == (MemoryMode.host_offload, True), choice.reason
    device.fp8_problem = "FP8 failed a check: txt_mlp (12288 → 3072, 6 rows): CUBLAS_STATUS_NOT_SUPPORTED"
    choice = plan(device, "Qwen/Qwen-Image-Layered", "auto", "auto", "auto")
    # without FP8, the transformer still fits whole in int8 weights, which need no FP8 kernel
    assert (choice.mode, choice.fp8, choice.transformer_int8) == (MemoryMode.host_offload, False, True), choice.reason
    assert device.fp8_problem in choice.reason
    choice = plan(device, "Qwen/Qwen-Image-Layered", "host_offload", "fp8", "auto")
    assert not choice.fp8 and device.fp8_problem in choice.reason


def test_quantised_weights_go_back_to_their_host_copies(engine, fp8_on_cpu):
    from backend.model.quantize import enable_fp8, enable_int8

    pipe = engine.pipe
    enable_fp8(pipe.transformer.to(torch.bfloat16), staging="cpu")
    enable_int8(pipe.text_encoder)
    before = {name: dequantized(getattr(pipe, name)) for name in ("transformer", "text_encoder")}
    types = {name: {n: type(p) for n, p in getattr(pipe, name).named_parameters()} for name in before}
    offload = HostOffload(pipe, "meta")
    engine.offload = offload
    for name in ("transformer", "text_encoder", "vae"):
        offload.onload(name)
        assert {p.device.type for p in getattr(pipe, name).parameters()} == {"meta"}
    for name in before:  # both were placed and taken off again: back on their host copies, types and values
        module = getattr(pipe, name)
        assert {n: type(p) for n, p in module.named_parameters()} == types[name]
        after = dequantized(module)
        assert all(torch.equal(after[n], before[name][n]) for n in after), name


def test_small_card_streams_the_transformer_and_places_an_int8_text_encoder_whole(engine, monkeypatch):
    """The 16 GB plan: text encoder in int8, on the GPU (here the CPU) while it runs, taken off before the
    transformer, whose layers are streamed by diffusers' group offloading."""
    pytest.importorskip("torchao")
    from diffusers.hooks.group_offloading import _get_top_level_group_offload_hook

    from backend.model.placement import apply_mode

    pipe = engine.pipe
    bf16_caption = engine.run(IMG, JobParams.parse(FAST), lambda p: None, lambda: False).caption
    assert bf16_caption
    offload = apply_mode(pipe, MemoryMode.group_offload, DeviceInfo("cpu", "CPU"), text_encoder_int8=True)
    engine.offload = offload
    assert any(type(p) is not torch.nn.Parameter for p in pipe.text_encoder.parameters())  # int8 weights
    assert _get_top_level_group_offload_hook(pipe.transformer) is not None
    events: list[str] = []
    onload, release = offload.onload, offload.offload

    def recording_onload(name: str) -> None:
        if offload.current != name:
            events.append(f"on:{name}")
        onload(name)

    def recording_release() -> None:
        if offload.current is not None:
            events.append(f"off:{offload.current}")
        release()

    monkeypatch.setattr(offload, "onload", recording_onload)
    monkeypatch.setattr(offload, "offload", recording_release)
    for _ in range(2):  # the second job places the text encoder again
        events.clear()
        engine._captions.clear()
        result = engine.run(IMG, JobParams.parse(FAST), lambda p: None, lambda: False)
        assert events == ["on:text_encoder", "off:text_encoder"]  # placed for the caption, gone before denoising
        assert torch.isfinite(engine.last_latents).all() and result.caption and len(result.layers) == 2


@pytest.mark.parametrize(
    "gib, quantize, torchao, int8",
    [(16, "auto", True, True), (16, "none", True, False), (16, "auto", False, False), (12, "auto", True, False)],
)
def test_small_card_plan_takes_the_int8_text_encoder_where_it_fits(gib, quantize, torchao, int8, monkeypatch):
    monkeypatch.setattr("backend.model.device._has_torchao", lambda: torchao)
    device = DeviceInfo("cuda", "GPU", gib * 2**30, int((gib - 0.8) * 2**30), (8, 6))
    choice = plan(device, "Qwen/Qwen-Image-Layered", "auto", quantize, "auto")
    assert choice.mode == MemoryMode.group_offload and choice.text_encoder_int8 is int8, choice.reason
    assert choice.to_json()["text_encoder_int8"] is int8


@pytest.mark.parametrize(
    "transformer_gib, ram_gib, mode",
    [(10.7, 64, MemoryMode.host_offload), (10.7, 16, MemoryMode.group_offload), (20.2, 64, MemoryMode.group_offload)],
)
def test_small_card_places_a_small_transformer_whole_beside_the_int8_text_encoder(
    tmp_path, monkeypatch, transformer_gib, ram_gib, mode
):
    """16 GB card: a 4-bit GGUF transformer (10.7 GiB) and the int8 text encoder (9.3 GiB) each fit by themselves, so
    nothing is streamed, where RAM holds both; a Q8_0 one (20.2 GiB) does not fit and is streamed."""
    monkeypatch.setattr("backend.model.device._has_torchao", lambda: True)
    monkeypatch.setattr("backend.model.plan.host_ram_bytes", lambda: ram_gib * 2**30)
    gguf = tmp_path / "qwen-image-layered.gguf"
    with open(gguf, "wb") as f:
        f.truncate(int(transformer_gib * 2**30))  # sparse: only its size is read
    device = DeviceInfo("cuda", "GPU", 16 * 2**30, int(15.2 * 2**30), (8, 9))
    choice = plan(device, "Qwen/Qwen-Image-Layered", transformer_file=str(gguf))
    assert choice.mode == mode and choice.text_encoder_int8 and not choice.fp8, choice.reason
    assert ("nothing streamed" in choice.reason) is (mode == MemoryMode.host_offload)
    # asked for by name, a mode stays as asked
    assert plan(device, "Qwen/Qwen-Image-Layered", "group_offload", transformer_file=str(gguf)).mode == MemoryMode.group_offload


@pytest.mark.parametrize(
    "ram_gib, quantize, pinned",
    [(32, "auto", False), (64, "auto", False), (96, "auto", True), (64, "none", False), (128, "none", True)],
)
def test_small_card_page_locks_the_streamed_weights_only_where_ram_holds_them(ram_gib, quantize, pinned, monkeypatch):
    """Page-locked at load, the streamed transformer takes 60 GiB of RAM (PyTorch rounds each buffer up to a power of
    two), the bf16 text encoder 29 GiB more: with less RAM each group is page-locked as it streams."""
    monkeypatch.setattr("backend.model.device._has_torchao", lambda: True)
    monkeypatch.setattr("backend.model.plan.host_ram_bytes", lambda: ram_gib * 2**30)
    device = DeviceInfo("cuda", "RTX 4080", 16 * 2**30, int(15.2 * 2**30), (8, 9))
    choice = plan(device, "Qwen/Qwen-Image-Layered", "auto", quantize, "auto")
    assert choice.mode == MemoryMode.group_offload and choice.text_encoder_int8 is (quantize == "auto")
    assert choice.pin_streamed is pinned, choice.reason
    need = "76 GiB" if quantize == "auto" else "96 GiB"
    assert (f"page-locked all at once they need about {need} of RAM" in choice.reason) is not pinned, choice.reason


@pytest.mark.parametrize("pin_streamed", [True, False])
def test_group_offload_hooks_page_lock_as_the_plan_says(pin_streamed):
    from diffusers.hooks.group_offloading import _get_top_level_group_offload_hook

    from backend.model.placement import apply_mode, group_offload_options
    from backend.model.tiny_model import build_tiny_pipeline

    cuda = DeviceInfo("cuda", "GPU", 16 * 2**30, 15 * 2**30, (8, 9))
    assert group_offload_options(cuda, pin_streamed)["low_cpu_mem_usage"] is not pin_streamed
    pipe = build_tiny_pipeline()
    apply_mode(pipe, MemoryMode.group_offload, DeviceInfo("cpu", "CPU"), pin_streamed=pin_streamed)
    for component in (pipe.transformer, pipe.vae):
        assert _get_top_level_group_offload_hook(component).config.low_cpu_mem_usage is not pin_streamed


def test_compiled_blocks_are_not_recompiled_when_weights_come_back_from_their_host_copies(engine):
    """Every job re-creates the placed components' parameters (the host copies are assigned back): the compiled
    transformer blocks must not recompile for that."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from backend.model.compile import disable_compile, enable_compile

    engine.offload = HostOffload(engine.pipe, "cpu")
    torch._dynamo.reset()
    counters.clear()
    enable_compile(engine.pipe.transformer)
    params = JobParams.parse({**FAST, "prompt": "a poster", "steps": 2})
    try:
        graphs = []
        for _ in range(3):
            engine.run(IMG, params, lambda p: None, lambda: False)
            graphs.append(counters["stats"]["unique_graphs"])
            assert engine.offload.current == "vae"  # the transformer went back to its host copy
    finally:
        disable_compile(engine.pipe.transformer)
    assert graphs[0] >= 1 and graphs[2] == graphs[0], graphs


@pytest.mark.parametrize("mode", [MemoryMode.group_offload, MemoryMode.host_offload])
def test_an_int8_text_encoder_that_fails_its_check_gives_way_to_the_bf16_one_streamed(tiny_model, monkeypatch, mode):
    pytest.importorskip("torchao")
    from diffusers.hooks.group_offloading import _get_top_level_group_offload_hook

    from backend.model.plan import MemoryChoice

    device = DeviceInfo("cpu", "CPU")
    monkeypatch.setattr(Engine, "_plan", lambda self, d: MemoryChoice(mode, "test", text_encoder_int8=True))
    checked = []

    def failing(pipe):
        checked.append(any(type(p) is not torch.nn.Parameter for p in pipe.text_encoder.parameters()))
        raise RuntimeError("no int8 kernel here")

    monkeypatch.setattr(Engine, "_text_encoder_smoke", staticmethod(failing))
    monkeypatch.setattr("backend.model.loading.probe_device", lambda: device)
    e = Engine(Settings(model=str(tiny_model)))
    e.load()
    te = e.pipe.text_encoder
    assert checked == [True]  # the int8 one was tried
    assert e.memory.text_encoder_int8 is False and "failed its check" in e.memory.reason
    assert all(type(p) is torch.nn.Parameter for p in te.parameters())  # bf16 (float32 here) again
    assert _get_top_level_group_offload_hook(te) is not None  # streamed
    if mode == MemoryMode.group_offload:  # like the transformer
        assert e.offload is None
    else:  # the transformer and the VAE stay placed whole, and leave the GPU before the text encoder runs
        assert set(e.offload.modules) == {"transformer", "vae"} and e.offload.released == [te]
    try:
        result = e.run(IMG, JobParams.parse(FAST), lambda p: None, lambda: False)
        assert result.caption and torch.isfinite(e.last_latents).all()
    finally:
        if e.offload is not None:
            e.offload.remove()


@pytest.mark.parametrize("mode", [MemoryMode.group_offload, MemoryMode.host_offload])
def test_an_int8_text_encoder_that_passes_its_check_is_kept_and_off_the_gpu(tiny_model, monkeypatch, mode):
    pytest.importorskip("torchao")
    from backend.model.plan import MemoryChoice

    monkeypatch.setattr(Engine, "_plan", lambda self, d: MemoryChoice(mode, "test", text_encoder_int8=True))
    monkeypatch.setattr("backend.model.loading.probe_device", lambda: DeviceInfo("cpu", "CPU"))
    e = Engine(Settings(model=str(tiny_model)))
    e.load()
    try:
        assert e.memory.text_encoder_int8 and e.offload is not None and e.offload.current is None
        assert any(type(p) is not torch.nn.Parameter for p in e.pipe.text_encoder.parameters())
        result = e.run(IMG, JobParams.parse(FAST), lambda p: None, lambda: False)
        assert result.caption and torch.isfinite(e.last_latents).all()
    finally:
        e.offload.remove()


@pytest.mark.parametrize(
    "ram_gib, fp8, mode",
    [(64, True, "host_offload"), (32, True, "model_offload"), (64, False, "host_offload"), (48, False, "model_offload")],
)
def test_host_offload_needs_ram_for_every_weight(ram_gib, fp8, mode, monkeypatch):
    monkeypatch.setattr("backend.model.plan.host_ram_bytes", lambda: ram_gib * 2**30)
    monkeypatch.setattr("backend.model.device._has_torchao", lambda: True)
    device = DeviceInfo("cuda", "GPU", 24 * 2**30, int(23.5 * 2**30), (8, 9))
    choice = plan(device, "Qwen/Qwen-Image-Layered", "host_offload", "auto" if fp8 else "none", "auto")
    assert (choice.mode.value, choice.fp8) == (mode, fp8), choice.reason
    if mode == "model_offload":
        assert "needs about" in choice.reason


@pytest.mark.parametrize("ram_gib, mode", [(64, MemoryMode.host_offload), (32, MemoryMode.model_offload)])
def test_auto_keeps_every_weight_in_ram_where_it_fits(ram_gib, mode, monkeypatch):
    monkeypatch.setattr("backend.model.device._has_torchao", lambda: True)
    monkeypatch.setattr("backend.model.plan.host_ram_bytes", lambda: ram_gib * 2**30)
    device = DeviceInfo("cuda", "RTX 4090", 24 * 2**30, int(23.5 * 2**30), (8, 9))
    choice = plan(device, "Qwen/Qwen-Image-Layered", "auto", "auto", "auto")
    assert (choice.mode, choice.fp8) == (mode, True), choice.reason


def test_doctor_runs_the_fp8_kernel_check_with_the_published_shapes(monkeypatch):
    from backend.cli import doctor

    checked: list[list[tuple[str, int, int]]] = []

    def failing(shapes):
        checked.append(shapes)
        return "FP8 failed a check on this card: txt_mlp (12288 → 3072, 6 rows): CUBLAS_STATUS_NOT_SUPPORTED"

    card = DeviceInfo("cuda", "RTX 4090", 24 * 2**30, int(23.5 * 2**30), (8, 9))
    monkeypatch.setattr(doctor, "probe_device", lambda: card)
    monkeypatch.setattr("backend.model.plan.fp8_kernel_problem", failing)
    monkeypatch.setattr("backend.model.device._has_torchao", lambda: True)
    monkeypatch.setattr("backend.model.plan.host_ram_bytes", lambda: 64 * 2**30)
    data = doctor.report(Settings(port=9))
    assert ("transformer_blocks.0.txt_mlp.net.2", 12288, 3072) in checked[0]
    assert data["transformer"] == "int8 weights, products unquantised (bf16 on a GPU)"
    assert data["memory mode"].startswith("host_offload") and "CUBLAS_STATUS_NOT_SUPPORTED" in data["memory mode"]


@pytest.mark.parametrize(
    "memory, quantize, short",
    [
        ("gpu", "auto", "all weights on the GPU need about 61.7 GiB, 23.5 GiB are free"),
        ("host_offload", "none", "the transformer alone needs about 41.1 GiB, 23.5 GiB are free"),
        ("model_offload", "none", "the transformer alone needs about 41.1 GiB, 23.5 GiB are free"),
        ("host_offload", "auto", None),  # FP8 transformer: fits
        ("group_offload", "none", None),  # streamed: fits
    ],
)
def test_a_mode_asked_for_by_name_that_does_not_fit_says_so(memory, quantize, short, monkeypatch):
    monkeypatch.setattr("backend.model.device._has_torchao", lambda: True)
    monkeypatch.setattr("backend.model.plan.host_ram_bytes", lambda: 128 * 2**30)
    rtx4090 = DeviceInfo("cuda", "RTX 4090", 24 * 2**30, int(23.5 * 2**30), (8, 9))
    choice = plan(rtx4090, "Qwen/Qwen-Image-Layered", memory, quantize)
    assert choice.mode.value == memory and choice.reason.startswith("set by the user")
    if short:
        auto = plan(rtx4090, "Qwen/Qwen-Image-Layered", "auto", quantize).mode.value
        assert f"; {short}: expect out_of_memory (--memory auto picks {auto} on this card)" in choice.reason
    else:
        assert "expect out_of_memory" not in choice.reason, choice.reason


def test_quantisation_asked_for_where_it_cannot_apply_says_what_would(tmp_path, monkeypatch):
    monkeypatch.setattr("backend.model.device._has_torchao", lambda: True)
    monkeypatch.setattr("backend.model.plan.host_ram_bytes", lambda: 128 * 2**30)
    rtx3090 = DeviceInfo("cuda", "RTX 3090", 24 * 2**30, int(23.5 * 2**30), (8, 6))
    assert "(--quantize int8 or auto halves the transformer on this card)" in plan(rtx3090, "m", "auto", "fp8").reason
    # --memory cpu on a GPU machine: nothing for the GPU (no FP8, no compilation)
    on_cpu = plan(DeviceInfo("cuda", "H100", 80 * 2**30, 79 * 2**30, (9, 0)), "m", "cpu", "fp8", "on")
    assert (on_cpu.mode, on_cpu.fp8, on_cpu.transformer_int8, on_cpu.compile) == (MemoryMode.cpu, False, False, False)


def test_running_out_of_gpu_memory_at_load_says_in_which_mode_and_what_to_try(tiny_model, monkeypatch):
    from backend.model.engine import ModelState
    from backend.core.errors import ErrorCode, LayerBridgeError
    from backend.model.plan import MemoryChoice

    e = Engine(Settings(model=str(tiny_model)))

    def placing_fails() -> None:
        e.memory = MemoryChoice(MemoryMode.gpu, "set by the user")
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(e, "_load", placing_fails)
    with pytest.raises(LayerBridgeError) as info:
        e.load()
    assert info.value.code == ErrorCode.model_unavailable
    assert info.value.message.startswith("the GPU ran out of memory placing the model in gpu mode (set by the user)")
    assert "--memory host_offload" in info.value.message
    assert e.model_status.state == ModelState.failed and e.model_status.error == info.value.message
