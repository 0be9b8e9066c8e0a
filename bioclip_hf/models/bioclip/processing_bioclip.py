"""BioCLIP preprocessing: open_clip's exact eval transform and the CLIP BPE tokenizer.

The image processor reproduces open_clip's `image_transform(is_train=False)` step by step on PIL
images (resize the shortest side with PIL bicubic, torchvision's centre-crop rounding, *then*
convert to RGB, scale to [0, 1], normalise), so embeddings match open_clip's to float precision.
Text goes through open_clip's cleaning (ftfy, HTML unescape, whitespace folding, lower-casing)
before the byte-level BPE tokenizer; sequences are padded with id 0 like open_clip.
"""

from __future__ import annotations

import gzip
import html
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from transformers import CLIPTokenizer
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.processing_utils import ProcessorMixin

from .image_decoding import decode_image
from .image_transforms import (
    PREPROCESS_MODES,
    RESAMPLE,
    RESIZE_MODES,
    center_crop_or_pad,
    normalize,
    open_clip_resize,
    resize_shortest,
    tensor_squash,
    to_float_rgb,
)

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_BPE_FILE = Path(__file__).resolve().parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
CONTEXT_LENGTH = 77
# open_clip's SimpleTokenizer special tokens (ids 49406/49407) and word-split pattern.
SOT_TOKEN, EOT_TOKEN = "<start_of_text>", "<end_of_text>"
_OPEN_CLIP_PATTERN = r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


