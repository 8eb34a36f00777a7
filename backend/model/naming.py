"""Layer names from the model's own text encoder, a vision-language model (Qwen2.5-VL): each layer, cut to its content
and shown on grey, is named in a few words, as a designer names a layer ("Logo", "Headline", "Coffee cup"). The
background (the model's first layer) keeps its name; a layer with nothing in it, or an answer that is no name, keeps
the plain one ("Layer 2")."""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np
from PIL import Image

NAME_TOKENS = 8  # the longest answer: a name of up to three words fits, a sentence is cut off (and refused)
NAME_SIDE = 336  # px: the long side of the picture the encoder sees (12 of its 28 px patches)
MIN_SIDE = 56  # px: the encoder's smallest picture (two patches a side)
MAX_WORDS = 4
MAX_CHARS = 40
GREY = 128

_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
_END = "<|im_end|>\n<|im_start|>assistant\n"
PROMPTS = {
    "en": _SYSTEM
    + "This picture is one layer cut out of a design, shown on grey. Name what it shows in one to three words, as "
    "a designer names a layer (for example: Logo, Headline, Woman, Coffee cup). Answer with the name only." + _END,
    "zh": _SYSTEM
    + "这张图是从设计稿中抠出的一个图层，显示在灰色背景上。请用一到三个词为它命名，就像设计师给图层命名一样"
    "（例如：标志、标题、女人、咖啡杯）。只回答名称。" + _END,
}

# What a model may wrap a name in: a lead-in, quotes, a closing full stop.
_LEAD_IN = re.compile(r"^(?:layer\s+name|name|图层名称|名称)\s*[:：]\s*", re.IGNORECASE)
_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.IGNORECASE)
_WRAPPING = "\"'“”‘’`«»「」『』*_()[]{}<>.,;:!?。，；：！？、 \t"


def plain_names(count: int) -> list[str]:
    return ["Background"] + [f"Layer {i}" for i in range(1, count)]


def clean_name(answer: str) -> str | None:
    """The layer name in a model's answer, or None where the answer is no short name (empty, a sentence, no letter,
    undecodable bytes)."""
    line = next((part.strip() for part in answer.splitlines() if part.strip()), "")
    line = line.rstrip("\ufffd")  # a character cut in two by the token limit
    line = _LEAD_IN.sub("", line).strip(_WRAPPING)
    line = _ARTICLE.sub("", line)
    line = " ".join(line.split())
    if not line or len(line.split(" ")) > MAX_WORDS or len(line) > MAX_CHARS:
        return None
    if not any(ch.isalnum() for ch in line) or not line.isprintable() or "\ufffd" in line:
        return None
    return line[0].upper() + line[1:]


def unique_names(names: list[str]) -> list[str]:
    """The same name twice becomes "Tree", "Tree 2" (bottom to top), compared without case."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen[name.casefold()] = seen.get(name.casefold(), 0) + 1
        out.append(name if count == 1 else f"{name} {count}")
    return out


def layer_picture(rgba: np.ndarray) -> Image.Image | None:
    """What the encoder is shown of a layer: its content's box (with a little margin) on grey, at most NAME_SIDE a
    side; None for a layer with nothing in it."""
    alpha = rgba[..., 3]
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return None
    margin = max(2, (rows[-1] - rows[0] + cols[-1] - cols[0]) // 50)
    top, bottom = max(0, rows[0] - margin), min(alpha.shape[0], rows[-1] + 1 + margin)
    left, right = max(0, cols[0] - margin), min(alpha.shape[1], cols[-1] + 1 + margin)
    crop = rgba[top:bottom, left:right].astype(np.float32)
    a = crop[..., 3:] / 255.0
    rgb = np.rint(crop[..., :3] * a + GREY * (1.0 - a)).astype(np.uint8)
    picture = Image.fromarray(rgb, "RGB")
    scale = min(NAME_SIDE / max(picture.size), max(1.0, MIN_SIDE / min(picture.size)))
    size = (max(MIN_SIDE, round(picture.width * scale)), max(MIN_SIDE, round(picture.height * scale)))
    return picture.resize(size, Image.Resampling.LANCZOS) if size != picture.size else picture


def name_layers(pipe: Any, layers: list[np.ndarray], language: str, check_cancel: Callable[[], None]) -> list[str]:
    """A name for each of `layers` (the model's RGBA layers, bottom to top): one short answer of the pipeline's text
    encoder per layer above the background, greedy (the same layers get the same names). `check_cancel` raises to
    stop, and is called after every token."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    from .offload import onload_for_generate

    class StopOnCancel(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            check_cancel()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    names = plain_names(len(layers))
    onload_for_generate(pipe.text_encoder)
    for index in range(1, len(layers)):
        picture = layer_picture(layers[index])
        if picture is None:
            continue
        inputs = pipe.vl_processor(text=PROMPTS.get(language, PROMPTS["en"]), images=picture, return_tensors="pt")
        inputs = inputs.to(pipe._execution_device)
        generated = pipe.text_encoder.generate(
            **inputs, max_new_tokens=NAME_TOKENS, do_sample=False, stopping_criteria=StoppingCriteriaList([StopOnCancel()])
        )
        answer = pipe.vl_processor.batch_decode(
            generated[:, inputs.input_ids.shape[1] :], skip_special_tokens=True, clean_up_tokenization_spaces=False
        )[0]
        names[index] = clean_name(answer) or names[index]
    return unique_names(names)
