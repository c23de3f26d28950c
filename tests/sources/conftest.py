from tests.sinks.conftest import nats_server, redis_server  # noqa: F401  (the real servers)