class BioCLIPImageProcessor(BaseImageProcessor):
    r"""Image processor reproducing open_clip's BioCLIP evaluation transform, or pybioclip's.

    Args:
        size (`int`, defaults to 224): target side (the shortest side for `resize_mode="shortest"`).
        crop_size (`int`, *optional*): side of the output square (defaults to `size`).
        interpolation (`str`, defaults to `"bicubic"`): `"bicubic"` or `"bilinear"` (PIL filters).
        image_mean / image_std (`tuple[float]`): per-channel normalisation (OpenAI CLIP's by default).
        resize_mode (`str`, defaults to `"shortest"`): open_clip's `"shortest"` (resize + centre crop),
            `"longest"` (resize + centre pad with `fill_color`) or `"squash"` (resize both sides).
        fill_color (`int`, defaults to 0): padding value for `resize_mode="longest"`.
        preprocess (`str`, defaults to `"open_clip"`): `"open_clip"` (the settings above, as open_clip's eval
            transform) or `"pybioclip"` (RGB first, then a bilinear antialiased squash of the float tensor to
            `crop_size`, as pybioclip does for its Tree-of-Life models; `interpolation`/`resize_mode` unused).

    Example:
        >>> from PIL import Image
        >>> from bioclip_hf import BioCLIPImageProcessor
        >>> BioCLIPImageProcessor(size=30)(Image.new("RGB", (64, 48)))["pixel_values"].shape
        torch.Size([1, 3, 30, 30])
        >>> BioCLIPImageProcessor(size=30, preprocess="pybioclip").transform(Image.new("RGB", (64, 48))).shape
        (3, 30, 30)
    """

    model_input_names = ["pixel_values"]
    _auto_class = "AutoImageProcessor"

    def __init__(
        self,
        size: int = 224,
        crop_size: int | None = None,
        interpolation: str = "bicubic",
        image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN,
        image_std: tuple[float, ...] = OPENAI_CLIP_STD,
        resize_mode: str = "shortest",
        fill_color: int = 0,
        preprocess: str = "open_clip",
        **kwargs: Any,
    ) -> None:
        kwargs.pop("image_processor_type", None)
        kwargs.pop("processor_class", None)
        if interpolation not in RESAMPLE:
            raise ValueError(f"unsupported interpolation {interpolation!r}; use one of {sorted(RESAMPLE)}")
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"unsupported resize_mode {resize_mode!r}; use one of: {', '.join(RESIZE_MODES)}")
        if preprocess not in PREPROCESS_MODES:
            raise ValueError(f"unknown preprocess {preprocess!r}; use one of: {', '.join(PREPROCESS_MODES)}")
        self.size = _side(size, "size")
        self.crop_size = _side(crop_size if crop_size is not None else size, "crop_size")
        self.interpolation = interpolation
        self.image_mean = [float(x) for x in image_mean]
        self.image_std = [float(x) for x in image_std]
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("image_mean and image_std need 3 values (RGB)")
        self.resize_mode, self.fill_color, self.preprocess_mode = resize_mode, int(fill_color), preprocess
        super().__init__(**kwargs)

    @classmethod
    def from_open_clip_preprocess(cls, preprocess_cfg: dict[str, Any], image_size: int) -> BioCLIPImageProcessor:
        """Build from the `preprocess_cfg` of an `open_clip_config.json` (open_clip defaults apply)."""
        interpolation = preprocess_cfg.get("interpolation", "bicubic")
        size = preprocess_cfg.get("size", image_size)
        return cls(
            size=size,
            interpolation="bilinear" if interpolation == "bilinear" else "bicubic",
            image_mean=tuple(preprocess_cfg.get("mean", OPENAI_CLIP_MEAN)),
            image_std=tuple(preprocess_cfg.get("std", OPENAI_CLIP_STD)),
            resize_mode=preprocess_cfg.get("resize_mode") or "shortest",
            fill_color=preprocess_cfg.get("fill_color") or 0,
        )

    def to_open_clip_preprocess(self) -> dict[str, Any]:
        """The inverse of :meth:`from_open_clip_preprocess` (the open_clip settings; `preprocess="pybioclip"` has
        no open_clip equivalent and is not exported)."""
        return {
            "mean": list(self.image_mean), "std": list(self.image_std),
            "interpolation": self.interpolation, "resize_mode": self.resize_mode, "fill_color": self.fill_color,
        }

    def with_preprocess(self, preprocess: str) -> BioCLIPImageProcessor:
        """A copy using `preprocess` ("open_clip" or "pybioclip"), other settings unchanged."""
        settings = {k: v for k, v in self.to_dict().items() if k not in ("image_processor_type", "auto_map")}
        return type(self)(**{**settings, "preprocess": preprocess})

    def to_dict(self) -> dict[str, Any]:
        keys = ("size", "crop_size", "interpolation", "image_mean", "image_std", "resize_mode", "fill_color")
        out = {k: getattr(self, k) for k in keys}
        out["preprocess"] = self.preprocess_mode
        out["image_processor_type"] = type(self).__name__
        if getattr(self, "_auto_class", None) is not None:
            out["auto_map"] = {self._auto_class: f"processing_bioclip.{type(self).__name__}"}
        return out

    def transform(self, image: Any) -> np.ndarray:
        """Preprocess one image into a float32 `(3, crop, crop)` array."""
        image = to_pil(image)
        if self.preprocess_mode == "pybioclip":
            pixels = tensor_squash(to_float_rgb(image), self.crop_size)
        else:
            if self.resize_mode == "shortest" and self.size != self.crop_size:
                image = center_crop_or_pad(resize_shortest(image, self.size, RESAMPLE[self.interpolation]), self.crop_size)
            else:
                image = open_clip_resize(image, self.crop_size, self.resize_mode, RESAMPLE[self.interpolation], self.fill_color)
            pixels = to_float_rgb(image)
        return normalize(pixels, self.image_mean, self.image_std)

    def preprocess(self, images: Any, return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        """Preprocess one image or a list of images (PIL, file paths, encoded bytes, `{"bytes", "path"}` dicts, or
        uint8 arrays/tensors: whatever `to_pil` decodes).

        Args:
            images: an image or a list of images.
            return_tensors: `"pt"` (default), `"np"` or `None` (list of arrays).
        """
        if kwargs:
            raise TypeError(f"unexpected image processor arguments: {sorted(kwargs)}")
        batch = images if isinstance(images, (list, tuple)) else [images]
        pixel_values = [self.transform(img) for img in batch]
        if return_tensors in ("pt", "np"):
            pixel_values = np.stack(pixel_values) if pixel_values else np.zeros((0, 3, self.crop_size, self.crop_size), np.float32)
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)

    def __call__(self, images: Any, return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, **kwargs)


