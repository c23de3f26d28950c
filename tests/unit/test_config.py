"""Config loading: good configs give the documented defaults; every bad config gives exactly one line
that names the file and the key as written in TOML."""

from __future__ import annotations

from pathlib import Path

import pytest

from marketfeed.config import (
    Config,
    ConfigError,
    JsonlSinkConfig,
    RecordConfig,
    StdoutSinkConfig,
    load_config,
    parse_config,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "marketfeed.toml"

MINIMAL = '[venues.binance]\nsymbols = ["BTC-USDT"]\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "marketfeed.toml"
    path.write_text(text)
    return path


def test_example_config_is_valid_and_is_what_make_run_uses() -> None:
    config = load_config(EXAMPLE)
    assert list(config.venues) == ["binance", "binance-usdm"]
    assert config.venues["binance"].symbols == ["BTC-USDT", "ETH-USDT"]
    assert config.venues["binance"].channels == ["trades", "book"]
    assert config.venues["binance-usdm"].symbols == ["BTC-USDT-PERP"]
    assert [type(s) for s in config.sinks] == [StdoutSinkConfig]
    assert config.record is None
    assert "examples/marketfeed.toml" in (REPO / "Makefile").read_text()


def test_minimal_config_gets_the_defaults() -> None:
    config = parse_config(MINIMAL)
    venue = config.venues["binance"]
    assert venue.channels == ["trades", "book"]
    assert venue.depth is None and venue.ws_url is None and venue.rest_url is None
    assert (venue.backoff.base, venue.backoff.cap, venue.backoff.reset_after) == (1.0, 60.0, 60.0)
    assert config.sinks == [StdoutSinkConfig(queue_size=100_000, on_full="drop_oldest")]
    assert config.record is None
    assert (config.log.level, config.log.format) == ("info", "auto")


def test_full_config() -> None:
    config = parse_config(
        """
[venues.binance]
symbols = ["BTC-USDT"]
channels = ["book"]
depth = 500
ws_url = "ws://127.0.0.1:9000"
rest_url = "http://127.0.0.1:9000"
trade_stream = "aggTrade"
book_interval_ms = 1000
backoff = { base = 0.5, cap = 10 }
stale_after = 5

[venues.kraken]
symbols = ["BTC-USD"]
depth = 10

[[sinks]]
type = "stdout"
on_full = "drop_newest"

[[sinks]]
type = "jsonl"
path = "out/events.jsonl"
rotate_mb = 64
rotate_minutes = 30
gzip = true
flush_interval = 0

[record]
dir = "rec"
gzip = false

[log]
level = "debug"
format = "json"
"""
    )
    assert isinstance(config, Config)
    b = config.venues["binance"]
    assert (b.depth, b.trade_stream, b.book_interval_ms, b.backoff.base, b.backoff.cap, b.stale_after) == (
        500, "aggTrade", 1000, 0.5, 10.0, 5.0
    )
    assert config.venues["kraken"].depth == 10
    assert config.sinks[0] == StdoutSinkConfig(on_full="drop_newest")
    assert config.sinks[1] == JsonlSinkConfig(
        path="out/events.jsonl", rotate_mb=64.0, rotate_minutes=30.0, gzip=True, flush_interval=0.0
    )
    assert config.record == RecordConfig(dir="rec", gzip=False)
    assert (config.log.level, config.log.format) == ("debug", "json")


def test_record_only_config_may_have_no_sinks() -> None:
    config = parse_config("sinks = []\n" + MINIMAL + "[record]\ndir = 'rec'\n")
    assert config.sinks == [] and config.record == RecordConfig(dir="rec")


BAD = [
    # (toml, the key the message must name, a word the explanation must contain)
    ('[venues.binance]\nsymbols = ["BTC-USDT"]\ndepth = "x"\n', "venues.binance.depth", "int"),
    ('[venues.binance]\nsymbols = ["BTC-USDT"]\ndepht = 5\n', "venues.binance.depht", "unknown key"),
    ('[venues.binance]\nsymbols = ["BTC-USDT"]\ndepth = 0\n', "venues.binance.depth", "positive"),
    ('[venues.binance]\nchannels = ["book"]\n', "venues.binance.symbols", "missing"),
    ('[venues.binance]\nsymbols = []\n', "venues.binance.symbols", "empty"),
    ('[venues.binance]\nsymbols = ["btc-usdt"]\n', "venues.binance.symbols", "normalised"),
    ('[venues.binance]\nsymbols = ["BTCUSDT"]\n', "venues.binance.symbols", "normalised"),
    ('[venues.binance]\nsymbols = ["BTC-USDT", "BTC-USDT"]\n', "venues.binance.symbols", "duplicates"),
    ('[venues.binance]\nsymbols = ["BTC-USDT", 5]\n', "venues.binance.symbols[1]", "str"),
    ('[venues.binance]\nsymbols = "BTC-USDT"\n', "venues.binance.symbols", "array"),
    ('[venues.binance]\nsymbols = ["BTC-USDT-PERP"]\n', "venues.binance.symbols", "binance-usdm"),
    ('[venues.binance-usdm]\nsymbols = ["BTC-USDT"]\n', "venues.binance-usdm.symbols", "PERP"),
    ('[venues.binance]\nsymbols = ["BTC-USDT"]\nchannels = ["trades", "ticker"]\n', "venues.binance.channels", "ticker"),
    ('[venues.binance]\nsymbols = ["BTC-USDT"]\nchannels = []\n', "venues.binance.channels", "empty"),
    ('[venues.binance]\nsymbols = ["BTC-USDT"]\nbook_interval_ms = 250\n', "venues.binance.book_interval_ms", "100, 1000"),
    ('[venues.binance-usdm]\nsymbols = ["BTC-USDT-PERP"]\nbook_interval_ms = 1000\n', "venues.binance-usdm.book_interval_ms", "0, 100, 250, 500"),
    ('[venues.binance]\nsymbols = ["BTC-USDT"]\ntrade_stream = "trades"\n', "venues.binance.trade_stream", "aggTrade"),
    ('[venues.kraken]\nsymbols = ["BTC-USD"]\ntrade_stream = "trade"\n', "venues.kraken.trade_stream", "binance"),
    ('[venues.kraken]\nsymbols = ["BTC-USD"]\nbook_channel = "books"\n', "venues.kraken.book_channel", "okx"),
    ('[venues.binance]\nsymbols = ["BTC-USDT"]\nws_url = "localhost:9000"\n', "venues.binance.ws_url", "URL"),
    ('[venues.binance]\nsymbols = ["BTC-USDT"]\nstale_after = -1\n', "venues.binance.stale_after", "positive"),
    ('[venues.binance]\nsymbols = ["BTC-USDT"]\nbackoff = { base = 0 }\n', "venues.binance.backoff.base", "base"),
    ('[venues.binance]\nsymbols = ["BTC-USDT"]\nbackoff = { bsae = 1 }\n', "venues.binance.backoff.bsae", "unknown key"),
    ('[venues.binance]\nsymbols = ["BTC-USDT"]\nbackoff = { cap = "x" }\n', "venues.binance.backoff.cap", "float"),
    ('[venues.bitmex]\nsymbols = ["BTC-USD"]\n', "venues.bitmex", "unknown venue"),
    ("[venues]\n", "venues", "no venue"),
    ("[log]\nlevel = 'info'\n", "venues", "missing"),
    ("venues = 3\n", "venues", "table"),
    ("verbose = true\n" + MINIMAL, "verbose", "unknown key"),
    (MINIMAL + "verbose = true\n", "venues.binance.verbose", "unknown key"),
    (MINIMAL + "[[sinks]]\npath = 'x.jsonl'\n", "sinks[0].type", "missing"),
    (MINIMAL + "[[sinks]]\ntype = 'rabbitmq'\n", "sinks[0].type", "rabbitmq"),
    (MINIMAL + "[[sinks]]\ntype = 'stdout'\n[[sinks]]\ntype = 'jsonl'\n", "sinks[1].path", "missing"),
    (MINIMAL + "[[sinks]]\ntype = 'jsonl'\npath = 'a.jsonl'\nrotate_mb = 0\n", "sinks[0].rotate_mb", "positive"),
    (MINIMAL + "[[sinks]]\ntype = 'jsonl'\npath = 'a.jsonl'\ngzip = 'yes'\n", "sinks[0].gzip", "bool"),
    (MINIMAL + "[[sinks]]\ntype = 'jsonl'\npath = 'a.jsonl'\ncolour = 1\n", "sinks[0].colour", "unknown key"),
    (MINIMAL + "[[sinks]]\ntype = 'stdout'\non_full = 'sometimes'\n", "sinks[0].on_full", "drop_oldest"),
    (MINIMAL + "[[sinks]]\ntype = 'stdout'\nqueue_size = 0\n", "sinks[0].queue_size", "positive"),
    (MINIMAL + "[[sinks]]\ntype = 'stdout'\n[[sinks]]\ntype = 'stdout'\n", "sinks[1]", "only one stdout"),
    (MINIMAL + "[[sinks]]\ntype = 'jsonl'\npath = 'a.jsonl'\n[[sinks]]\ntype = 'jsonl'\npath = './a.jsonl'\n", "sinks[1].path", "sinks[0]"),
    ("sinks = { type = 'stdout' }\n" + MINIMAL, "sinks", "[[sinks]]"),
    (MINIMAL + "[record]\nrotate_mb = 5\n", "record.dir", "missing"),
    (MINIMAL + "[record]\ndir = 'r'\nrotate_minutes = 0\n", "record.rotate_minutes", "positive"),
    (MINIMAL + "[log]\nlevel = 'loud'\n", "log.level", "loud"),
    (MINIMAL + "[log]\nformat = 'xml'\n", "log.format", "xml"),
]


@pytest.mark.parametrize("text,key,word", BAD, ids=[f"{i}-{k}" for i, (_, k, _) in enumerate(BAD)])
def test_bad_config_is_one_line_naming_file_and_key(tmp_path: Path, text: str, key: str, word: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}: "), message
    assert word.lower() in message.lower(), message


def test_invalid_toml_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "depth = \n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: invalid TOML: ") and "line 3" in message


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=r"absent\.toml: cannot read"):
        load_config(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"# caf\xe9\n" + MINIMAL.encode())
    with pytest.raises(ConfigError, match=r"latin1\.toml: not UTF-8"):
        load_config(path)
