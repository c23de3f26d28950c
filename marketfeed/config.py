"""The TOML configuration, validated into msgspec Structs.

Unknown keys and bad values are errors: ``load_config`` raises ConfigError with one line naming the
file and the key (the CLI prints it and exits with code 2).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

VENUES = ("binance", "binance-usdm", "kraken", "coinbase", "okx")
CHANNELS = ("trades", "book")


class ConfigError(Exception):
    pass


class Backoff(msgspec.Struct, forbid_unknown_fields=True):
    """Reconnect delays: full jitter, ``random(0, min(cap, base * 2**attempt))``."""

    base: float = 1.0
    cap: float = 60.0
    reset_after: float = 60.0  # seconds of healthy data after which the attempt count starts over

    def __post_init__(self) -> None:
        if not (0 < self.base <= self.cap):
            raise ValueError("backoff needs 0 < base <= cap")
        if self.reset_after <= 0:
            raise ValueError("reset_after must be positive")


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

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("symbols must not be empty")
        for s in self.symbols:
            if s != s.upper() or "-" not in s:
                raise ValueError(f"symbol {s!r} is not a normalised name such as BTC-USDT")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("symbols has duplicates")
        for c in self.channels:
            if c not in CHANNELS:
                raise ValueError(f"unknown channel {c!r} (expected one of {', '.join(CHANNELS)})")
        if self.stale_after is not None and self.stale_after <= 0:
            raise ValueError("stale_after must be positive")
        if not (1 <= self.max_streams_per_connection <= 1024):
            raise ValueError("max_streams_per_connection must be 1..1024")
        for name in ("ws_url", "rest_url"):
            url = getattr(self, name)
            if url is not None and "://" not in url:
                raise ValueError(f"{name} {url!r} is not a URL")


class StdoutSinkConfig(msgspec.Struct, tag_field="type", tag="stdout", forbid_unknown_fields=True):
    queue_size: int = 100_000


class JsonlSinkConfig(msgspec.Struct, tag_field="type", tag="jsonl", forbid_unknown_fields=True):
    path: str
    queue_size: int = 100_000
    rotate_mb: float | None = None
    rotate_minutes: float | None = None
    gzip: bool = False


SinkConfig = StdoutSinkConfig | JsonlSinkConfig


class RecordConfig(msgspec.Struct, forbid_unknown_fields=True):
    dir: str
    rotate_mb: float = 256.0
    rotate_minutes: float = 60.0
    gzip: bool = True


class LogConfig(msgspec.Struct, forbid_unknown_fields=True):
    level: str = "info"
    format: str = "auto"  # auto: JSON unless stdout is a terminal; "json"; "console"

    def __post_init__(self) -> None:
        if self.level.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError(f"unknown log level {self.level!r}")
        if self.format not in ("auto", "json", "console"):
            raise ValueError(f"unknown log format {self.format!r}")


class Config(msgspec.Struct, forbid_unknown_fields=True):
    venues: dict[str, VenueConfig]
    sinks: list[SinkConfig] = msgspec.field(default_factory=lambda: [StdoutSinkConfig()])
    record: RecordConfig | None = None
    log: LogConfig = msgspec.field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        for name in self.venues:
            if name not in VENUES:
                raise ValueError(f"unknown venue {name!r} (expected one of {', '.join(VENUES)})")


def parse_config(text: str | bytes, source: str = "<config>") -> Config:
    try:
        config = msgspec.toml.decode(text, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_explain(exc)}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    return config


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_config(text, str(path))


def _explain(exc: msgspec.ValidationError) -> str:
    """msgspec says "... - at `$.venues.binance.depth`"; turn the path into a TOML key."""
    msg = str(exc)
    if " - at `$" in msg:
        text, _, where = msg.rpartition(" - at `$")
        key = where.rstrip("`").lstrip(".")
        return f"{key}: {text}" if key else text
    return msg
