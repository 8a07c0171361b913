"""Trace settings: Triton's rules for run-time changes, and the start-up-only trace file."""

from __future__ import annotations

import pytest

from seawall.core.trace import TraceSettings
from seawall.errors import InvalidArgumentError, UnsupportedError


def test_defaults_are_off() -> None:
    assert TraceSettings().get() == {
        "trace_level": ["OFF"],
        "trace_rate": ["1000"],
        "trace_count": ["-1"],
        "log_frequency": ["0"],
        "trace_file": [""],
        "trace_mode": ["triton"],
    }


def test_trace_file_cannot_change_at_run_time() -> None:
    settings = TraceSettings()
    with pytest.raises(UnsupportedError, match="trace file location can not be updated"):
        settings.update({"trace_file": ["/etc/passwd"], "trace_rate": ["5"]})
    assert settings.get()["trace_rate"] == ["1000"]  # nothing changed


def test_a_level_needs_a_trace_file() -> None:
    with pytest.raises(InvalidArgumentError, match="trace file name is not given"):
        TraceSettings().update({"trace_level": ["TIMESTAMPS"]})
    assert TraceSettings(file="/tmp/t.json").update({"trace_level": ["TIMESTAMPS"]})["trace_level"] == ["TIMESTAMPS"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"trace_level": ["OFF", "TIMESTAMPS"]}, "Expect only one trace level 'OFF'"),
        ({"trace_rate": ["abc"]}, "Unable to parse 'trace_rate', got: abc"),
        ({"trace_count": ["-2"]}, "Expecting value >= -1, got:-2"),
        ({"trace_rate": ["1", "2"]}, "expect only 1 value for 'trace_rate'"),
    ],
)
def test_malformed_changes_are_refused(changes: dict[str, list[str]], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        TraceSettings().update(changes)


def test_model_overrides_fall_back_to_global_when_cleared() -> None:
    settings = TraceSettings()
    assert settings.update({"trace_rate": ["7"]}, model="m")["trace_rate"] == ["7"]
    assert settings.get()["trace_rate"] == ["1000"]
    assert settings.update({"trace_rate": None}, model="m")["trace_rate"] == ["1000"]
