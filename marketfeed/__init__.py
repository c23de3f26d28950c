"""marketfeed: exchange market data, normalised, with books kept exactly right."""

__version__ = "0.1.0"
