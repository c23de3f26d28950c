"""PostgreSQL: batches written with ``COPY`` (asyncpg's binary copy) into one table per event type,
the schema created at start (``CREATE TABLE IF NOT EXISTS``).

Tables (in ``schema``, default ``public``; times are the events' integer nanoseconds; ``id`` numbers
the rows in the order they were written, ``ORDER BY id`` replays a table in event order)::

    trades(id, venue, symbol, ts_recv, ts_exchange, trade_id, price, size, side)
    book_events(id, venue, symbol, ts_recv, ts_exchange, seq, snapshot, checksum,
                bid_prices, bid_sizes, ask_prices, ask_sizes)
    tops(id, venue, symbol, ts_recv, ts_exchange, seq, bid_prices, bid_sizes, ask_prices, ask_sizes)
    status_events(id, venue, symbol, ts_recv, state, reason)

Book levels are parallel ``double precision[]`` columns (prices, sizes; best first) rather than jsonb:
the binary COPY sends them as raw float8 with no JSON text to build or parse, the values are the
exact doubles of the event, and ``unnest(bid_prices, bid_sizes)`` gives the levels back as rows for
SQL. A batch is one transaction (every table or none). Delivery is at-least-once after an outage
(marketfeed.sinks.network).
"""

from __future__ import annotations

from typing import Any

from marketfeed.events import Book, Event, Status, Top, Trade
from marketfeed.sinks.network import NetworkSink, NetworkSinkOptions

TRADE_COLUMNS = ("venue", "symbol", "ts_recv", "ts_exchange", "trade_id", "price", "size", "side")
BOOK_COLUMNS = ("venue", "symbol", "ts_recv", "ts_exchange", "seq", "snapshot", "checksum",
                "bid_prices", "bid_sizes", "ask_prices", "ask_sizes")
TOP_COLUMNS = ("venue", "symbol", "ts_recv", "ts_exchange", "seq", "bid_prices", "bid_sizes", "ask_prices", "ask_sizes")
STATUS_COLUMNS = ("venue", "symbol", "ts_recv", "state", "reason")

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.trades (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, venue text NOT NULL, symbol text NOT NULL, ts_recv bigint NOT NULL, ts_exchange bigint,
    trade_id text NOT NULL, price double precision NOT NULL, size double precision NOT NULL, side text);
CREATE INDEX IF NOT EXISTS trades_symbol_ts ON {s}.trades (venue, symbol, ts_recv);
CREATE TABLE IF NOT EXISTS {s}.book_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, venue text NOT NULL, symbol text NOT NULL, ts_recv bigint NOT NULL, ts_exchange bigint, seq bigint,
    snapshot boolean NOT NULL, checksum bigint,
    bid_prices double precision[] NOT NULL, bid_sizes double precision[] NOT NULL,
    ask_prices double precision[] NOT NULL, ask_sizes double precision[] NOT NULL);
CREATE INDEX IF NOT EXISTS book_events_symbol_ts ON {s}.book_events (venue, symbol, ts_recv);
CREATE TABLE IF NOT EXISTS {s}.tops (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, venue text NOT NULL, symbol text NOT NULL, ts_recv bigint NOT NULL, ts_exchange bigint, seq bigint,
    bid_prices double precision[] NOT NULL, bid_sizes double precision[] NOT NULL,
    ask_prices double precision[] NOT NULL, ask_sizes double precision[] NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.status_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, venue text NOT NULL, symbol text, ts_recv bigint NOT NULL, state text NOT NULL, reason text);
"""


class PostgresSinkConfig(NetworkSinkOptions):
    dsn: str = "postgresql://127.0.0.1:5432/postgres"
    schema: str = "public"
    create_schema: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.schema.isidentifier():
            raise ValueError(f"schema: {self.schema!r} is not a plain SQL identifier")


def _split(levels: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    return [p for p, _ in levels], [s for _, s in levels]


class PostgresSink(NetworkSink):
    Options = PostgresSinkConfig

    @classmethod
    def from_options(cls, options: PostgresSinkConfig) -> PostgresSink:
        return cls(options)

    def __init__(self, options: PostgresSinkConfig) -> None:
        super().__init__(options)
        self.options: PostgresSinkConfig = options
        self.name = f"postgres:{options.schema}"
        self._conn: Any = None

    async def _connect(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.options.dsn, timeout=self.options.connect_timeout)
        try:
            if self.options.create_schema:
                await conn.execute(SCHEMA.format(s=self.options.schema))
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    async def _send(self, events: list[Event], first: int) -> None:
        trades: list[tuple] = []
        books: list[tuple] = []
        tops: list[tuple] = []
        statuses: list[tuple] = []
        for e in events:
            t = type(e)
            if t is Trade:
                trades.append((e.venue, e.symbol, e.ts_recv, e.ts_exchange, e.trade_id, e.price, e.size, e.side))  # type: ignore[union-attr]
            elif t is Book:
                books.append((e.venue, e.symbol, e.ts_recv, e.ts_exchange, e.seq, e.snapshot, e.checksum,  # type: ignore[union-attr]
                              *_split(e.bids), *_split(e.asks)))  # type: ignore[union-attr]
            elif t is Top:
                tops.append((e.venue, e.symbol, e.ts_recv, e.ts_exchange, e.seq, *_split(e.bids), *_split(e.asks)))  # type: ignore[union-attr]
            elif t is Status:
                statuses.append((e.venue, e.symbol, e.ts_recv, e.state, e.reason))  # type: ignore[union-attr]
        conn, schema = self._conn, self.options.schema
        async with conn.transaction():
            for table, columns, rows in (
                ("trades", TRADE_COLUMNS, trades),
                ("book_events", BOOK_COLUMNS, books),
                ("tops", TOP_COLUMNS, tops),
                ("status_events", STATUS_COLUMNS, statuses),
            ):
                if rows:
                    await conn.copy_records_to_table(table, records=rows, columns=columns, schema_name=schema)

    def _is_disconnect(self, exc: Exception) -> bool:
        from asyncpg import exceptions

        return isinstance(exc, (exceptions.PostgresConnectionError, exceptions.InterfaceError,
                                exceptions.OperatorInterventionError))

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
