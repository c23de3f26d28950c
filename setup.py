"""The one compiled part: the order book's per-level loop (marketfeed/_book.c). Everything else is in
pyproject.toml. ``optional``: without a C compiler the install still succeeds and book.py runs its
pure-Python loops (marketfeed.book.ACCELERATED is then False)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("marketfeed._book", ["marketfeed/_book.c"], optional=True)])
