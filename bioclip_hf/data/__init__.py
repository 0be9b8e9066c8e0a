"""Training data: the streamed loader, caption layouts, augmentation, TreeOfLife tar/catalog sources.

`from bioclip_hf.data import build_dataloader` (the spelling of dataset cards written before the package was laid out
by concern) still works: the stream's public names resolve lazily from `bioclip_hf.data.stream`, so importing this
package imports nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import Any

_STREAM_NAMES = ("StreamStats", "StreamingLoader", "build_dataloader", "build_stream", "load_shards", "make_pipeline")


def __getattr__(name: str) -> Any:
    if name in _STREAM_NAMES:
        return getattr(importlib.import_module(".stream", __name__), name)
    raise AttributeError(f"module 'bioclip_hf.data' has no attribute {name!r}")
