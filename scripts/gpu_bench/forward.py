"""Phases on one transformer forward: its FLOPs (counted on the meta device, no weights, no GPU) and each attention
backend's time."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import numpy as np

from backend.core.options import PRESETS

# Dense (no sparsity) tensor-core peaks in TFLOP/s, keyed by a substring of torch.cuda.get_device_name; the first match
# wins, so the PCIe H100 comes before the SXM one.
PEAK_TFLOPS = {
    "H100 PCIe": {"bf16": 756.5, "fp8": 1513.0},
    "H100": {"bf16": 989.4, "fp8": 1978.9},
    "H200": {"bf16": 989.4, "fp8": 1978.9},
}
CAPTION_TOKENS = {"short": 150, "worst": PRESETS["best"].caption_tokens}  # a typical automatic caption; Best's longest
# The prompt template's tokens after the prompt in Qwen2.5's tokenizer: <|im_end|> \n <|im_start|> assistant \n
TEMPLATE_SUFFIX_TOKENS = 5
MAX_SEQUENCE_LENGTH = 512  # QwenImageLayeredPipeline's default: the text embeddings are cut to this length
BEST_STEPS = PRESETS["best"].steps
# diffusers' attention backends timed by the attention phase, with the package each needs beyond PyTorch
ATTENTION_BACKENDS = {
    "native": None, "_native_cudnn": None, "_native_flash": None, "_native_efficient": None,
    "flash": "flash_attn", "_flash_3": "flash_attn_interface", "sage": "sageattention",
}
_tiny_pipeline: Any = None


class _Captured(Exception):
    """Stops the pipeline once the transformer's inputs are recorded."""


def peaks(card: str) -> dict[str, dict[str, float]]:
    """The dense peaks of this card, or of the H100 and H200 when it is none of the table's (the CPU)."""
    for key, peak in PEAK_TFLOPS.items():
        if key in card:
            return {key: peak}
    return {key: PEAK_TFLOPS[key] for key in ("H100", "H200")}


def pipeline_inputs(image: np.ndarray, resolution: int, layers: int) -> list[dict[str, Any]]:
    """The kwargs QwenImageLayeredPipeline passes to its transformer on the first step, conditional then CFG's
    unconditional pass (negative prompt " "), recorded from the tiny pipeline on the CPU."""
    import torch
    from PIL import Image

    from backend.model.tiny_model import build_tiny_pipeline

    global _tiny_pipeline
    if _tiny_pipeline is None:
        with torch.device("cpu"):
            _tiny_pipeline = build_tiny_pipeline(seed=0)
        _tiny_pipeline.set_progress_bar_config(disable=True)
        encode, encoded = _tiny_pipeline.vae.encode, {}

        def encode_once(x: Any, *args: Any, **kwargs: Any) -> Any:
            """The same image at the same size encodes once (counts for several layer counts)."""
            key = (tuple(x.shape), hashlib.sha1(x.detach().float().cpu().numpy().tobytes()).hexdigest())
            if key not in encoded:
                encoded[key] = encode(x, *args, **kwargs)
            return encoded[key]

        _tiny_pipeline.vae.encode = encode_once
    pipe = _tiny_pipeline
    transformer = pipe.transformer
    calls: list[dict[str, Any]] = []

    def grab(**kwargs: Any) -> tuple:
        """Stands in for the transformer's forward: records, and answers zeros of the output's shape."""
        calls.append(kwargs)
        if len(calls) == 2:
            raise _Captured()
        hidden = kwargs["hidden_states"]
        channels = transformer.config.patch_size**2 * transformer.config.out_channels
        return (hidden.new_zeros(*hidden.shape[:2], channels),)

    transformer.forward = grab
    try:
        pipe(image=Image.fromarray(image, "RGBA"), prompt="a poster", negative_prompt=" ", true_cfg_scale=4.0,
             layers=layers, resolution=resolution, num_inference_steps=2,
             generator=torch.Generator(device="cpu").manual_seed(0), output_type="np")
    except _Captured:
        pass
    finally:
        del transformer.forward  # back to the class's method
    if len(calls) != 2:
        raise RuntimeError(f"the pipeline called its transformer {len(calls)} times on the first step, not 2")
    return calls


def meta_inputs(captured: dict[str, Any], config: Any, text_tokens: int | None = None) -> dict[str, Any]:
    """Recorded transformer kwargs as meta tensors for a transformer of `config`: the image tokens and shapes as
    recorded, `text_tokens` text embeddings (default: as recorded), the channels the config asks for."""
    import torch

    kwargs = {k: v.to("meta") if torch.is_tensor(v) else v for k, v in captured.items()}
    batch, image_tokens, _ = captured["hidden_states"].shape
    text = captured["encoder_hidden_states"].shape[1] if text_tokens is None else text_tokens
    dtype = torch.bfloat16
    kwargs["hidden_states"] = torch.empty(batch, image_tokens, config["in_channels"], device="meta", dtype=dtype)
    kwargs["encoder_hidden_states"] = torch.empty(batch, text, config["joint_attention_dim"], device="meta", dtype=dtype)
    if captured.get("encoder_hidden_states_mask") is not None:  # None when every prompt token is real (batch of one)
        kwargs["encoder_hidden_states_mask"] = torch.ones(batch, text, device="meta",
                                                          dtype=captured["encoder_hidden_states_mask"].dtype)
    return kwargs


