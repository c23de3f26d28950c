"""configure_logging: JSON or console lines on the given stream (stderr in the daemon, never stdout),
per-connection context merged into every line, the standard library's loggers on the same stream."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from marketfeed.logging import configure_logging


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_with_level_time_and_connection_context(restore_logging) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    log = structlog.get_logger("marketfeed.test")
    with structlog.contextvars.bound_contextvars(venue="binance", conn="c7"):
        log.info("frame dropped", reason="malformed")
    log.debug("not shown at info")
    logging.getLogger("aiohttp.client").warning("from the standard library")
    lines = stream.getvalue().splitlines()
    first = json.loads(lines[0])
    assert first["event"] == "frame dropped" and first["reason"] == "malformed"
    assert (first["venue"], first["conn"], first["level"]) == ("binance", "c7", "info")
    assert first["timestamp"].endswith("Z")
    assert len(lines) == 2 and "WARNING aiohttp.client: from the standard library" in lines[1]


def test_level_filters_and_reconfiguring_does_not_duplicate_handlers(restore_logging) -> None:
    stream = io.StringIO()
    configure_logging("warning", "console", stream=stream)
    configure_logging("warning", "console", stream=stream)
    structlog.get_logger().info("quiet")
    structlog.get_logger().warning("loud", n=1)
    logging.getLogger("x").warning("std once")
    text = stream.getvalue()
    assert "quiet" not in text and "loud" in text and "n=1" in text
    assert text.count("std once") == 1


def test_auto_is_json_when_stdout_is_not_a_terminal(restore_logging, monkeypatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stdout", io.StringIO())  # not a terminal
    configure_logging("info", "auto", stream=stream)
    structlog.get_logger().info("hello")
    assert json.loads(stream.getvalue())["event"] == "hello"
