"""The one image decoder: file paths, encoded bytes, `datasets` image dicts, PIL images and uint8 arrays -> PIL.

The processor, batch inference, the training stream and evaluation all call `decode_image`, so one picture gives
the same pixels whichever way it arrives. Decoding keeps the image's own mode: the processor converts to RGB after
resizing, at the point open_clip's eval transform does (converting a palette image first would change its resize).
No EXIF rotation is applied, as in open_clip and pybioclip. Pillow's defaults stand: truncated files are errors, and
images over twice `Image.MAX_IMAGE_PIXELS` are refused.

This file is copied with the processor as remote code, so it imports only PIL, numpy and the standard library.
"""

from __future__ import annotations

import io
import os
import struct
from typing import Any

import numpy as np
from PIL import Image

# What Pillow raises on bad data: OSError (UnidentifiedImageError, truncated files), and SyntaxError, ValueError,
# EOFError, IndexError or struct.error from some format parsers; DecompressionBombError is not an OSError.
_BAD_DATA = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, Image.DecompressionBombError)


def decode_image(source: Any, name: str | None = None) -> Image.Image:
    """A loaded PIL image from a path, encoded bytes, a `{"bytes", "path"}` dict, a PIL image or a uint8 array.

    Args:
        source: a file path (`str`/`os.PathLike`); encoded image bytes; the `{"bytes": ..., "path": ...}` dict a
            `datasets` `Image(decode=False)` column yields (the bytes when present, else the file at the path); a PIL
            image (returned as is); or a uint8 HxW / HxWxC / CxHxW numpy array or torch tensor.
        name: what error messages call the image (default: its path, or "<bytes>").

    Raises:
        FileNotFoundError: the file does not exist ("image not found: PATH").
        ValueError: the data is not a readable image ("cannot read image NAME: reason"), or the dict holds neither
            bytes nor a path, or an array is not uint8 HxW(xC).
        TypeError: `source` is none of the kinds above.

    Example:
        >>> decode_image(open("photo.jpg", "rb").read(), name="photo.jpg").size  # doctest: +SKIP
        (640, 480)
    """
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, dict):
        data, path = source.get("bytes"), source.get("path")
        if data is not None:
            return _open(io.BytesIO(data), name or path or "<bytes>")
        if path:
            return _open(path, name or path)
        raise ValueError(f"image entry{_named(name)} has neither bytes nor a path")
    if isinstance(source, (str, os.PathLike)):
        return _open(source, name or os.fspath(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _open(io.BytesIO(source), name or "<bytes>")
    if source is None:
        raise ValueError(f"image{_named(name)} is missing (None)")
    if hasattr(source, "detach"):  # a torch tensor (torch is not imported here: remote code needs no extra module)
        source = source.detach().cpu().numpy()
    if isinstance(source, np.ndarray):
        return _from_array(source)
    raise TypeError(f"unsupported image type {type(source).__name__}")


def _open(file: Any, label: str) -> Image.Image:
    """Open and fully load `file` (a path or a file object); the file is closed before returning."""
    try:
        with Image.open(file) as image:
            image.load()
            return image
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {label}") from None
    except Image.UnidentifiedImageError:  # Pillow's message names a temporary file object; say what it means
        raise ValueError(f"cannot read image {label}: not a recognised image format") from None
    except _BAD_DATA as err:
        reason = " ".join(str(err).split()) or type(err).__name__  # one line, whatever the parser said
        raise ValueError(f"cannot read image {label}: {reason}") from None


def _named(name: str | None) -> str:
    return f" {name}" if name else ""


def _from_array(array: np.ndarray) -> Image.Image:
    """uint8 HxW, HxWxC or CxHxW (C in 1, 3, 4) -> PIL image."""
    if array.dtype != np.uint8:
        raise ValueError(f"array images must be uint8 (0-255), got {array.dtype}")
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ValueError(f"array image must be HxW or HxWxC, got shape {array.shape}")
    return Image.fromarray(array)


__all__ = ["decode_image"]
