"""Training-time image augmentation of BioCLIP's trainer (open_clip's training transform), made deterministic.

open_clip trains with `RandomResizedCrop(size, scale=(0.9, 1.0), ratio=(3/4, 4/3), bicubic)`, RGB, then the
model's normalisation (`image_transform(is_train=True)`); evaluation uses resize + centre crop. Here the crop is
drawn from a `random.Random` seeded per sample (seed, epoch, key), so a resumed run sees the same crops.

Example:
    >>> import random
    >>> random_resized_crop_box(640, 480, random.Random(0))  # doctest: +SKIP
    (22, 9, 611, 458)
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np

AUGMENTATIONS = ("none", "random_resized_crop")
CROP_SCALE = (0.9, 1.0)  # open_clip's AugmentationCfg default
CROP_RATIO = (3 / 4, 4 / 3)


def random_resized_crop_box(width: int, height: int, rng: random.Random, scale: tuple[float, float] = CROP_SCALE,
                            ratio: tuple[float, float] = CROP_RATIO) -> tuple[int, int, int, int]:  # fmt: skip
    """(left, top, crop width, crop height) as torchvision's `RandomResizedCrop.get_params` draws them.

    Ten tries at an area fraction in `scale` and a log-uniform aspect ratio in `ratio`; otherwise the largest
    centred crop within `ratio`.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    if width / height < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif width / height > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def train_transform(image_processor: Any, image: Any, rng: random.Random) -> np.ndarray:
    """Random resized crop to the processor's crop size (bicubic), RGB, the processor's normalisation: `(3, S, S)`."""
    from PIL import Image

    from bioclip_hf.models.bioclip.processing_bioclip import to_pil

    image = to_pil(image).convert("RGB")
    left, top, w, h = random_resized_crop_box(*image.size, rng)
    size = image_processor.crop_size
    crop = image.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))
    array = np.asarray(crop, dtype=np.float32) / 255.0
    mean = np.asarray(image_processor.image_mean, dtype=np.float32)
    std = np.asarray(image_processor.image_std, dtype=np.float32)
    return ((array - mean) / std).transpose(2, 0, 1)


def check_augment(name: str) -> str:
    if name not in AUGMENTATIONS:
        raise ValueError(f"train_augment must be one of {', '.join(AUGMENTATIONS)}, got {name!r}")
    return name


__all__ = ["AUGMENTATIONS", "CROP_RATIO", "CROP_SCALE", "check_augment", "random_resized_crop_box", "train_transform"]
