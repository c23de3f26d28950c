from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sinks.servers import Nats, Postgres, Redis


def _serve(kind: type) -> Iterator:
    reason = kind.missing()
    if reason is not None:
        pytest.fail(reason)  # .ci/run installs every server: a missing one is a broken setup, not a skip
    server = kind()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_server() -> Iterator[Redis]:
    yield from _serve(Redis)


@pytest.fixture
def nats_server() -> Iterator[Nats]:
    yield from _serve(Nats)


@pytest.fixture
def postgres_server() -> Iterator[Postgres]:
    yield from _serve(Postgres)
