"""Image preprocessing steps, each reproducing one reference implementation exactly (no torchvision needed).

open_clip's eval transform (`open_clip.transform.image_transform(is_train=False)`) works on PIL images and resizes
in one of three `resize_mode`s, then converts to RGB, scales to [0, 1] and normalises:

- `shortest`: the shortest side becomes `size` (the other `int(size * long / short)`), then a centre crop;
- `longest`: the longest side becomes `size` (the other rounded), then centre padding with `fill_color` up to a
  square (open_clip's `ResizeKeepRatio(longest=1)` + `CenterCropOrPad`);
- `squash`: both sides become `size` (the aspect ratio is not kept).

pybioclip replaces it for its Tree-of-Life models with `ToTensor -> Resize((224, 224), antialias=True) ->
Normalize` on `Image.open(p).convert("RGB")`: a squash done on the float tensor (torch's antialiased bilinear
`interpolate`, which is what torchvision runs for tensors), not by PIL.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

RESIZE_MODES = ("shortest", "longest", "squash")
PREPROCESS_MODES = ("open_clip", "pybioclip")
RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def resize_shortest(image: Image.Image, size: int, resample: int) -> Image.Image:
    """torchvision `Resize(size)`: shortest side -> `size`, the other side truncated; unchanged if already so."""
    width, height = image.size
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    return image if (new_w, new_h) == (width, height) else image.resize((new_w, new_h), resample)


def resize_longest(image: Image.Image, size: int, resample: int) -> Image.Image:
    """open_clip `ResizeKeepRatio(size, longest=1)`: longest side -> `size`, the other `round(side / ratio)`."""
    width, height = image.size
    ratio = max(height / size, width / size)
    new_h, new_w = round(height / ratio), round(width / ratio)
    return image if (new_w, new_h) == (width, height) else image.resize((new_w, new_h), resample)


def squash(image: Image.Image, size: int, resample: int) -> Image.Image:
    """torchvision `Resize((size, size))` on a PIL image."""
    return image if image.size == (size, size) else image.resize((size, size), resample)


def center_crop_or_pad(image: Image.Image, size: int, fill: int = 0) -> Image.Image:
    """open_clip `CenterCropOrPad` / torchvision `CenterCrop`: pad each short side with `fill` (split as
    `(d // 2, (d + 1) // 2)`, palette kept), then crop the centre with torchvision's rounding."""
    width, height = image.size
    if width < size or height < size:
        pad_w, pad_h = max(size - width, 0), max(size - height, 0)
        border = (pad_w // 2, pad_h // 2, (pad_w + 1) // 2, (pad_h + 1) // 2)
        bands = len(image.getbands())
        color = fill if bands == 1 or image.mode == "F" else (int(fill),) * bands
        palette = image.getpalette() if image.mode == "P" else None
        image = ImageOps.expand(image, border=border, fill=color)
        if palette is not None:
            image.putpalette(palette)
        width, height = image.size
        if (width, height) == (size, size):
            return image
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def open_clip_resize(image: Image.Image, size: int, mode: str, resample: int, fill: int = 0) -> Image.Image:
    """The geometric part of open_clip's eval transform for `resize_mode` `mode` (PIL in, PIL out)."""
    if mode == "shortest":
        return center_crop_or_pad(resize_shortest(image, size, resample), size)
    if mode == "longest":
        return center_crop_or_pad(resize_longest(image, size, resample), size, fill)
    if mode == "squash":
        return squash(image, size, resample)
    raise ValueError(f"unknown resize_mode {mode!r}; choose one of: {', '.join(RESIZE_MODES)}")


def to_float_rgb(image: Image.Image) -> np.ndarray:
    """torchvision `ToTensor` after `convert("RGB")`: float32 `(3, H, W)` in [0, 1] (uint8 / 255, as it divides)."""
    return (np.asarray(image.convert("RGB"), dtype=np.float32) / np.float32(255.0)).transpose(2, 0, 1)


def tensor_squash(pixels: np.ndarray, size: int) -> np.ndarray:
    """torchvision `Resize((size, size), antialias=True)` on a float `(3, H, W)` tensor: torch's bilinear
    `interpolate(align_corners=False, antialias=True)`; unchanged when already `size` x `size`, as torchvision."""
    import torch

    if pixels.shape[1:] == (size, size):
        return pixels
    tensor = torch.from_numpy(np.ascontiguousarray(pixels))[None]
    out = torch.nn.functional.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out[0].numpy()


def normalize(pixels: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """`(pixels - mean) / std` per channel in float32 (torchvision `Normalize`'s arithmetic)."""
    mean_a = np.asarray(mean, dtype=np.float32)[:, None, None]
    std_a = np.asarray(std, dtype=np.float32)[:, None, None]
    return (pixels - mean_a) / std_a
