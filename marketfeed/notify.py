"""The systemd notification protocol (sd_notify), without a dependency on libsystemd.

Under ``Type=notify`` systemd passes the path of a unix datagram socket in ``NOTIFY_SOCKET``; a
service writes ``KEY=value`` lines to it: ``READY=1`` when start-up is over, ``WATCHDOG=1`` at least
every ``WATCHDOG_USEC`` microseconds (systemd restarts the service when one is missed, so a hung event
loop gets restarted), ``STOPPING=1`` when shutting down, ``STATUS=...`` for ``systemctl status``.
A name starting with ``@`` is in the abstract namespace (a leading NUL byte).

Without ``NOTIFY_SOCKET`` (not under systemd) every call is a cheap no-op. A failed send is logged
once and never raised: the feed must not stop because the supervisor's socket went away.
"""

from __future__ import annotations

import os
import socket

import structlog

log = structlog.get_logger("marketfeed.notify")


class Notifier:
    def __init__(self, address: str | None = None, environ: dict[str, str] | os._Environ[str] | None = None) -> None:
        """``address``: the socket (default: ``NOTIFY_SOCKET`` from ``environ``/os.environ)."""
        env = os.environ if environ is None else environ
        self.address = address if address is not None else env.get("NOTIFY_SOCKET") or None
        self.watchdog_interval = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def _target(self) -> str | bytes:
        assert self.address is not None
        if self.address.startswith("@"):
            return b"\0" + self.address[1:].encode()
        return self.address

    def notify(self, **fields: str | int) -> bool:
        """Send one datagram of ``KEY=value`` lines (``notify(READY=1, STATUS="...")``)."""
        if self.address is None:
            return False
        lines = []
        for key, value in fields.items():
            text = str(value).replace("\n", " ")  # one line per field: a newline would start a new key
            lines.append(f"{key}={text}")
        payload = "\n".join(lines)
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload.encode(), self._target())
        except OSError as exc:
            if not self._failed:  # once: a missing supervisor socket would otherwise log every tick
                log.error("systemd notification failed", socket=self.address, error=str(exc))
                self._failed = True
            return False
        self._failed = False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify(READY=1, **({"STATUS": status} if status else {}))

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        return self.notify(STOPPING=1, **({"STATUS": status} if status else {}))

    def reloading(self) -> bool:
        return self.notify(RELOADING=1)

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of ``WATCHDOG_USEC`` (systemd's advice), or None when
    no watchdog is asked for or ``WATCHDOG_PID`` names another process."""
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None