def _side(value: Any, name: str) -> int:
    if isinstance(value, dict):  # accept transformers-style {"shortest_edge": n} / {"height": n, "width": n}
        value = value.get("shortest_edge", value.get("height"))
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"{name} must be square, got {value!r}")
        value = value[0]
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


# The public name of the package's one image decoder (paths, bytes, `{"bytes", "path"}` dicts, PIL, uint8 arrays).
to_pil = decode_image


_WHITESPACE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """open_clip's text cleaning: ftfy repair, double HTML unescape, whitespace folding, lower-case."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return _WHITESPACE.sub(" ", text.strip()).strip().lower()


@lru_cache(maxsize=1)
def _bpe_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Build CLIP's vocabulary exactly as open_clip's SimpleTokenizer does from the shipped BPE file."""
    merges_text = gzip.open(_BPE_FILE).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in merges_text[1 : 49152 - 256 - 2 + 1]]
    byte_chars = list(_bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    vocab += [SOT_TOKEN, EOT_TOKEN]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def load_tokenizer(context_length: int = CONTEXT_LENGTH) -> CLIPTokenizer:
    """The CLIP BPE tokenizer configured like open_clip's (pads with id 0 to `context_length`).

    Example:
        >>> tok = load_tokenizer()
        >>> tok("a photo of Danaus plexippus")["input_ids"][:3]
        [49406, 320, 1125]
    """
    from tokenizers import Regex, pre_tokenizers

    vocab, merges = _bpe_vocab_and_merges()
    tokenizer = CLIPTokenizer(
        vocab=dict(vocab), merges=list(merges), bos_token=SOT_TOKEN, eos_token=EOT_TOKEN, unk_token=EOT_TOKEN,
        pad_token="!", model_max_length=context_length,
    )
    # open_clip's split pattern names *its* special tokens, so "<|endoftext|>" typed in a label stays plain text.
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_OPEN_CLIP_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    return tokenizer


class BioCLIPProcessor(ProcessorMixin):
    r"""Image processor + tokenizer for BioCLIP, the single source of preprocessing truth.

    Args:
        image_processor ([`BioCLIPImageProcessor`]): image preprocessing.
        tokenizer ([`~transformers.CLIPTokenizer`]): CLIP BPE tokenizer (pad id 0).

    Example:
        >>> from PIL import Image
        >>> from bioclip_hf import BioCLIPImageProcessor, BioCLIPProcessor, load_tokenizer
        >>> proc = BioCLIPProcessor(BioCLIPImageProcessor(size=30), load_tokenizer())
        >>> batch = proc(text=["Danaus plexippus"], images=[Image.new("RGB", (40, 40))])
        >>> batch["input_ids"].shape, batch["pixel_values"].shape
        (torch.Size([1, 77]), torch.Size([1, 3, 30, 30]))
    """

    attributes = ["image_processor", "tokenizer"]
    _auto_class = "AutoProcessor"

    def __init__(self, image_processor: BioCLIPImageProcessor | None = None, tokenizer: CLIPTokenizer | None = None, **kwargs: Any):
        super().__init__(image_processor, tokenizer)

    def with_preprocess(self, preprocess: str) -> BioCLIPProcessor:
        """A processor whose images go through `preprocess` ("open_clip" or "pybioclip"); same tokenizer.

        Example:
            >>> pybioclip_like = processor.with_preprocess("pybioclip")  # doctest: +SKIP
        """
        return type(self)(self.image_processor.with_preprocess(preprocess), self.tokenizer)

    @property
    def context_length(self) -> int:
        return int(self.tokenizer.model_max_length)

    def tokenize(self, texts: str | list[str]) -> dict[str, Any]:
        """Tokenize like `open_clip.tokenize`: clean, add start/end, truncate and 0-pad to the context length."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"text inputs must be str, got {type(t).__name__}")
        return self.tokenizer(
            [clean_text(t) for t in texts], padding="max_length", truncation=True,
            max_length=self.context_length, return_tensors="pt",
        )

    def __call__(self, text: Any = None, images: Any = None, return_tensors: str = "pt", **kwargs: Any) -> BatchFeature:
        """Tokenize `text` and/or preprocess `images` into one batch (`input_ids`, `attention_mask`, `pixel_values`).

        Args:
            text: a string or a list of strings.
            images: an image or a list of images (PIL, arrays, file paths).
            return_tensors: only `"pt"` is supported.
        """
        if text is None and images is None:
            raise ValueError("BioCLIPProcessor needs text, images, or both")
        if return_tensors != "pt":
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'pt'")
        for ignored in ("padding", "truncation", "max_length"):  # fixed to open_clip's behaviour
            kwargs.pop(ignored, None)
        if kwargs:
            raise TypeError(f"unexpected processor arguments: {sorted(kwargs)}")
        data: dict[str, Any] = {}
        if text is not None:
            data.update(self.tokenize(text))
        if images is not None:
            data.update(self.image_processor(images, return_tensors="pt"))
        return BatchFeature(data=data)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> BioCLIPProcessor:
        """Load from a transformers-format folder/repo, or build from an open_clip-format one.

        Example:
            >>> processor = BioCLIPProcessor.from_pretrained("imageomics/bioclip")  # doctest: +SKIP
        """
        from .modeling_bioclip import _HUB_KWARGS, resolve_open_clip_files
        from .open_clip_format import read_open_clip_config

        kwargs.pop("trust_remote_code", None)
        kwargs.pop("_from_auto", None)
        files = resolve_open_clip_files(pretrained_model_name_or_path, allow_pickle=True, **kwargs)
        if files is None:
            hub = {k: v for k, v in kwargs.items() if k in _HUB_KWARGS}
            image_processor = BioCLIPImageProcessor.from_pretrained(pretrained_model_name_or_path, **hub)
            tokenizer = CLIPTokenizer.from_pretrained(pretrained_model_name_or_path, **hub)
            return cls(image_processor, tokenizer)
        cfg = read_open_clip_config(files[0])
        image_size = cfg["model_cfg"]["vision_cfg"]["image_size"]
        image_size = image_size[0] if isinstance(image_size, (list, tuple)) else image_size
        context = cfg["model_cfg"]["text_cfg"].get("context_length", CONTEXT_LENGTH)
        image_processor = BioCLIPImageProcessor.from_open_clip_preprocess(cfg["preprocess_cfg"], image_size)
        return cls(image_processor, load_tokenizer(context))


    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> list[str]:
        """Write `preprocessor_config.json`, the tokenizer files and `processor_config.json`.

        Args:
            save_directory: target folder (created if needed).
        """
        if kwargs.pop("push_to_hub", False):
            raise ValueError("use `bioclip-hf push` or huggingface_hub to upload; save_pretrained only writes files")
        os.makedirs(save_directory, exist_ok=True)
        files = list(self.image_processor.save_pretrained(save_directory))
        files += list(self.tokenizer.save_pretrained(save_directory))
        config: dict[str, Any] = {"processor_class": type(self).__name__}
        if getattr(self, "_auto_class", None) is not None:
            from transformers.dynamic_module_utils import custom_object_save

            custom_object_save(self, save_directory)
            config["auto_map"] = {self._auto_class: f"processing_bioclip.{type(self).__name__}"}
        path = os.path.join(save_directory, "processor_config.json")
        Path(path).write_text(json.dumps(config, indent=2) + "\n")
        return files + [path]


__all__ = ["BioCLIPImageProcessor", "BioCLIPProcessor", "clean_text", "load_tokenizer", "to_pil"]
