"""Per-symbol Kraken book state: the L2 book at the subscribed depth plus what verifying the checksum
needs, kept so that the hot path (one update message) does as little as possible.

Why it is fast: the checksum covers only the top 10 of each side, so each side keeps its checksum text
(asks: the CRC of the text; bids: the text's bytes, continued from the asks' CRC) and the price of its
10th level (``edge``). An update that touches only levels behind the edge cannot change that side's
top 10, so its text is reused; most updates of a deep book are such. When a side's top 10 does change,
only the levels that changed are formatted again: the others' texts are kept (``LevelTexts``).
"""

from __future__ import annotations

import zlib
from bisect import bisect_left, insort
from collections import deque

from marketfeed.adapters.kraken.checksum import CHECKSUM_LEVELS, exact_level_text, exact_limit
from marketfeed.adapters.kraken.schemas import exact_book_decoder
from marketfeed.book import L2Book

INF = float("inf")
_crc32 = zlib.crc32


class LevelTexts(dict):
    """price -> checksum text of that level, for the levels of the side's current top 10 only.

    A missing entry is formatted on first use (``__missing__``), so joining the top 10 is a C-level
    ``map`` over the dict when nothing changed there. An entry is dropped when its level is touched
    (``apply_*``) and entries of levels that left the top 10 are pruned (``prune``), so an entry is
    never stale."""

    __slots__ = ("levels", "pscale", "qscale", "exact")

    def __init__(self, levels: dict, pscale: int, qscale: int, exact: dict) -> None:
        super().__init__()
        self.levels = levels
        self.pscale = pscale
        self.qscale = qscale
        self.exact = exact  # price -> (qty, exact text) for values beyond the float path's range

    def __missing__(self, p: float) -> str:
        q = self.levels[p]
        exact = self.exact
        x = exact.get(p) if exact else None
        # "%d" of a value within 1e-6 of an integer, plus 0.5: the rounded integer (checksum.py)
        text = x[1] if x is not None and x[0] == q else "%d%d" % (p * self.pscale + 0.5, q * self.qscale + 0.5)
        self[p] = text
        return text

    def prune(self, top: list) -> None:
        """Keep only the entries of ``top`` (called when the side's top 10 lost a level)."""
        keep = {p: self[p] for p in top}
        self.clear()
        self.update(keep)


