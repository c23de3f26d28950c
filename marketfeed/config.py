"""The TOML configuration, validated into msgspec Structs.

Unknown keys and bad values are errors: ``load_config`` raises ConfigError with one line naming the
file and the key as it is written in TOML (``venues.binance.depth``, ``sinks[1].path``); the CLI prints
it and exits with code 2.

The file is parsed with ``tomllib`` and each section is converted on its own, so that every error
message carries the full key path (msgspec alone would report ``venues[...]`` for a dict value).
Checks that concern one field raise ``ValueError("field: message")`` from ``__post_init__``; the
``field:`` prefix is joined onto the path of the struct being converted.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from marketfeed.options import ServerConfig, TopConfig

VENUES = ("binance", "binance-usdm", "kraken", "coinbase", "okx")
CHANNELS = ("trades", "book")
BINANCE_VENUES = ("binance", "binance-usdm")
# diff-depth stream speeds the venue offers (EXCHANGES.md): spot @100ms/@1000ms, USD-M @0/100/250/500ms
BINANCE_BOOK_INTERVALS = {"binance": (100, 1000), "binance-usdm": (0, 100, 250, 500)}
BINANCE_ONLY_KEYS = ("trade_stream", "book_interval_ms", "snapshot_weight_per_minute")
OKX_ONLY_KEYS = ("book_channel",)
ON_FULL = ("drop_oldest", "drop_newest", "block")


class ConfigError(Exception):
    pass


def _bad(field: str, message: str) -> ValueError:
    return ValueError(f"{field}: {message}")


class Backoff(msgspec.Struct, forbid_unknown_fields=True):
    """Reconnect delays: full jitter, ``random(0, min(cap, base * 2**attempt))``."""

    base: float = 1.0
    cap: float = 60.0
    reset_after: float = 60.0  # seconds of healthy data after which the attempt count starts over

    def __post_init__(self) -> None:
        if not (0 < self.base <= self.cap):
            raise _bad("base", "backoff needs 0 < base <= cap")
        if self.reset_after <= 0:
            raise _bad("reset_after", "must be positive")


class VenueConfig(msgspec.Struct, forbid_unknown_fields=True):
    symbols: list[str]
    channels: list[str] = msgspec.field(default_factory=lambda: ["trades", "book"])
    depth: int | None = None  # book depth: Binance REST snapshot levels; Kraken/OKX channel depth
    ws_url: str | None = None  # base URL replacing the venue's WebSocket host (e.g. ws://127.0.0.1:9000)
    rest_url: str | None = None  # base URL replacing the venue's REST host
    backoff: Backoff = msgspec.field(default_factory=Backoff)
    stale_after: float | None = None  # seconds without any frame before a connection is stale
    # Binance
    trade_stream: str | None = None  # "trade" or "aggTrade"
    book_interval_ms: int | None = None  # diff depth speed: spot 100/1000; USD-M 0/100/250/500
    max_streams_per_connection: int = 200
    snapshot_weight_per_minute: int | None = None  # share of the venue's REST weight we may spend
    # OKX: the book channel, "books" (400 levels, public; the default), "books-l2-tbt" (400) or
    # "books50-l2-tbt" (50); the tbt channels need a login at VIP5/VIP6. Validated by the adapter.
    book_channel: str | None = None
    # coalesced top-of-book events (marketfeed.top): for every symbol, and/or per symbol
    top: TopConfig | None = None
    top_symbols: dict[str, TopConfig] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.symbols:
            raise _bad("symbols", "must not be empty")
        for s in self.symbols:
            if s != s.upper() or "-" not in s:
                raise _bad("symbols", f"{s!r} is not a normalised name such as BTC-USDT")
        if len(set(self.symbols)) != len(self.symbols):
            raise _bad("symbols", "has duplicates")
        if not self.channels:
            raise _bad("channels", "must not be empty")
        for c in self.channels:
            if c not in CHANNELS:
                raise _bad("channels", f"unknown channel {c!r} (expected one of {', '.join(CHANNELS)})")
        if len(set(self.channels)) != len(self.channels):
            raise _bad("channels", "has duplicates")
        if self.depth is not None and self.depth <= 0:
            raise _bad("depth", "must be positive")
        if self.stale_after is not None and self.stale_after <= 0:
            raise _bad("stale_after", "must be positive")
        if not (1 <= self.max_streams_per_connection <= 1024):
            raise _bad("max_streams_per_connection", "must be 1..1024")
        if self.trade_stream is not None and self.trade_stream not in ("trade", "aggTrade"):
            raise _bad("trade_stream", f"{self.trade_stream!r} is not 'trade' or 'aggTrade'")
        if self.snapshot_weight_per_minute is not None and self.snapshot_weight_per_minute <= 0:
            raise _bad("snapshot_weight_per_minute", "must be positive")
        for name in ("ws_url", "rest_url"):
            url = getattr(self, name)
            if url is not None and "://" not in url:
                raise _bad(name, f"{url!r} is not a URL")
        for s in self.top_symbols:
            if s not in self.symbols:
                raise _bad("top_symbols", f"{s!r} is not one of this venue's symbols")
        if (self.top is not None or self.top_symbols) and "book" not in self.channels:
            raise _bad("top", "needs the book channel")


class StdoutSinkConfig(msgspec.Struct, tag_field="type", tag="stdout", forbid_unknown_fields=True):
    queue_size: int = 100_000  # events held for this sink before ``on_full`` applies
    on_full: str = "drop_oldest"

    def __post_init__(self) -> None:
        _check_queue(self.queue_size, self.on_full)


class JsonlSinkConfig(msgspec.Struct, tag_field="type", tag="jsonl", forbid_unknown_fields=True):
    path: str
    queue_size: int = 100_000
    on_full: str = "drop_oldest"
    rotate_mb: float | None = None  # start a new file after this many (uncompressed) megabytes
    rotate_minutes: float | None = None  # ... or after this many minutes
    gzip: bool = False
    flush_interval: float = 1.0  # seconds between flushes to the OS; 0 flushes after every batch

    def __post_init__(self) -> None:
        _check_queue(self.queue_size, self.on_full)
        if not self.path:
            raise _bad("path", "must not be empty")
        if self.rotate_mb is not None and self.rotate_mb <= 0:
            raise _bad("rotate_mb", "must be positive")
        if self.rotate_minutes is not None and self.rotate_minutes <= 0:
            raise _bad("rotate_minutes", "must be positive")
        if self.flush_interval < 0:
            raise _bad("flush_interval", "must not be negative")


def _check_queue(queue_size: int, on_full: str) -> None:
    if queue_size <= 0:
        raise _bad("queue_size", "must be positive")
    if on_full not in ON_FULL:
        raise _bad("on_full", f"{on_full!r} is not one of {', '.join(ON_FULL)}")


class SinkOptions(msgspec.Struct, forbid_unknown_fields=True):
    """Base of a plug-in sink's options (``[[sinks]]`` keys other than ``type``). A sink type found
    through the ``marketfeed.sinks`` entry points brings a subclass of this (marketfeed.sinks.registry)."""

    queue_size: int = 100_000
    on_full: str = "drop_oldest"

    def __post_init__(self) -> None:
        _check_queue(self.queue_size, self.on_full)


class ShardConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Scale-out: this daemon serves shard ``index`` of ``count`` (marketfeed.shard)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise _bad("count", "must be at least 1")
        if not (0 <= self.index < self.count):
            raise _bad("index", f"must be 0..{self.count - 1}")


SinkConfig = StdoutSinkConfig | JsonlSinkConfig
SINK_TYPES = {"stdout": StdoutSinkConfig, "jsonl": JsonlSinkConfig}


def _sink_options_type(kind: str) -> type | None:
    """The options Struct of a sink type: the built-ins above, else the ``marketfeed.sinks`` entry points."""
    if kind in SINK_TYPES:
        return SINK_TYPES[kind]
    from marketfeed.sinks.registry import options_type

    return options_type(kind)


class RecordConfig(msgspec.Struct, forbid_unknown_fields=True):
    dir: str
    rotate_mb: float = 256.0
    rotate_minutes: float = 60.0
    gzip: bool = True

    def __post_init__(self) -> None:
        if not self.dir:
            raise _bad("dir", "must not be empty")
        if self.rotate_mb <= 0:
            raise _bad("rotate_mb", "must be positive")
        if self.rotate_minutes <= 0:
            raise _bad("rotate_minutes", "must be positive")


class LogConfig(msgspec.Struct, forbid_unknown_fields=True):
    level: str = "info"
    format: str = "auto"  # auto: JSON unless stdout is a terminal; "json"; "console"

    def __post_init__(self) -> None:
        if self.level.lower() not in ("debug", "info", "warning", "error"):
            raise _bad("level", f"unknown log level {self.level!r} (expected debug, info, warning, error)")
        if self.format not in ("auto", "json", "console"):
            raise _bad("format", f"unknown log format {self.format!r} (expected auto, json, console)")


class MetricsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The HTTP endpoint with /metrics (Prometheus), /health and /ready (marketfeed.metrics)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9464  # 0: any free port (the daemon logs the one it got)

    def __post_init__(self) -> None:
        if not (0 <= self.port <= 65535):
            raise _bad("port", "must be 0..65535")
        if not self.host:
            raise _bad("host", "must not be empty")


class ServiceConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Running as a service: when start-up counts as over, and how long a book may be invalid (not
    yet synced, or resyncing after a gap) before the daemon counts as unhealthy."""

    ready_timeout: float = 30.0  # READY=1 and /ready once every connection is open, or after this long
    health_grace: float = 30.0  # seconds

    def __post_init__(self) -> None:
        if self.ready_timeout < 0:
            raise _bad("ready_timeout", "must not be negative")
        if self.health_grace < 0:
            raise _bad("health_grace", "must not be negative")


