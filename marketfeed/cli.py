"""The ``marketfeed`` command: run the daemon, check a config, replay captures.

Exit codes: 0 success; 2 bad config or usage (one line on stderr naming the file and key);
1 runtime failure or an unreadable capture (a message on stderr naming the file and line).
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import BinaryIO

from marketfeed.capture import CaptureError
from marketfeed.config import Config, ConfigError, load_config
from marketfeed.events import Event, encode_lines

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

CHUNK = 1 << 20  # replay output is written in chunks of about this many bytes
ENCODE_BATCH = 256  # events encoded per encoder call


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"marketfeed: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marketfeed",
        description="Exchange market data: correct order books and one normalised event stream.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon (stop with SIGINT or SIGTERM)")
    run.add_argument("--config", required=True, metavar="FILE", help="TOML config file")
    run.add_argument("--record", metavar="DIR", help="also record captures to DIR (overrides [record] dir)")
    _log_options(run)
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="validate a config file and print a summary")
    check.add_argument("config", metavar="FILE")
    check.set_defaults(func=_cmd_check_config)

    replay = sub.add_parser("replay", help="replay captures through the adapters, write events as JSON Lines")
    replay.add_argument("captures", nargs="+", metavar="CAPTURE", help="capture files, replayed in order as one recording")
    replay.add_argument("--out", metavar="FILE", help="output JSONL file (gzip if it ends in .gz), or - for stdout; without it, the events go to the --config file's sinks")
    replay.add_argument("--speed", type=_positive_float, metavar="N", help="pace at N times recorded time (default: as fast as possible)")
    replay.add_argument("--config", metavar="FILE", help="take venue settings from this config (default: follow every symbol in the capture)")
    _log_options(replay)
    replay.set_defaults(func=_cmd_replay)

    status = sub.add_parser("status", help="print the health of a running daemon (its /health and /metrics)")
    status.add_argument("--url", help="the daemon's [metrics] endpoint (default: from --config, else http://127.0.0.1:9464)")
    status.add_argument("--config", metavar="FILE", help="take the endpoint from this config's [metrics] section")
    status.add_argument("--timeout", type=_positive_float, default=5.0, metavar="SECONDS")
    status.set_defaults(func=_cmd_status)

    simulate = sub.add_parser("simulate", help="serve venues' protocols on loopback (books from a recording or seeded), with faults")
    simulate.add_argument("--venue", action="append", required=True, metavar="VENUE", help="binance, binance-usdm, kraken, coinbase or okx (repeat for several)")
    simulate.add_argument("--capture", action="append", default=[], metavar="[VENUE=]FILE", help="a recording whose books the venue serves (binance, binance-usdm)")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=0, metavar="N", help="first port; the next venues take N+1, N+2, ... (default: free ports)")
    simulate.add_argument("--speed", type=_positive_float, default=1.0, metavar="X", help="message rate multiplier")
    simulate.add_argument("--faults", action="append", default=[], metavar="[VENUE=]SPEC", help="e.g. drop@1500,kill@3000,stall@5000:20s, or random[:COUNT[:EVERY]]")
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument("--config-out", metavar="FILE", help="also write a daemon config pointing at the servers")
    _log_options(simulate)
    simulate.set_defaults(func=_cmd_simulate)
    return parser


def _log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="overrides [log] level")
    parser.add_argument("--log-format", choices=("auto", "json", "console"), help="overrides [log] format")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _setup_logging(args: argparse.Namespace, config: Config | None) -> None:
    from marketfeed.logging import configure_logging

    level = args.log_level or (config.log.level if config else "info")
    fmt = args.log_format or (config.log.format if config else "auto")
    configure_logging(level, fmt)


# --- check-config -----------------------------------------------------------------------------------


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    _build_adapters(config, args.config)
    venues = "; ".join(
        f"{name}: {', '.join(v.symbols)} ({'+'.join(v.channels)})" for name, v in config.venues.items()
    )
    sinks = ", ".join(_describe_sink(s) for s in config.sinks) or "none"
    record = f"; record: {config.record.dir}" if config.record else ""
    print(f"ok: {args.config}: venues: {venues}; sinks: {sinks}{record}")
    return EXIT_OK


def _describe_sink(sink: object) -> str:
    path = getattr(sink, "path", None)
    kind = type(sink).__name__.removesuffix("SinkConfig").lower()
    return f"{kind} {path}" if path else kind


def _build_adapters(config: Config, source: str) -> dict:
    """Construct each venue's adapter: venue-specific settings are checked by the adapter itself.
    Its ValueError becomes a config error naming the key the message is about."""
    from marketfeed.venues import make_adapter

    adapters = {}
    for name, venue in config.venues.items():
        try:
            adapters[name] = make_adapter(name, venue)
        except (ConfigError, ValueError, TypeError) as exc:
            message = str(exc).removeprefix(f"{name}: ")
            if isinstance(exc, ConfigError) and message.startswith(f"venues.{name}"):
                key, _, message = message.partition(": ")  # the adapter named the key itself
            else:
                key = _adapter_key(name, message)
            raise ConfigError(f"{source}: {key}: {message}") from None
    return adapters


def _adapter_key(venue: str, message: str) -> str:
    """``venues.okx.book_channel`` for "book_channel must be one of ...": the first config key the
    message names, else the venue's table."""
    from marketfeed.config import VenueConfig

    found = [
        (m.start(), field)
        for field in VenueConfig.__struct_fields__
        if (m := re.search(rf"\b{re.escape(field)}\b", message)) is not None
    ]
    return f"venues.{venue}.{min(found)[1]}" if found else f"venues.{venue}"