def count_flops(config: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """FLOPs of one forward of a transformer of `config` on meta tensors (no memory, no GPU), counted by
    FlopCounterMode (matmul-type ops only; elementwise work is not counted). Attention is what is counted inside
    scaled_dot_product_attention, checked against 4·B·H·Lq·Lk·D."""
    import torch
    import torch.nn.functional as F
    from diffusers import QwenImageTransformer2DModel
    from torch.utils.flop_counter import FlopCounterMode

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            transformer = QwenImageTransformer2DModel.from_config(dict(config)).eval()
    finally:
        torch.set_default_dtype(previous)
    counter = FlopCounterMode(display=False)
    attention = {"counted": 0, "analytic": 0, "calls": 0}
    sdpa = F.scaled_dot_product_attention

    def counted_sdpa(query: Any, key: Any, value: Any, *args: Any, **kw: Any) -> Any:
        before = counter.get_total_flops()
        out = sdpa(query, key, value, *args, **kw)
        attention["counted"] += counter.get_total_flops() - before
        b, h, lq, d = query.shape
        attention["analytic"] += 2 * b * h * lq * key.shape[-2] * (d + value.shape[-1])  # QK^T and AV
        attention["calls"] += 1
        return out

    F.scaled_dot_product_attention = counted_sdpa
    try:
        with torch.no_grad(), counter:
            transformer(**kwargs)
    finally:
        F.scaled_dot_product_attention = sdpa
    ops = {str(op): int(n) for op, n in counter.get_flop_counts()["Global"].items()}
    total = counter.get_total_flops()
    if attention["counted"]:
        attn = attention["counted"]
        inside = sorted({op for op in ops if "attention" in op or "bmm" in op})
        note = f"counted inside scaled_dot_product_attention (on meta: {', '.join(inside)})"
        if attn != attention["analytic"]:
            note += f"; 4·B·H·Lq·Lk·D gives {attention['analytic']}"
    else:  # the counter saw no op inside SDPA: attention by the formula
        attn = attention["analytic"]
        total += attn
        note = "FlopCounterMode counted nothing inside scaled_dot_product_attention: 4·B·H·Lq·Lk·D"
    return {"flops": int(total), "attention_flops": int(attn), "rest_flops": int(total - attn),
            "attention_calls": attention["calls"], "attention_note": note, "ops": ops}


class ForwardPhases:
    """Mixed into the runner's Bench: uses its record(), job inputs and pipeline."""

    def _flops(self, config: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """count_flops, once per configuration and input shapes."""
        key = (json.dumps({k: v for k, v in dict(config).items() if not k.startswith("_")}, sort_keys=True, default=str),
               tuple(kwargs["hidden_states"].shape), tuple(kwargs["encoder_hidden_states"].shape),
               json.dumps(kwargs.get("img_shapes"), default=str))
        if key not in self.flops:
            self.flops[key] = count_flops(config, kwargs)
        return self.flops[key]

    def phase_flops(self) -> None:
        """FLOPs of one transformer forward (meta device: no weights, no GPU) with the inputs the pipeline passes,
        for a short and the longest caption and for CFG's negative prompt; then Best's 50 steps x 2 passes."""
        from backend.model.tiny_model import FULL, TINY

        config = (FULL if self.args.arch == "full" else TINY)["transformer"]
        t = time.monotonic()
        cond, uncond = pipeline_inputs(self.image, self.args.resolution, self.args.layers)
        frames = cond["img_shapes"][0]
        shape = {
            "arch": self.args.arch, "resolution": self.args.resolution, "layers": self.args.layers,
            "source": f"{self.args.width}x{self.args.height}",
            "bucket": f"{frames[0][2] * 16}x{frames[0][1] * 16}",
            "frames": len(frames), "image_tokens": int(cond["hidden_states"].shape[1]),
        }
        negative_tokens = int(uncond["encoder_hidden_states"].shape[1])
        cases = [(f"cond-{name}", tokens, min(tokens + TEMPLATE_SUFFIX_TOKENS, MAX_SEQUENCE_LENGTH))
                 for name, tokens in CAPTION_TOKENS.items()]
        cases.append(("uncond", None, negative_tokens))
        per_forward: dict[str, int] = {}
        for name, caption, text in cases:
            captured = uncond if name == "uncond" else cond
            counted = self._flops(config, meta_inputs(captured, config, text))
            per_forward[name] = counted["flops"]
            self.record({
                "phase": "flops", "pass": name, **shape,
                "prompt": "negative prompt \" \"" if caption is None else f"{caption}-token caption",
                "text_tokens": text,
                **({"text_tokens_before_cut": caption + TEMPLATE_SUFFIX_TOKENS}
                   if caption is not None and caption + TEMPLATE_SUFFIX_TOKENS > text else {}),
                "tflop": round(counted["flops"] / 1e12, 3),
                "attention_tflop": round(counted["attention_flops"] / 1e12, 3),
                "rest_tflop": round(counted["rest_flops"] / 1e12, 3),
                "attention_share": round(counted["attention_flops"] / counted["flops"], 3),
                **counted,
            })
        for name in CAPTION_TOKENS:
            total = BEST_STEPS * (per_forward[f"cond-{name}"] + per_forward["uncond"])
            self.record({
                "phase": "flops-best", **shape, "caption": name, "steps": BEST_STEPS, "forwards": 2 * BEST_STEPS,
                "flops": total, "pflop": round(total / 1e15, 2),
                "seconds_at_peak": {f"{card} {kind}": round(total / (tflops * 1e12), 2)
                                    for card, peak in peaks(self.card).items() for kind, tflops in peak.items()},
                "peak_tflops": peaks(self.card),
            })
        self.record({"phase": "flops-done", "seconds": round(time.monotonic() - t, 1)})

    def _transformer_inputs(self, prompt: str) -> dict[str, Any]:
        """The kwargs the engine's pipeline passes to the transformer on a job's first (conditional) call; the job is
        stopped there."""
        from backend.model.engine import JobCancelled
        from backend.core.job import JobParams

        captured: dict[str, Any] = {}

        def grab(module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
            captured.update(kwargs)
            raise JobCancelled()

        params = JobParams.parse({"layers": self.args.layers, "resolution": self.args.resolution, "seed": 1234,
                                  "preset": "best", "steps": 2, "prompt": prompt})
        handle = self.pipe.transformer.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            self.engine.run(self.image, params, lambda p: None, lambda: False)
        except JobCancelled:
            pass
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError("the job never called the transformer")
        return captured

    def phase_attention(self) -> None:
        """One transformer forward with each attention backend that runs here: 2 warm-ups, 3 timed."""
        import importlib

        from diffusers.models.attention_dispatch import _AttentionBackendRegistry

        if not self.needs_pipeline("attention"):
            self.record({"phase": "attention", "skipped": "no GPU"})
            return
        torch = self.torch
        if self.cuda and self.engine.memory.mode.value != "gpu":
            self._place("gpu")
        transformer = self.pipe.transformer
        kwargs = self._transformer_inputs("a poster")
        counted = self._flops(transformer.config, meta_inputs(kwargs, transformer.config))
        base = {"phase": "attention", "resolution": self.args.resolution, "layers": self.args.layers,
                "image_tokens": int(kwargs["hidden_states"].shape[1]),
                "text_tokens": int(kwargs["encoder_hidden_states"].shape[1]), "fp8": self.fp8,
                "compiled": self.compiled, "tflop_per_forward": round(counted["flops"] / 1e12, 3)}
        original, active = self.engine.attention, _AttentionBackendRegistry._active_backend
        reference = None
        try:
            for name, package in ATTENTION_BACKENDS.items():
                row = {**base, "backend": name}
                if not self.cuda and name != "native":
                    self.record({**row, "skipped": "needs CUDA"})
                    continue
                if package is not None:
                    try:
                        importlib.import_module(package)
                    except Exception as exc:
                        self.record({**row, "skipped": f"{package} does not import: {type(exc).__name__}"})
                        continue
                try:
                    transformer.set_attention_backend(name)
                    with torch.no_grad():
                        for _ in range(2):
                            transformer(**kwargs)
                        if self.cuda:
                            torch.cuda.synchronize()
                        t = time.monotonic()
                        for _ in range(3):
                            out = transformer(**kwargs)[0]
                        if self.cuda:
                            torch.cuda.synchronize()
                    seconds = (time.monotonic() - t) / 3
                except Exception as exc:  # a backend that cannot run these shapes or this card
                    self.record({**row, "error": f"{type(exc).__name__}: {exc}"[:300]})
                    continue
                out = out.float()
                if name == "native":
                    reference = out
                row.update({"s_per_forward": round(seconds, 4),
                            "tflops": round(counted["flops"] / seconds / 1e12, 1),
                            "finite": bool(torch.isfinite(out).all())})
                if reference is not None:
                    row["deviation_vs_native"] = round(float((out - reference).norm() / reference.norm()), 5)
                self.record(row)
        finally:
            if original:
                transformer.set_attention_backend(original)
            else:
                transformer.reset_attention_backend()
            _AttentionBackendRegistry.set_active_backend(active)
