"""The bot-facing WebSocket stream: ``StreamServer`` (server.py), its authentication (auth.py) and
the control messages shared with ``marketfeed.client`` (messages.py)."""
