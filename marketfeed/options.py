"""Configuration of the derived outputs: coalesced ``top`` events (per venue or symbol) and the
bot-facing WebSocket stream (``[server]``). Kept apart from marketfeed.config, which embeds these
Structs; the same one-line error rules apply (``ValueError("field: message")`` from ``__post_init__``).
"""

from __future__ import annotations

import re

import msgspec

STREAM_KINDS = ("book", "trade", "top", "status")
ON_SLOW = ("resnapshot", "close")
_PART = re.compile(r"^[A-Za-z0-9*?_.\-\[\]]+$")


def _bad(field: str, message: str) -> ValueError:
    return ValueError(f"{field}: {message}")


class TopConfig(msgspec.Struct, forbid_unknown_fields=True):
    """``top`` events for a venue (``[venues.X.top]``) or one symbol (``[venues.X.top_symbols.SYM]``)."""

    depth: int = 5  # levels per side
    min_interval: float = 0.1  # seconds: at most one top per symbol per interval; 0 = after every update
    enabled: bool = True  # false turns a symbol off under a venue-wide setting

    def __post_init__(self) -> None:
        if not (1 <= self.depth <= 1000):
            raise _bad("depth", "must be 1..1000")
        if self.min_interval < 0:
            raise _bad("min_interval", "must not be negative")


def check_channel_pattern(pattern: str) -> str | None:
    """None when ``pattern`` is ``*`` or ``kind:venue:symbol`` (each part may use * and ?), else why not."""
    if pattern == "*":
        return None
    parts = pattern.split(":")
    if len(parts) != 3 or not all(parts) or not all(_PART.match(p) for p in parts):
        return f"{pattern!r} is not kind:venue:symbol (e.g. book:binance:BTC-USDT, trade:okx:*)"
    if parts[0] != "*" and parts[0] not in STREAM_KINDS:
        return f"{pattern!r}: unknown kind {parts[0]!r} (one of {', '.join(STREAM_KINDS)})"
    return None


class TokenConfig(msgspec.Struct, forbid_unknown_fields=True):
    """A static bearer token (``[[server.tokens]]``): the secret itself or the environment variable
    holding it, and the channels it may subscribe to (patterns such as ``book:binance:*``)."""

    token: str | None = None
    token_env: str | None = None
    channels: list[str] = msgspec.field(default_factory=lambda: ["*"])
    name: str | None = None  # shown in logs instead of the secret

    def __post_init__(self) -> None:
        if (self.token is None) == (self.token_env is None):
            raise _bad("token", "set exactly one of token and token_env")
        if self.token is not None and len(self.token) < 16:
            raise _bad("token", "must be at least 16 characters")
        for p in self.channels:
            if (why := check_channel_pattern(p)) is not None:
                raise _bad("channels", why)


class JwtConfig(msgspec.Struct, forbid_unknown_fields=True):
    """JWT bearer tokens (``[server.jwt]``): HS256 with a shared secret and/or RS256 with a PEM public
    key file. ``exp`` is required and enforced; the channels claim lists the permitted patterns."""

    hs256_secret: str | None = None
    hs256_secret_env: str | None = None
    rs256_public_key: str | None = None  # path of a PEM public key
    channels_claim: str = "channels"
    audience: str | None = None
    issuer: str | None = None
    leeway: float = 0.0  # seconds of clock skew tolerated on exp/nbf

    def __post_init__(self) -> None:
        if self.hs256_secret is not None and self.hs256_secret_env is not None:
            raise _bad("hs256_secret", "set hs256_secret or hs256_secret_env, not both")
        if self.hs256_secret is None and self.hs256_secret_env is None and self.rs256_public_key is None:
            raise _bad("hs256_secret", "configure hs256_secret, hs256_secret_env or rs256_public_key")
        if self.hs256_secret is not None and len(self.hs256_secret) < 32:
            raise _bad("hs256_secret", "must be at least 32 characters")
        if self.leeway < 0:
            raise _bad("leeway", "must not be negative")


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The WebSocket stream for bots (``[server]``, marketfeed.stream)."""

    host: str = "127.0.0.1"
    port: int = 8765
    path: str = "/v1/stream"
    tokens: list[TokenConfig] = msgspec.field(default_factory=list)
    jwt: JwtConfig | None = None
    # without tokens or jwt the stream is open: allowed only on a loopback host unless this is true
    allow_anonymous: bool = False
    allowed_origins: list[str] = msgspec.field(default_factory=list)  # browsers' Origin; "*" = any
    max_message_bytes: int = 65536  # client messages; larger ones get an error (4x: closed 1009)
    rate_limit: float = 20.0  # client messages per second (token bucket) ...
    rate_burst: int = 40  # ... with this burst
    max_errors: int = 10  # bad client messages before the connection is closed (1008)
    send_queue: int = 10_000  # messages waiting for one client before on_slow applies
    on_slow: str = "resnapshot"  # "resnapshot": drop its queue, re-send book snapshots; "close": 1013
    max_resnapshots: int = 3  # resnapshots per minute before a slow client is closed (1013) anyway
    heartbeat: float = 20.0  # seconds between pings; a client that misses the pong is closed
    idle_timeout: float = 300.0  # seconds a connection may stay without subscriptions or messages
    auth_timeout: float = 5.0  # seconds to send {"op":"auth"} when no token came with the request
    tls_cert: str | None = None  # PEM certificate chain: serve wss://
    tls_key: str | None = None

    def __post_init__(self) -> None:
        if not (0 <= self.port <= 65535):
            raise _bad("port", "must be 0..65535")
        if not self.path.startswith("/"):
            raise _bad("path", "must start with /")
        if not self.tokens and self.jwt is None and not self.allow_anonymous and self.host not in ("127.0.0.1", "::1", "localhost"):
            raise _bad("host", f"{self.host!r} is not loopback: configure tokens or jwt (or allow_anonymous = true)")
        for name in ("max_message_bytes", "rate_burst", "max_errors", "send_queue"):
            if getattr(self, name) <= 0:
                raise _bad(name, "must be positive")
        for name in ("rate_limit", "heartbeat", "idle_timeout", "auth_timeout"):
            if getattr(self, name) <= 0:
                raise _bad(name, "must be positive")
        if self.max_resnapshots < 0:
            raise _bad("max_resnapshots", "must not be negative")
        if self.on_slow not in ON_SLOW:
            raise _bad("on_slow", f"{self.on_slow!r} is not one of {', '.join(ON_SLOW)}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise _bad("tls_cert", "set both tls_cert and tls_key, or neither")
