"""The stdout and jsonl sink types (entry points ``stdout`` and ``jsonl``): their option Structs
live in ``marketfeed.config``, as before there were entry points."""

from __future__ import annotations

from marketfeed.config import JsonlSinkConfig, StdoutSinkConfig
from marketfeed.sinks.base import Sink


class stdout:
    Options = StdoutSinkConfig

    @staticmethod
    def from_options(options: StdoutSinkConfig) -> Sink:
        from marketfeed.sinks.stdout import StdoutSink

        return StdoutSink()


class jsonl:
    Options = JsonlSinkConfig

    @staticmethod
    def from_options(options: JsonlSinkConfig) -> Sink:
        from marketfeed.sinks.jsonl import JsonlSink

        return JsonlSink(
            options.path,
            rotate_mb=options.rotate_mb,
            rotate_minutes=options.rotate_minutes,
            gzip=options.gzip,
            flush_interval=options.flush_interval,
        )