# --- run ----------------------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    adapters = _build_adapters(config, args.config)
    _setup_logging(args, config)
    from marketfeed.daemon import Daemon, run_event_loop

    daemon = Daemon(config, record_dir=args.record, adapters=adapters, config_path=args.config)
    return run_event_loop(daemon.run())


# --- status -------------------------------------------------------------------------------------------


def _cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 healthy, 1 unhealthy (or not ready), 2 unreachable."""
    from marketfeed.status import fetch_status, render_status

    url = args.url
    if url is None:
        metrics = load_config(args.config).metrics if args.config else None
        host, port = (metrics.host, metrics.port) if metrics is not None else ("127.0.0.1", 9464)
        host = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    try:
        report = fetch_status(url, args.timeout)
    except OSError as exc:
        print(f"marketfeed status: cannot reach {url}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(render_status(report))
    return EXIT_OK if report.healthy and report.ready else EXIT_FAILURE


# --- replay -------------------------------------------------------------------------------------------


class _ChunkedOutput:
    """JSON Lines into one bytearray, written out in big chunks: no per-event work beyond encoding.
    Events are encoded a few hundred at a time: one encoder call per frame's one event cost a third
    more than the encoding itself."""

    def __init__(self, out: str) -> None:
        self.stdout = out == "-"
        if self.stdout:
            sys.stdout.flush()
            self._fh: BinaryIO = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
        elif out.endswith(".gz"):
            self._fh = gzip.open(out, "wb", compresslevel=5)  # type: ignore[assignment]
        else:
            self._fh = open(out, "wb")  # buffered: its write() writes all, even on a pipe
        self.buf = bytearray()
        self.pending: list[Event] = []
        self.events = 0

    def emit(self, events: list[Event]) -> None:
        pending = self.pending
        pending += events
        if len(pending) >= ENCODE_BATCH:
            self._encode()

    def _encode(self) -> None:
        self.events += len(self.pending)
        encode_lines(self.pending, self.buf)
        self.pending.clear()
        if len(self.buf) >= CHUNK:
            self._write()

    def _write(self) -> None:
        if self.pending:
            self._encode()
        if self.buf:
            self._fh.write(self.buf)
            self.buf.clear()

    def flush(self) -> None:
        """Everything so far out to the reader now (paced replay)."""
        self._write()
        self._fh.flush()

    def close(self) -> None:
        try:
            self._write()
        finally:
            self._fh.close()


def _paced(emit: Callable[[list[Event]], None], flush: Callable[[], None], speed: float) -> Callable[[list[Event]], None]:
    """Pace batches at ``speed`` times their recorded ``ts_recv``: sleep only when ahead of schedule."""
    start: list[float] = []  # [first recorded ts (ns), wall clock (s) at the first batch]

    def paced(events: list[Event]) -> None:
        ts = events[0].ts_recv
        if not start:
            start.extend((ts, time.monotonic()))
        else:
            ahead = start[1] + (ts - start[0]) / 1e9 / speed - time.monotonic()
            if ahead > 0.001:
                flush()  # a paced consumer should see events when they are due, not a chunk later
                time.sleep(ahead)
        emit(events)

    return paced


def _cmd_replay(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else None
    if args.out is None:
        if config is None:
            print("marketfeed replay: give --out FILE, or --config FILE to send the events to its sinks", file=sys.stderr)
            return EXIT_USAGE
        _setup_logging(args, config)
        return _replay_into_sinks(args, config)
    _setup_logging(args, config)
    import structlog

    from marketfeed.replay import ReplayError, replay_to

    log = structlog.get_logger("marketfeed.replay")
    try:
        out = _ChunkedOutput(args.out)
    except OSError as exc:
        print(f"marketfeed replay: {args.out}: cannot write: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    emit = out.emit if args.speed is None else _paced(out.emit, out.flush, args.speed)
    derived = None
    if config is not None:
        # the config's top settings: the same tops the live run's sinks got (time is the events' own)
        from marketfeed.top import DerivedFeed

        derived = DerivedFeed(config, keep_books=False)
        if derived.active:
            write = emit

            def emit(events: list) -> None:
                write(derived.derive(events))
        else:
            derived = None
    started = time.perf_counter()
    try:
        try:
            replayer = replay_to(args.captures, emit, config)
            if derived is not None:
                tail = derived.finish()
                if tail:
                    write(tail)
        finally:
            out.close()  # also on failure: the events before the bad line are kept
    except (CaptureError, ReplayError) as exc:
        print(f"marketfeed replay: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        # the reader went away (`| head`): not our failure, and nothing more to say
        _silence_stdout()
        return EXIT_OK
    seconds = time.perf_counter() - started
    log.info(
        "replay finished",
        files=len(args.captures),
        records=replayer.records,
        events=out.events,
        seconds=round(seconds, 3),
        records_per_second=round(replayer.records / seconds) if seconds > 0 else None,
        out=args.out,
    )
    return EXIT_OK


# --- simulate -----------------------------------------------------------------------------------------


def _cmd_simulate(args: argparse.Namespace) -> int:
    _setup_logging(args, None)
    from marketfeed.simulate.faults import FaultError
    from marketfeed.simulate.serve import (
        VENUES,
        capture_venue,
        config_toml,
        parse_venue_faults,
        serve_forever,
        start_venues,
    )

    venues = list(dict.fromkeys(args.venue))
    unknown = [v for v in venues if v not in VENUES]
    if unknown:
        print(f"marketfeed simulate: unknown venue {unknown[0]!r} (one of {', '.join(VENUES)})", file=sys.stderr)
        return EXIT_USAGE
    try:
        captures: dict[str, list[str]] = {}
        for item in args.capture:
            name, sep, path = item.partition("=")
            if not (sep and name in VENUES):
                name, path = capture_venue(item), item
            if name not in venues:
                raise ValueError(f"{path}: a recording of {name}, which is not simulated (add --venue {name})")
            captures.setdefault(name, []).append(path)
        faults = parse_venue_faults(args.faults, venues, args.seed)
    except (FaultError, ValueError, CaptureError, OSError) as exc:
        print(f"marketfeed simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def serve() -> int:
        try:
            served = await start_venues(venues, args.host, args.port, args.seed, args.speed, captures, faults)
        except (FaultError, ValueError, CaptureError) as exc:
            print(f"marketfeed simulate: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:
            print(f"marketfeed simulate: cannot listen: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        toml = config_toml(served)
        if args.config_out:
            Path(args.config_out).write_text(toml + '\n[[sinks]]\ntype = "stdout"\n')
        print("# marketfeed simulate: point a daemon at these servers (Ctrl-C stops)", flush=True)
        print(toml, flush=True)
        await serve_forever(served)
        return EXIT_OK

    import asyncio
    from pathlib import Path

    try:
        return asyncio.run(serve())
    except KeyboardInterrupt:
        return EXIT_OK


def _replay_into_sinks(args: argparse.Namespace, config: Config) -> int:
    """Replay into the config's sinks (marketfeed.sinks.replay): every sink gets every event."""
    import structlog

    from marketfeed.replay import ReplayError
    from marketfeed.sinks.replay import replay_into_sinks

    pace = None if args.speed is None else (lambda emit, flush: _paced(emit, flush, args.speed))
    started = time.perf_counter()
    try:
        from marketfeed.daemon import run_event_loop

        result = run_event_loop(replay_into_sinks(args.captures, config, pace))
    except (CaptureError, ReplayError) as exc:
        print(f"marketfeed replay: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # a sink that cannot start (server unreachable, bad credentials)
        print(f"marketfeed replay: {exc!r}", file=sys.stderr)
        return EXIT_FAILURE
    seconds = time.perf_counter() - started
    structlog.get_logger("marketfeed.replay").info(
        "replay finished", files=len(args.captures), records=result.replayer.records, events=result.events,
        seconds=round(seconds, 3), sinks=result.counters,
    )
    if not result.complete:
        print(f"marketfeed replay: not every sink wrote every event: {result.counters}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _silence_stdout() -> None:
    # Python flushes stdout at exit; with the pipe closed that would print a second traceback
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
