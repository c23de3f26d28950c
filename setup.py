"""The compiled parts, all optional: the order book's per-level loop (marketfeed/_book.c), OKX's
checksum (marketfeed/_checksum.c), the capture-line reader (marketfeed/_capture.c), the event writer
(marketfeed/_events.c) and Binance's frame readers (adapters/binance/_frames.c). Everything else is in
pyproject.toml. ``optional``: without a C compiler the install still succeeds and the same code runs in
pure Python (each module's ``ACCELERATED`` is then False)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("marketfeed._book", ["marketfeed/_book.c"], optional=True),
        Extension("marketfeed._checksum", ["marketfeed/_checksum.c"], optional=True),
        Extension("marketfeed._capture", ["marketfeed/_capture.c"], depends=["marketfeed/_json.h"], optional=True),
        Extension("marketfeed._events", ["marketfeed/_events.c"], optional=True),
        Extension(
            "marketfeed.adapters.binance._frames",
            ["adapters/binance/_frames.c"],
            include_dirs=["marketfeed"],
            depends=["marketfeed/_json.h"],
            optional=True,
        ),
    ]
)
