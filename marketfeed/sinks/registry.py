"""Sink types, discovered through the ``marketfeed.sinks`` entry points.

Every sink type, built in or from another package, is an entry point in the group ``marketfeed.sinks``
whose name is the ``type`` written in ``[[sinks]]`` and whose object is a *sink type*: anything with

- ``Options``: a ``msgspec.Struct`` subclass of ``marketfeed.config.SinkOptions`` (so it has
  ``queue_size`` and ``on_full``) describing the other keys of the table; unknown keys and bad values
  are reported as one line naming the key (``sinks[1].url: ...``), as for every other config key;
- ``from_options(options) -> Sink``: builds the sink.

A ``Sink`` subclass with an ``Options`` attribute and a ``from_options`` classmethod is such an object.
A user's own sink is registered the same way in its own package's metadata::

    [project.entry-points."marketfeed.sinks"]
    mysink = "mypackage.sink:MySink"

The stdout and jsonl sinks keep their option Structs in ``marketfeed.config`` and their sink types in
``marketfeed.sinks.builtin``; they are entry points too.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from marketfeed.sinks.base import Sink

GROUP = "marketfeed.sinks"

_loaded: dict[str, Any] = {}  # type name -> sink type
_by_options: dict[type, Any] = {}  # options Struct -> sink type


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep)  # the first distribution wins, as importlib.metadata orders them
    return found


def sink_types() -> list[str]:
    """Every sink type name available, sorted."""
    return sorted(_entry_points())


def load(kind: str) -> Any | None:
    """The sink type registered as ``kind``, or None if there is none."""
    if kind in _loaded:
        return _loaded[kind]
    ep = _entry_points().get(kind)
    if ep is None:
        return None
    plugin = ep.load()
    options = getattr(plugin, "Options", None)
    if options is None or not callable(getattr(plugin, "from_options", None)):
        raise TypeError(f"{ep.value} has no Options Struct and from_options(options)")
    _loaded[kind] = plugin
    _by_options[options] = plugin
    return plugin


def options_type(kind: str) -> type | None:
    plugin = load(kind)
    return None if plugin is None else plugin.Options


def make(options: Any) -> Sink | None:
    """The sink for an options Struct that came from a loaded sink type (None if it did not)."""
    plugin = _by_options.get(type(options))
    return None if plugin is None else plugin.from_options(options)


def forget() -> None:
    """Drop the loaded sink types (tests that change the installed entry points)."""
    _loaded.clear()
    _by_options.clear()
