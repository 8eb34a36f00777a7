"""The source picture as the pipeline takes it: the size the pipeline works at, and straight RGBA without colour under
transparent pixels."""

from __future__ import annotations

import numpy as np
from PIL import Image


def bucket_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """The pipeline's output size for an input of this size (area resolution², the input's aspect)."""
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_layered import calculate_dimensions

    w, h = calculate_dimensions(resolution * resolution, width / height)
    return int(w), int(h)


def model_input(image: np.ndarray) -> Image.Image:
    """The source as the pipeline takes it: straight RGBA, with no colour under alpha 0.

    The pipeline resizes its input with Pillow, premultiplied, which clears the colour of transparent pixels, except
    when the image is already the bucket's size and is not resized: its invisible colour (often white or leftovers of
    erased pixels) would then reach the model. Cleared here, two images that look alike get the same layers."""
    hidden = image[..., 3:4] == 0
    if hidden.any():
        image = image * ~hidden
    return Image.fromarray(image, "RGBA")
