"""A tiny random-weights Qwen-Image-Layered pipeline, built from configs with the real diffusers/transformers classes.

It outputs noise, but it goes through every code path the real model does (captioning, text encoding, VAE,
layered transformer, scheduler), so the whole product can be tried and tested without a GPU or a download.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Where the real pipeline cuts the text template's prefix off the encoder output.
TEMPLATE_PREFIX_TOKENS = 34


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """Qwen2VLProcessor without the video processor, which needs torchvision.

    The pipeline only ever sends images. model_index.json records this class by its dotted path, so it must stay
    importable as `backend.model.tiny_model.ImageOnlyQwen2VLProcessor`. The engine also uses it to load the real model's
    processor where torchvision is not installed.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def _train_tokenizer(texts: list[str]):
    """A byte-level BPE trained on the pipeline's own templates, sized so the template prefix is 34 tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    template = (
        "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
        "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    head = template.split("{}")[0]
    corpus = texts + [template.format("a poster with a red circle, blue text and a photo")] * 4

    def build(vocab_size: int):
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=QWEN_SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(corpus, trainer=trainer)
        model = json.loads(tok.to_str())["model"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        qwen = Qwen2Tokenizer(vocab=model["vocab"], merges=merges)
        qwen.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS[1:]})
        return qwen

    low, high = 260, 1200
    best = None
    for _ in range(16):  # bisection: more merges, fewer tokens in the prefix
        mid = (low + high) // 2
        qwen = build(mid)
        count = len(qwen(head)["input_ids"])
        if count == TEMPLATE_PREFIX_TOKENS:
            return qwen
        best = qwen
        if count > TEMPLATE_PREFIX_TOKENS:
            low = mid + 1
        else:
            high = mid - 1
        if low > high:
            break
    return best


TINY = {
    "transformer": dict(
        patch_size=2, in_channels=32, out_channels=8, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, axes_dims_rope=(4, 6, 6), use_additional_t_cond=True, use_layer3d_rope=True,
    ),
    # z_dim must not be 4: the pipeline would mistake the RGBA image for latents.
    "vae": dict(
        base_dim=4, z_dim=8, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True],
        input_channels=4, latents_mean=[0.0] * 8, latents_std=[1.0] * 8,
    ),
    "text": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2),
    "vision": dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, fullatt_block_indexes=[1]),
    "mrope_section": [2, 3, 3],
    "pixels": (56 * 56, 112 * 112),
}

# The published Qwen-Image-Layered architecture (20.4 B transformer, Qwen2.5-VL-7B text encoder), for benchmarks
# with random weights: real speed and memory without a download.
FULL = {
    "transformer": dict(
        patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128, num_attention_heads=24,
        joint_attention_dim=3584, axes_dims_rope=(16, 56, 56), use_additional_t_cond=True, use_layer3d_rope=True,
    ),
    "vae": dict(
        base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True],
        input_channels=4, latents_mean=[0.0] * 16, latents_std=[1.0] * 16,
    ),
    "text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4),
    "vision": dict(
        depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
        fullatt_block_indexes=[7, 15, 23, 31],
    ),
    "mrope_section": [16, 24, 24],
    "pixels": (56 * 56, 28 * 28 * 1280),
    "vocab_size": 152064,
}


def build_tiny_pipeline(seed: int = 0):
    """The tiny QwenImageLayeredPipeline, in memory."""
    return build_random_pipeline(TINY, seed)


def build_random_pipeline(arch: dict, seed: int = 0):
    """A QwenImageLayeredPipeline of the given architecture with random weights (in the current default device/dtype)."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageLayeredPipeline,
        QwenImageTransformer2DModel,
    )

    torch.manual_seed(seed)
    tokenizer = _train_tokenizer(list(_caption_templates()))
    transformer = QwenImageTransformer2DModel(**arch["transformer"])
    vae = AutoencoderKLQwenImage(**arch["vae"])
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in QWEN_SPECIAL_TOKENS}
    vocab = arch.get("vocab_size", len(tokenizer))
    mrope = arch["mrope_section"]
    config = Qwen2_5_VLConfig(
        text_config={
            **arch["text"],
            "vocab_size": vocab,
            "rope_scaling": {"type": "mrope", "mrope_section": mrope},
            "rope_parameters": {"rope_type": "default", "mrope_section": mrope, "rope_theta": 1000000.0},
            "max_position_embeddings": 32768,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            **arch["vision"],
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112 if arch is FULL else 56,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        vocab_size=vocab,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    text_encoder.generation_config.eos_token_id = ids["<|im_end|>"]
    text_encoder.generation_config.pad_token_id = ids["<|endoftext|>"]
    text_encoder.generation_config.do_sample = False
    min_pixels, max_pixels = arch["pixels"]
    image_processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=14, merge_size=2)
    processor = ImageOnlyQwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer)
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256,
        base_shift=0.5,
        max_image_seq_len=8192,
        max_shift=0.9,
        num_train_timesteps=1000,
        shift=1.0,
        shift_terminal=0.02,
        stochastic_sampling=False,
        time_shift_type="exponential",
        use_beta_sigmas=False,
        use_dynamic_shifting=True,
        use_exponential_sigmas=False,
        use_karras_sigmas=False,
    )
    return QwenImageLayeredPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        processor=processor,
        transformer=transformer,
    )


def _caption_templates() -> tuple[str, str]:
    """The pipeline's caption prompts, read from a pipeline instance built without models."""
    from diffusers import QwenImageLayeredPipeline

    class _Vae:
        temperal_downsample = [False, True, True]

        class config:
            z_dim = 8

    fake = QwenImageLayeredPipeline.__new__(QwenImageLayeredPipeline)
    object.__setattr__(fake, "_internal_dict", {})
    try:
        QwenImageLayeredPipeline.__init__(fake, None, _Vae(), None, None, None, None)
    except Exception:
        pass
    return getattr(fake, "image_caption_prompt_en", ""), getattr(fake, "image_caption_prompt_cn", "")


def make_tiny_model(directory: str | Path, seed: int = 0) -> Path:
    """Write the tiny pipeline with save_pretrained; load it like any model with `--model DIRECTORY`."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    build_tiny_pipeline(seed).save_pretrained(path, safe_serialization=True)
    return path
