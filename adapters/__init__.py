"""Venue adapters, installed as ``marketfeed.adapters``: one package per venue, each a pure state
machine behind ``marketfeed.protocol.Adapter``."""
