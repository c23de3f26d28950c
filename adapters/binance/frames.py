"""The hot path's compiled readers (``_frames.c``), where built, and their Python forms.

- ``stream_name(frame)``: the stream of a combined-stream frame, read off its first bytes, or None.
- ``read_depth_frame(frame)``: a whole depth frame's ``DepthUpdate`` (msgspec.DecodeError if unreadable).
- ``read_trade_frame`` / ``read_agg_trade_frame``: the same for trade frames, by msgspec.
- ``take_trade`` / ``take_agg_trade``: read a plain trade frame, drop a repeated id and append the event
  in one call (None without the extension: the adapter then reads every trade frame by msgspec).

The C readers take only the plain form Binance sends and leave every other frame to msgspec, which
decides what it is. Without the extension, or with ``MARKETFEED_PURE_PYTHON=1``, msgspec reads all.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import msgspec

from . import schemas


def _stream_name_py(frame: str | bytes) -> str | None:
    if type(frame) is str and frame.startswith('{"stream":"'):
        end = frame.find('"', 11)
        if end >= 0:
            return frame[11:end]
    return None


def _frame_reader(decoder: msgspec.json.Decoder) -> Callable[[str | bytes], object]:
    decode = decoder.decode
    return lambda frame: decode(frame).data


read_trade_frame = _frame_reader(schemas.trade_frame_decoder)
read_agg_trade_frame = _frame_reader(schemas.agg_trade_frame_decoder)

try:
    from . import _frames
except ImportError:
    _frames = None

ACCELERATED = _frames is not None and not os.environ.get("MARKETFEED_PURE_PYTHON")
stream_name: Callable[[str | bytes], str | None] = _frames.stream_name if ACCELERATED else _stream_name_py
read_depth_frame = _frames.depth_update if ACCELERATED else _frame_reader(schemas.depth_frame_decoder)
take_trade: Callable[..., int] | None = _frames.trade if ACCELERATED else None
take_agg_trade: Callable[..., int] | None = _frames.agg_trade if ACCELERATED else None
