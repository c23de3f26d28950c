"""Writes the reliability table (build/reliability-report.md, and the terminal summary) after a run."""

from __future__ import annotations

from pathlib import Path

from tests.reliability.harness import RESULTS, report_table

REPORT = Path(__file__).resolve().parents[2] / "build" / "reliability-report.md"


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run the slow reliability tests (make reliability)")


def pytest_collection_modifyitems(config, items):
    """Slow reliability tests (mass resync, shutdown under load) run only with --slow: `make test`
    stays fast, `make reliability` runs them."""
    if config.getoption("--slow"):
        return
    kept = [i for i in items if i.get_closest_marker("slow") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i.get_closest_marker("slow") is not None])
        items[:] = kept


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not RESULTS:
        return
    table = report_table(RESULTS)
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text("# Reliability: faults injected against the simulator\n\n" + table)
    terminalreporter.write_sep("-", f"reliability table (also {REPORT})")
    terminalreporter.write(table)
