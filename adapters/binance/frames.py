"""The hot path's compiled readers (``_frames.c``), where built, and their Python forms.

- ``stream_name(frame)``: the stream of a combined-stream frame, read off its first bytes, or None.
- ``take_trade`` / ``take_agg_trade``: read a plain trade frame, drop a repeated id and append the event
  in one call. Without the extension (or with ``MARKETFEED_PURE_PYTHON=1``) they are None and the
  adapter's msgspec path does the whole work; it is also the path for every frame they do not read.
"""

from __future__ import annotations

import os
from collections.abc import Callable


def _stream_name_py(frame: str | bytes) -> str | None:
    if type(frame) is str and frame.startswith('{"stream":"'):
        end = frame.find('"', 11)
        if end >= 0:
            return frame[11:end]
    return None


try:
    from . import _frames
except ImportError:
    _frames = None

ACCELERATED = _frames is not None and not os.environ.get("MARKETFEED_PURE_PYTHON")
stream_name: Callable[[str | bytes], str | None] = _frames.stream_name if ACCELERATED else _stream_name_py
take_trade: Callable[..., int] | None = _frames.trade if ACCELERATED else None
take_agg_trade: Callable[..., int] | None = _frames.agg_trade if ACCELERATED else None
