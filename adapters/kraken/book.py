"""Per-symbol Kraken book state: the L2 book at the subscribed depth plus what verifying the checksum
needs, kept so that the hot path (one update message) does as little as possible.

Why it is fast: the checksum covers only the top 10 of each side, so each side keeps the checksum texts
of its top 10 levels as a flat list, best first, price text then quantity text per level (``ask_top``,
``bid_top``), and the checksum input built from them (asks: the CRC of the text; bids: the text's
bytes, continued from the asks' CRC). A change behind a side's 10th level cannot change that side's top
10, so its text is reused; most updates of a deep book are such. A change at or before the 10th level
is found in the top by a bisection bounded to those 10 prices and edits its texts in place (a new size
formats the size only; an insert or delete edits two entries), so nothing is looked up by price and
only what changed is formatted; the list is trimmed or refilled to 10 levels afterwards.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left
from collections import deque

from marketfeed.adapters.kraken.checksum import CHECKSUM_LEVELS, decimal_text, exact_limit
from marketfeed.adapters.kraken.schemas import exact_book_decoder
from marketfeed.book import L2Book

INF = float("inf")
TOP_TEXTS = 2 * CHECKSUM_LEVELS  # entries of a side's text list: a price text and a size text per level
_crc32 = zlib.crc32


class KrakenBook:
    """One v2 book subscription: state, precision, checksum caches and the resync budget."""

    __slots__ = (
        "symbol", "native", "depth", "book", "conn", "live", "rejected", "awaiting_since", "retry_at",
        "failures", "price_precision", "qty_precision", "pscale", "qscale", "plim", "qlim",
        "ask_top", "bid_top", "ask_crc", "bid_bytes", "crc", "ask_exact", "bid_exact",
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
        """Set the pair's precision; returns True if it changed (the caller then refreshes the texts
        of a live book: ``refresh_asks``, ``refresh_bids``)."""
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
        return True

    @property
    def verifiable(self) -> bool:
        return self.price_precision is not None and self.qty_precision is not None

    def reset(self) -> None:
        """Drop the book (invalid until the next snapshot)."""
        self.book.clear()
        self.live = False
        self.ask_top: list[str] = []  # checksum texts of the top 10 asks, best first: price, size, price, ...
        self.bid_top: list[str] = []
        self.ask_crc = 0
        self.bid_bytes = b""
        self.crc = 0  # the checksum of the state: the asks' CRC continued over the bids' text
        self.ask_exact = {}
        self.bid_exact = {}

    # -- the checksum ------------------------------------------------------------------------------

    def _texts(self, levels: dict, exact: dict, prices) -> list[str]:
        """The checksum texts of ``prices`` (levels of the side whose size dict is ``levels``), flat:
        price text, size text, price text, ..."""
        pscale = self.pscale
        qscale = self.qscale
        texts: list[str] = []
        for p in prices:
            q = levels[p]
            x = exact.get(p) if exact else None
            if x is not None and x[0] == q:
                texts += x[1:]
            else:
                # "%d" of a value within 1e-6 of an integer, plus 0.5: the rounded integer (checksum.py)
                texts.append("%d" % (p * pscale + 0.5))
                texts.append("%d" % (q * qscale + 0.5))
        return texts

    def refresh_asks(self) -> None:
        """Format the top 10 asks again (after a snapshot, a precision change or an exact value)."""
        asks = self.book.asks
        top = self.ask_top = self._texts(asks.levels, self.ask_exact, asks.prices[:CHECKSUM_LEVELS])
        self.ask_crc = _crc32("".join(top).encode())
        self.crc = _crc32(self.bid_bytes, self.ask_crc)

    def refresh_bids(self) -> None:
        bids = self.book.bids
        top = self.bid_top = self._texts(bids.levels, self.bid_exact, bids.prices[-1 : -CHECKSUM_LEVELS - 1 : -1])
        self.bid_bytes = "".join(top).encode()
        self.crc = _crc32(self.bid_bytes, self.ask_crc)

    def checksum(self) -> int:
        """Kraken's CRC32 of the current top 10 (kept in ``crc``, recomputed when a top 10 changes)."""
        return self.crc

    def record_exact(self, frame: str | bytes) -> None:
        """Keep the exact checksum text of every level of ``frame`` (a book message with a value too
        large for the float path), read from the wire digits. The caller formats the top 10 again."""
        try:
            msg = exact_book_decoder.decode(frame)
        except Exception:  # the frame decoded once already; a failure here would be a bug, not input
            return
        pp, qp = self.price_precision, self.qty_precision
        assert pp is not None and qp is not None
        for d in msg.data:
            for levels, exact in ((d.asks, self.ask_exact), (d.bids, self.bid_exact)):
                for lv in levels:
                    p = float(lv.price)
                    if lv.qty:
                        exact[p] = (float(lv.qty), decimal_text(lv.price, pp), decimal_text(lv.qty, qp))
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
        """Apply one update message in order, truncate to depth, refresh what the checksum needs
        (``crc`` is then the checksum of the new state).
        Returns the event's (bids, asks): the levels as received, then the implicit removals as
        ``(price, 0.0)``.

        The hot path of the adapter: both sides' loops and the checksum refresh are written out here
        rather than called (a call costs about as much as applying a level).

        Each side's loop keeps ``top`` (the texts of that side's best ``k`` levels, two per level) in step
        with the prices: ``k`` is 10 between messages (fewer only while the side has fewer levels) and
        drifts within a message as levels enter or leave the top; ``edge`` is the k-th best price.
        A change at or before the edge edits ``top`` at the level's rank; a change behind it leaves
        ``top`` as it is (it only shifts levels behind the k-th). Afterwards ``top`` is trimmed to 10 or
        refilled from the prices behind it."""
        book = self.book
        depth = self.depth or 1_000_000
        plim = self.plim
        qlim = self.qlim
        pscale = self.pscale
        qscale = self.qscale
        unsafe = dirty_a = dirty_b = False
        out_a: list = []
        out_b: list = []
        if asks:
            grew = False
            side = book.asks
            levels = side.levels
            prices = side.prices  # ascending: best first
            top = self.ask_top
            k = len(top) >> 1
            dirty_a = k < CHECKSUM_LEVELS  # a short side: whatever arrives may join the top
            edge = prices[k - 1] if k else -INF
            for lv in asks:
                p = lv.price
                q = lv.qty
                if q >= qlim or p >= plim:
                    unsafe = True
                if p <= edge:  # within the top k: its index in prices is its rank in top
                    dirty_a = True
                    i = bisect_left(prices, p, 0, k)
                    if prices[i] == p:
                        if q:  # a new size: the price text stays
                            levels[p] = q
                            top[2 * i + 1] = "%d" % (q * qscale + 0.5)
                        else:
                            del levels[p]
                            del prices[i]
                            del top[2 * i : 2 * i + 2]
                            k -= 1
                            edge = prices[k - 1] if k else -INF
                    elif q:  # a new level inside the top: the edge level moves back one rank
                        levels[p] = q
                        prices[i:i] = (p,)  # a memmove: list.insert moves the items one by one
                        top[2 * i : 2 * i] = ("%d" % (p * pscale + 0.5), "%d" % (q * qscale + 0.5))
                        k += 1
                        grew = True
                elif q:
                    if p not in levels:
                        i = bisect_left(prices, p)
                        prices[i:i] = (p,)
                        grew = True
                    levels[p] = q
                elif levels.pop(p, None) is not None:
                    del prices[bisect_left(prices, p)]
                out_a.append((p, q))
            while grew and len(prices) > depth:  # Kraken's implicit removal, made explicit
                p = prices.pop()
                del levels[p]
                out_a.append((p, 0.0))
            if dirty_a:
                if k > CHECKSUM_LEVELS:
                    del top[TOP_TEXTS:]
                elif k < CHECKSUM_LEVELS and len(prices) > k:
                    top += self._texts(levels, self.ask_exact, prices[k:CHECKSUM_LEVELS])
        if bids:
            grew = False
            side = book.bids
            levels = side.levels
            prices = side.prices  # ascending: best last
            top = self.bid_top
            k = len(top) >> 1
            dirty_b = k < CHECKSUM_LEVELS
            n = len(prices)
            edge = prices[n - k] if k else INF
            for lv in bids:
                p = lv.price
                q = lv.qty
                if q >= qlim or p >= plim:
                    unsafe = True
                if p >= edge:  # within the top k: rank n - 1 - index, texts at 2 * rank
                    dirty_b = True
                    n = len(prices)
                    i = bisect_left(prices, p, n - k, n)
                    if i < n and prices[i] == p:
                        if q:
                            levels[p] = q
                            top[2 * (n - i) - 1] = "%d" % (q * qscale + 0.5)
                        else:
                            del levels[p]
                            del prices[i]
                            del top[2 * (n - 1 - i) : 2 * (n - i)]
                            k -= 1
                            edge = prices[n - 1 - k] if k else INF
                    elif q:
                        levels[p] = q
                        prices.insert(i, p)
                        top[2 * (n - i) : 2 * (n - i)] = ("%d" % (p * pscale + 0.5), "%d" % (q * qscale + 0.5))
                        k += 1
                        grew = True
                elif q:
                    if p not in levels:
                        i = bisect_left(prices, p)
                        prices[i:i] = (p,)
                        grew = True
                    levels[p] = q
                elif levels.pop(p, None) is not None:
                    del prices[bisect_left(prices, p)]
                out_b.append((p, q))
            while grew and len(prices) > depth:
                p = prices.pop(0)
                del levels[p]
                out_b.append((p, 0.0))
            if dirty_b:
                n = len(prices)
                if k > CHECKSUM_LEVELS:
                    del top[TOP_TEXTS:]
                elif k < CHECKSUM_LEVELS and n > k:
                    top += self._texts(levels, self.bid_exact, prices[max(n - CHECKSUM_LEVELS, 0) : n - k][::-1])
        if unsafe:
            self.record_exact(frame)
            self.refresh_asks()
            self.refresh_bids()
            return out_b, out_a
        if dirty_b:
            bid_bytes = self.bid_bytes = "".join(self.bid_top).encode()
            if dirty_a:
                self.ask_crc = _crc32("".join(self.ask_top).encode())
            self.crc = _crc32(bid_bytes, self.ask_crc)
        elif dirty_a:
            self.ask_crc = crc = _crc32("".join(self.ask_top).encode())
            self.crc = _crc32(self.bid_bytes, crc)
        return out_b, out_a
