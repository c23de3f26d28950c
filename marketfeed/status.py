"""``marketfeed status``: what a running daemon says about itself, read from its HTTP endpoint
(/health, /ready and a few /metrics values), as a few lines for a person at a terminal."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StatusReport:
    url: str
    healthy: bool
    ready: bool
    health: dict[str, Any]
    connections: dict[str, Any]
    metrics: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:  # 503 is an answer, not a failure to reach
        return exc.code, exc.read()
    except urllib.error.URLError as exc:
        reason = exc.reason
        raise OSError(str(reason)) from None


def fetch_status(url: str, timeout: float = 5.0) -> StatusReport:
    """Raises OSError when the daemon cannot be reached."""
    base = url.rstrip("/")
    h_status, h_body = _get(f"{base}/health", timeout)
    r_status, r_body = _get(f"{base}/ready", timeout)
    try:
        health = json.loads(h_body)
        ready = json.loads(r_body)
    except ValueError:
        raise OSError(f"{base} does not answer like a marketfeed daemon") from None
    metrics: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    m_status, m_body = _get(f"{base}/metrics", timeout)
    if m_status == 200:
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(m_body.decode()):
            for s in family.samples:
                metrics[(s.name, frozenset(s.labels.items()))] = s.value
    return StatusReport(base, h_status == 200, r_status == 200, health, ready.get("connections", {}), metrics)


def _sum(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **match: str) -> float:
    return sum(v for (n, labels), v in metrics.items() if n == name and all((k, w) in labels for k, w in match.items()))


def render_status(r: StatusReport) -> str:
    h = r.health
    state = "healthy" if r.healthy else "UNHEALTHY"
    lines = [f"{state}{'' if r.ready else ' (starting: not ready yet)'}: {h.get('valid', '?')}/{h.get('books', '?')} books valid ({r.url})"]
    for b in h.get("not_valid", []):
        why = "in grace period" if b.get("in_grace") else "past the grace period"
        never = "" if b.get("synced_before") else ", never synced"
        lines.append(f"  not valid: {b['venue']} {b['symbol']} for {b['invalid_for']:.1f} s ({why}{never})")
    if h.get("last_reload_error"):
        lines.append(f"  last reload FAILED (running config kept): {h['last_reload_error']}")
    m = r.metrics
    for venue, c in sorted(r.connections.items()):
        gaps = _sum(m, "marketfeed_gaps_total", venue=venue)
        resyncs = _sum(m, "marketfeed_resyncs_total", venue=venue)
        reconnects = _sum(m, "marketfeed_reconnects_total", venue=venue)
        messages = _sum(m, "marketfeed_messages_total", venue=venue)
        lines.append(
            f"  {venue}: connections {c['open']}/{c['connections']} open, {int(messages)} messages, "
            f"{int(reconnects)} reconnects, {int(gaps)} gaps, {int(resyncs)} resyncs"
        )
    sinks = sorted({dict(labels)["sink"] for (n, labels) in m if n == "marketfeed_sink_written_total"})
    for sink in sinks:
        lines.append(
            f"  sink {sink}: {int(_sum(m, 'marketfeed_sink_written_total', sink=sink))} written, "
            f"{int(_sum(m, 'marketfeed_sink_dropped_total', sink=sink))} dropped, "
            f"{int(_sum(m, 'marketfeed_sink_errors_total', sink=sink))} errors, "
            f"queue {int(_sum(m, 'marketfeed_sink_queue_depth', sink=sink))}"
        )
    return "\n".join(lines)
