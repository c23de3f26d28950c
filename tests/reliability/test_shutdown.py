"""SIGTERM under load: `marketfeed run` against the simulator at a high message rate, recording every
frame it reads; on SIGTERM it exits 0 within 5 seconds, and the JSONL sink holds every event the
adapters made from what was read: the replay of the recording (the same adapters fed the same frames)
gives exactly the events in the file."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from marketfeed.config import load_config
from marketfeed.events import decode
from marketfeed.replay import replay_events
from marketfeed.simulate.serve import config_toml, start_venues, stop_venues
from tests.integration.live import wait_until

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


async def test_sigterm_under_load_flushes_everything(tmp_path: Path) -> None:
    served = await start_venues(["binance", "okx"], seed=3, options={"binance": {"interval": 0.005}, "okx": {"interval": 0.005}})
    out = tmp_path / "events.jsonl"
    record = tmp_path / "rec"
    config = tmp_path / "marketfeed.toml"
    config.write_text(
        config_toml(served, {"stale_after": "5.0"})
        + f'\n[[sinks]]\ntype = "jsonl"\npath = "{out}"\n'
        + f'\n[record]\ndir = "{record}"\ngzip = false\nrotate_mb = 100000\nrotate_minutes = 100000\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "marketfeed", "run", "--config", str(config), "--log-format", "json",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    try:
        await wait_until(lambda: out.exists() and out.stat().st_size > 2_000_000, "2 MB of events written", 60.0)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 5.0)  # the bound the issue sets
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await stop_venues(served)
    stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
    assert code == 0, stderr[-2000:]
    written = [decode(line) for line in out.read_bytes().splitlines()]
    recordings = sorted(str(p) for p in record.rglob("*.jsonl*"))
    assert recordings
    by_venue: dict[str, list[str]] = {}
    for path in recordings:
        venue = "binance" if "binance" in Path(path).name else "okx"
        by_venue.setdefault(venue, []).append(path)
    cfg = load_config(config)
    for venue, paths in by_venue.items():
        replayed = [e for e in replay_events(paths, cfg) if e.venue == venue]
        ours = [e for e in written if e.venue == venue]
        assert len(ours) == len(replayed), venue
        assert ours == replayed, venue