class Config(msgspec.Struct, forbid_unknown_fields=True):
    venues: dict[str, VenueConfig]
    sinks: list[SinkConfig] = msgspec.field(default_factory=lambda: [StdoutSinkConfig()])
    record: RecordConfig | None = None
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    server: ServerConfig | None = None  # the WebSocket stream for bots (marketfeed.stream)
    metrics: MetricsConfig = msgspec.field(default_factory=lambda: MetricsConfig())
    service: ServiceConfig = msgspec.field(default_factory=lambda: ServiceConfig())
    shard: ShardConfig | None = None

    def __post_init__(self) -> None:
        for name in self.venues:
            if name not in VENUES:
                raise ValueError(f"unknown venue {name!r} (expected one of {', '.join(VENUES)})")


# --- loading ---------------------------------------------------------------------------------------


def parse_config(text: str | bytes, source: str = "<config>") -> Config:
    """Parse and validate TOML text; ConfigError("<source>: <key>: <problem>") on any error."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        raw = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    try:
        return _build(_resolve_secrets(raw, ""))
    except _KeyProblem as exc:
        raise ConfigError(f"{source}: {exc.key}: {exc.message}") from None


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_config(text, str(path))


class _KeyProblem(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


_TOP_KEYS = Config.__struct_fields__


def _build(raw: dict[str, Any]) -> Config:
    for key in raw:
        if key not in _TOP_KEYS:
            raise _KeyProblem(key, f"unknown key (expected one of {', '.join(_TOP_KEYS)})")

    venues_raw = raw.get("venues")
    if venues_raw is None:
        raise _KeyProblem("venues", "missing: configure at least one venue, e.g. [venues.binance]")
    if not isinstance(venues_raw, dict):
        raise _KeyProblem("venues", "expected a table such as [venues.binance]")
    if not venues_raw:
        raise _KeyProblem("venues", "no venue configured")
    venues: dict[str, VenueConfig] = {}
    for name, table in venues_raw.items():
        key = f"venues.{name}"
        if name not in VENUES:
            raise _KeyProblem(key, f"unknown venue (expected one of {', '.join(VENUES)})")
        venue = venues[name] = _convert(table, VenueConfig, key)
        _check_venue(name, venue, table, key)

    sinks: list[SinkConfig] = []
    sinks_raw = raw.get("sinks", [{"type": "stdout"}])
    if not isinstance(sinks_raw, list):
        raise _KeyProblem("sinks", "expected an array of tables: [[sinks]]")
    for i, table in enumerate(sinks_raw):
        key = f"sinks[{i}]"
        if not isinstance(table, dict):
            raise _KeyProblem(key, "expected a table")
        kind = table.get("type")
        if kind is None:
            raise _KeyProblem(f"{key}.type", f"missing (one of {', '.join(SINK_TYPES)})")
        options = _sink_options_type(kind) if isinstance(kind, str) else None
        if options is None:
            from marketfeed.sinks.registry import sink_types

            raise _KeyProblem(f"{key}.type", f"unknown sink type {kind!r} (expected one of {', '.join(sink_types())})")
        if options.__struct_config__.tag_field is None:  # plug-in options carry no tag: type chose them
            table = {k: v for k, v in table.items() if k != "type"}
        sinks.append(_convert(table, options, key))
    _check_sinks(sinks)

    record = _convert(raw["record"], RecordConfig, "record") if "record" in raw else None
    log = _convert(raw["log"], LogConfig, "log") if "log" in raw else LogConfig()
    server = _convert(raw["server"], ServerConfig, "server") if "server" in raw else None
    metrics = _convert(raw["metrics"], MetricsConfig, "metrics") if "metrics" in raw else MetricsConfig()
    service = _convert(raw["service"], ServiceConfig, "service") if "service" in raw else ServiceConfig()
    shard = _convert(raw["shard"], ShardConfig, "shard") if "shard" in raw else None
    venues, shard = _apply_shard(venues, shard)
    return Config(venues=venues, sinks=sinks, record=record, log=log, metrics=metrics, service=service, shard=shard, server=server)


# Secrets (tokens, passwords) stay out of the file: any string value may hold ``${env:NAME}`` (the
# environment variable NAME) or ``${file:/path}`` (that file's content without its trailing newline:
# a systemd credential, a Docker secret), alone or inside a longer string such as a URL. ``$${``
# writes a literal ``${``. Resolved values are never logged (the daemon logs sink names only).
_SECRET = re.compile(r"\$(\$?)\{(env|file):([^}]*)\}")


def _resolve_secrets(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        return {k: _resolve_secrets(v, f"{key}.{k}" if key else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_secrets(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        return _SECRET.sub(lambda m: _secret(m, key), value)
    return value


def _secret(m: re.Match[str], key: str) -> str:
    if m[1]:  # $${...}: escaped
        return m[0][1:]
    kind, name = m[2], m[3]
    if not name:
        raise _KeyProblem(key, f"${{{kind}:}} needs a name")
    if kind == "env":
        found = os.environ.get(name)
        if found is None:
            raise _KeyProblem(key, f"environment variable {name} is not set")
        return found
    try:
        return Path(name).expanduser().read_text().removesuffix("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise _KeyProblem(key, f"cannot read secret file {name}: {getattr(exc, 'strerror', None) or exc}") from None


def _apply_shard(venues: dict[str, VenueConfig], shard: ShardConfig | None) -> tuple[dict[str, VenueConfig], ShardConfig | None]:
    """Keep this shard's symbols (marketfeed.shard); MARKETFEED_SHARD=I/N overrides [shard]."""
    from marketfeed import shard as sharding

    try:
        env = sharding.from_env()
    except ValueError as exc:
        raise _KeyProblem(sharding.ENV, str(exc)) from None
    if env is not None:
        shard = ShardConfig(index=env[0], count=env[1])
    if shard is None or shard.count == 1:
        return venues, shard
    mine = sharding.split({name: v.symbols for name, v in venues.items()}, shard.index, shard.count)
    if not mine:
        total = sum(len(v.symbols) for v in venues.values())
        raise _KeyProblem("shard", f"shard {shard.index} of {shard.count} gets none of the {total} configured symbols (use fewer shards)")
    return {name: msgspec.structs.replace(venues[name], symbols=symbols) for name, symbols in mine.items()}, shard


