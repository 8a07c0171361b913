"""pytest plugin for `make reliability`: one line per test at the end of the run, with its outcome, its duration
and the figures it recorded (`figure` fixture in conftest.py). Loaded with `-p tests.reliability.report`."""

from __future__ import annotations

import pytest

_LINES: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and not report.passed):
        figures = "; ".join(str(value) for key, value in report.user_properties if key == "figure")
        outcome = report.outcome.upper()
        _LINES.append(f"{outcome:7} {report.duration:6.1f}s  {report.nodeid}" + (f"  {figures}" if figures else ""))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.section("reliability")
    for line in _LINES:
        terminalreporter.write_line(line)
