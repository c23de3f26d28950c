"""Sinks: where normalised events go. Each is a small class behind ``marketfeed.sinks.base.Sink``."""

from __future__ import annotations

from marketfeed.config import JsonlSinkConfig, SinkConfig, StdoutSinkConfig
from marketfeed.sinks.base import Sink


def make_sink(config: SinkConfig) -> Sink:
    """The sink a ``[[sinks]]`` table describes (plug-in types through marketfeed.sinks.registry)."""
    from marketfeed.sinks import registry

    sink = registry.make(config)
    if sink is not None:
        return sink
    if isinstance(config, StdoutSinkConfig):
        from marketfeed.sinks.stdout import StdoutSink

        return StdoutSink()
    if isinstance(config, JsonlSinkConfig):
        from marketfeed.sinks.jsonl import JsonlSink

        return JsonlSink(
            config.path,
            rotate_mb=config.rotate_mb,
            rotate_minutes=config.rotate_minutes,
            gzip=config.gzip,
            flush_interval=config.flush_interval,
        )
    raise TypeError(f"no sink for {type(config).__name__}")


__all__ = ["Sink", "make_sink"]