class KrakenBook:
    """One v2 book subscription: state, precision, checksum caches and the resync budget."""

    __slots__ = (
        "symbol", "native", "depth", "book", "conn", "live", "rejected", "awaiting_since", "retry_at",
        "failures", "price_precision", "qty_precision", "pscale", "qscale", "plim", "qlim",
        "ask_edge", "bid_edge", "ask_crc", "bid_bytes", "ask_texts", "bid_texts", "ask_exact", "bid_exact",
    )

    def __init__(self, symbol: str, native: str, depth: int | None,
                 price_precision: int | None, qty_precision: int | None) -> None:
        self.symbol = symbol  # normalised
        self.native = native  # v2 name
        self.depth = depth  # subscribed depth; None until known (replay of a capture without a plan)
        self.book = L2Book()
        self.conn: str | None = None  # the connection whose messages build this book
        self.live = False  # a verified snapshot has been applied and every message since verified
        self.rejected = False  # the venue refused the subscription: do not retry on a timer
        self.awaiting_since: int | None = None  # ts a snapshot was asked for
        self.retry_at: int | None = None  # circuit open: resubscribe at this ts
        self.failures: deque[int] = deque()  # ts of recent resyncs (the circuit breaker's window)
        self.price_precision: int | None = None
        self.qty_precision: int | None = None
        self.pscale = self.qscale = 0
        self.plim = self.qlim = INF
        self.ask_exact: dict = {}
        self.bid_exact: dict = {}
        self.set_precision(price_precision, qty_precision)
        self.reset()

    def set_precision(self, price_precision: int | None, qty_precision: int | None) -> bool:
        """Set the pair's precision; returns True if it changed (the cached texts are then rebuilt)."""
        if (price_precision, qty_precision) == (self.price_precision, self.qty_precision):
            return False
        self.price_precision = price_precision
        self.qty_precision = qty_precision
        if price_precision is None or qty_precision is None:
            self.pscale = self.qscale = 0
            self.plim = self.qlim = INF
        else:
            self.pscale = 10**price_precision
            self.qscale = 10**qty_precision
            self.plim = exact_limit(price_precision)
            self.qlim = exact_limit(qty_precision)
        self._new_texts()
        return True

    @property
    def verifiable(self) -> bool:
        return self.price_precision is not None and self.qty_precision is not None

    def _new_texts(self) -> None:
        # the text caches hold the sides' level dicts, which L2Book replaces on clear/snapshot
        book = self.book
        self.ask_texts = LevelTexts(book.asks.levels, self.pscale, self.qscale, self.ask_exact)
        self.bid_texts = LevelTexts(book.bids.levels, self.pscale, self.qscale, self.bid_exact)

    def reset(self) -> None:
        """Drop the book (invalid until the next snapshot)."""
        self.book.clear()
        self.live = False
        self.ask_edge = INF
        self.bid_edge = -INF
        self.ask_crc = 0
        self.bid_bytes = b""
        self.ask_exact = {}
        self.bid_exact = {}
        self._new_texts()

    # -- the checksum ------------------------------------------------------------------------------

    def refresh_asks(self) -> None:
        prices = self.book.asks.prices
        top = prices[:CHECKSUM_LEVELS]
        self.ask_edge = prices[CHECKSUM_LEVELS - 1] if len(prices) >= CHECKSUM_LEVELS else INF
        texts = self.ask_texts
        text = "".join(map(texts.__getitem__, top))
        if len(texts) > CHECKSUM_LEVELS:
            texts.prune(top)
        self.ask_crc = _crc32(text.encode())

    def refresh_bids(self) -> None:
        prices = self.book.bids.prices
        top = prices[-1 : -CHECKSUM_LEVELS - 1 : -1]
        self.bid_edge = prices[-CHECKSUM_LEVELS] if len(prices) >= CHECKSUM_LEVELS else -INF
        texts = self.bid_texts
        text = "".join(map(texts.__getitem__, top))
        if len(texts) > CHECKSUM_LEVELS:
            texts.prune(top)
        self.bid_bytes = text.encode()

    def checksum(self) -> int:
        """Kraken's CRC32 of the current top 10: the asks' CRC continued over the bids' text."""
        return _crc32(self.bid_bytes, self.ask_crc)

    def record_exact(self, frame: str | bytes) -> None:
        """Keep the exact checksum text of every level of ``frame`` (a book message with a value too
        large for the float path), read from the wire digits."""
        try:
            msg = exact_book_decoder.decode(frame)
        except Exception:  # the frame decoded once already; a failure here would be a bug, not input
            return
        pp, qp = self.price_precision, self.qty_precision
        assert pp is not None and qp is not None
        for d in msg.data:
            for levels, exact, texts in ((d.asks, self.ask_exact, self.ask_texts), (d.bids, self.bid_exact, self.bid_texts)):
                for lv in levels:
                    p = float(lv.price)
                    texts.pop(p, None)
                    if lv.qty:
                        exact[p] = (float(lv.qty), exact_level_text(lv.price, lv.qty, pp, qp))
                    else:
                        exact.pop(p, None)
        for exact, side in ((self.ask_exact, self.book.asks), (self.bid_exact, self.book.bids)):
            if len(exact) > 2 * (self.depth or 1000):
                for p in [p for p in exact if p not in side.levels]:
                    del exact[p]

    # -- messages ----------------------------------------------------------------------------------

    def load_snapshot(self, bids, asks, frame: str | bytes | None) -> tuple[list, list]:
        """Replace the book; returns the event's (bids, asks), best first, after truncation to depth."""
        self.reset()
        book = self.book
        book.apply_snapshot([(lv.price, lv.qty) for lv in bids], [(lv.price, lv.qty) for lv in asks])
        self._new_texts()
        depth = self.depth
        if depth is not None:
            book.bids.truncate(depth)
            book.asks.truncate(depth)
        plim, qlim = self.plim, self.qlim
        if frame is not None and any(lv.qty >= qlim or lv.price >= plim for side in (bids, asks) for lv in side):
            self.record_exact(frame)
        self.refresh_asks()
        self.refresh_bids()
        bl = book.bids.levels
        al = book.asks.levels
        return [(p, bl[p]) for p in reversed(book.bids.prices)], [(p, al[p]) for p in book.asks.prices]

    def apply_update(self, bids, asks, frame: str | bytes) -> tuple[list, list]:
        """Apply one update message in order, truncate to depth, refresh what the checksum needs.
        Returns the event's (bids, asks): the levels as received, then the implicit removals as
        ``(price, 0.0)``.

        The hot path of the adapter: both sides' loops and the checksum refresh are written out here
        rather than called (a call costs about as much as applying a level)."""
        book = self.book
        depth = self.depth or 1_000_000
        plim = self.plim
        qlim = self.qlim
        unsafe = dirty_a = dirty_b = grew = False
        out_a: list = []
        out_b: list = []
        if asks:
            side = book.asks
            levels = side.levels
            prices = side.prices
            edge = self.ask_edge
            texts = self.ask_texts
            for lv in asks:
                p = lv.price
                q = lv.qty
                if p <= edge:  # at or better than the 10th ask: the top 10 may change
                    dirty_a = True
                    texts.pop(p, None)
                if q >= qlim or p >= plim:
                    unsafe = True
                if q:
                    if p not in levels:
                        insort(prices, p)
                        grew = True
                    levels[p] = q
                elif levels.pop(p, None) is not None:
                    del prices[bisect_left(prices, p)]
                out_a.append((p, q))
            while grew and len(prices) > depth:  # Kraken's implicit removal, made explicit
                p = prices.pop()
                del levels[p]
                out_a.append((p, 0.0))
        if bids:
            grew = False
            side = book.bids
            levels = side.levels
            prices = side.prices
            edge = self.bid_edge
            texts = self.bid_texts
            for lv in bids:
                p = lv.price
                q = lv.qty
                if p >= edge:  # at or better than the 10th bid
                    dirty_b = True
                    texts.pop(p, None)
                if q >= qlim or p >= plim:
                    unsafe = True
                if q:
                    if p not in levels:
                        insort(prices, p)
                        grew = True
                    levels[p] = q
                elif levels.pop(p, None) is not None:
                    del prices[bisect_left(prices, p)]
                out_b.append((p, q))
            while grew and len(prices) > depth:
                p = prices.pop(0)
                del levels[p]
                out_b.append((p, 0.0))
        if unsafe:
            self.record_exact(frame)
        if dirty_a:
            prices = book.asks.prices
            top = prices[:CHECKSUM_LEVELS]
            old_edge = self.ask_edge
            self.ask_edge = top[-1] if len(top) == CHECKSUM_LEVELS else INF
            texts = self.ask_texts
            text = "".join(map(texts.__getitem__, top))
            if len(texts) > CHECKSUM_LEVELS:
                # usually the old 10th level, pushed out by an insert
                if old_edge > self.ask_edge:
                    texts.pop(old_edge, None)
                if len(texts) > CHECKSUM_LEVELS:
                    texts.prune(top)
            self.ask_crc = _crc32(text.encode())
        if dirty_b:
            prices = book.bids.prices
            top = prices[-1 : -CHECKSUM_LEVELS - 1 : -1]
            old_edge = self.bid_edge
            self.bid_edge = top[-1] if len(top) == CHECKSUM_LEVELS else -INF
            texts = self.bid_texts
            text = "".join(map(texts.__getitem__, top))
            if len(texts) > CHECKSUM_LEVELS:
                if old_edge < self.bid_edge:
                    texts.pop(old_edge, None)
                if len(texts) > CHECKSUM_LEVELS:
                    texts.prune(top)
            self.bid_bytes = text.encode()
        return out_b, out_a