def _check_venue(name: str, venue: VenueConfig, table: dict[str, Any], key: str) -> None:
    if name in BINANCE_VENUES:
        for s in venue.symbols:
            perp = s.endswith("-PERP")
            if name == "binance-usdm" and not perp:
                raise _KeyProblem(f"{key}.symbols", f"{s!r}: USD-M symbols are perpetuals such as BTC-USDT-PERP")
            if name == "binance" and perp:
                raise _KeyProblem(f"{key}.symbols", f"{s!r}: spot symbols have no -PERP (use binance-usdm)")
        allowed = BINANCE_BOOK_INTERVALS[name]
        if venue.book_interval_ms is not None and venue.book_interval_ms not in allowed:
            raise _KeyProblem(
                f"{key}.book_interval_ms",
                f"{venue.book_interval_ms} is not offered by {name} (one of {', '.join(map(str, allowed))})",
            )
    else:
        for field in BINANCE_ONLY_KEYS:
            if field in table:
                raise _KeyProblem(f"{key}.{field}", "only applies to binance and binance-usdm")
    if name != "okx":
        for field in OKX_ONLY_KEYS:
            if field in table:
                raise _KeyProblem(f"{key}.{field}", "only applies to okx")


def _check_sinks(sinks: list[SinkConfig]) -> None:
    stdout = [i for i, s in enumerate(sinks) if isinstance(s, StdoutSinkConfig)]
    if len(stdout) > 1:
        raise _KeyProblem(f"sinks[{stdout[1]}]", "only one stdout sink is allowed")
    paths: dict[str, int] = {}
    for i, s in enumerate(sinks):
        if isinstance(s, JsonlSinkConfig):
            p = str(Path(s.path).expanduser().resolve())
            if p in paths:
                raise _KeyProblem(f"sinks[{i}].path", f"same file as sinks[{paths[p]}].path")
            paths[p] = i


def _convert(table: Any, type_: type, key: str) -> Any:
    if not isinstance(table, dict):
        raise _KeyProblem(key, "expected a table")
    try:
        return msgspec.convert(table, type_)
    except msgspec.ValidationError as exc:
        raise _KeyProblem(*_explain(str(exc), key)) from None


_AT = re.compile(r"^(?P<text>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_FIELD_PREFIX = re.compile(r"^(?P<field>[a-z_][a-z0-9_]*): (?P<text>.*)$", re.S)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")


def _explain(message: str, prefix: str) -> tuple[str, str]:
    """msgspec's "Expected `int`, got `str` - at `$.backoff.base`" -> ("<prefix>.backoff.base", text)."""
    m = _AT.match(message)
    assert m is not None  # the pattern matches any string
    text, path = m["text"], m["path"] or ""
    key = prefix + path
    if (u := _UNKNOWN.match(text)) is not None:
        return f"{key}.{u['field']}", "unknown key"
    if (u := _MISSING.match(text)) is not None:
        return f"{key}.{u['field']}", "required key is missing"
    if (f := _FIELD_PREFIX.match(text)) is not None:
        return f"{key}.{f['field']}", f["text"]
    return key, text[:1].lower() + text[1:]
