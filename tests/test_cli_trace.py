"""`--trace-config` (triton mode): parsing with Triton's messages, Seawall's refusals, the start-up values the
trace extension reports, and the security report line for tracing that is on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seawall.options import TraceOptions
from tests.harness import http_request, run_seawall, start_seawall
from tests.test_cli import REPO, error_of, parse


def _trace(*settings: str) -> TraceOptions:
    return parse(*(f"--trace-config={s}" for s in settings)).trace


def test_trace_config_sets_the_start_up_trace_options() -> None:
    assert parse().trace == TraceOptions()
    trace = _trace("level=TIMESTAMPS", "rate=10", "count=5", "triton,file=/var/log/t.json", "triton,log-frequency=2")
    assert trace == TraceOptions(("TIMESTAMPS",), 10, 5, 2, "/var/log/t.json")
    for spelling in ("timestamps", "true", "on", "min", "max"):
        assert _trace(f"level={spelling}", "triton,file=/x").level == ("TIMESTAMPS",)
    # any OFF turns tracing off, as in Triton; then no file is needed
    assert _trace("level=TIMESTAMPS", "level=off").level == ("OFF",)
    assert _trace("mode=triton", "Triton,file=/x").file == "/x"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["level=loud"], 'Bad option: "--trace-config".\ninvalid value for trace level option: loud'),
        (
            ["foo,level=off"],
            'invalid value for trace mode option: foo. Available options are "triton" and "opentelemetry"',
        ),
        (["level"], "--trace-config option format is [<mode>,]<setting>=<value>. Got level"),
        (["rate=-1"], 'Bad option: "--trace-config".\nrate must be an integer in [0, 4294967295]'),
        (["count=-2"], 'Bad option: "--trace-config".\ncount must be an integer in [-1, 2147483647]'),
        (["count=--1"], 'Bad option: "--trace-config".\ncount must be an integer in [-1, 2147483647]'),
        (["log-frequency=1"], "Bad option: \"--trace-config\".\nunknown trace setting 'log-frequency'"),
        (["file=/x"], "Bad option: \"--trace-config\".\nunknown trace setting 'file'"),
        (["level=TIMESTAMPS"], "--trace-config level=TIMESTAMPS needs a trace file: --trace-config triton,file=<path>"),
        (["level=TENSORS", "triton,file=/x"], "--trace-config level=TENSORS is not yet supported by Seawall"),
        (["opentelemetry,url=http://c:4318"], "--trace-config opentelemetry is not yet supported by Seawall"),
        (["mode=opentelemetry"], "--trace-config opentelemetry is not yet supported by Seawall"),
    ],
)
def test_trace_config_refusals(settings: list[str], message: str) -> None:
    assert message in error_of(REPO, *(f"--trace-config={s}" for s in settings))


def test_security_report_flags_tracing_that_is_on(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    trace_file = tmp_path / "trace.json"
    done = run_seawall(
        f"--model-repository={tmp_path}",
        "--allow-metrics=false",
        "--trace-config=level=TIMESTAMPS",
        "--trace-config=rate=1",
        f"--trace-config=triton,file={trace_file}",
        "--security-report",
    )
    assert done.returncode == 1
    assert (
        f"--trace-config level=TIMESTAMPS: tracing is on: request ids, model names and timings are written to "
        f"{trace_file} (one request in 1)"
    ) in done.stdout
    assert not trace_file.exists()  # the report only reads the settings
    off = run_seawall(f"--model-repository={tmp_path}", "--allow-metrics=false", "--security-report")
    assert "tracing is on" not in off.stdout


def test_a_real_server_reports_the_settings_and_writes_the_trace_file(tmp_path: Path) -> None:
    trace_file = tmp_path / "trace.json"
    server = start_seawall("--trace-config=level=TIMESTAMPS", f"--trace-config=triton,file={trace_file}",
                           "--trace-config=count=1", "--trace-config=rate=1")  # fmt: skip
    try:
        status, _, body = http_request(server, "GET", "/v2/trace/setting")
        assert status == 200
        settings = json.loads(body)
        assert (settings["trace_level"], settings["trace_count"], settings["trace_file"]) == (
            ["TIMESTAMPS"], "1", str(trace_file),
        )  # fmt: skip
        assert "tracing is on" in server.log()  # the start-up security warnings
        infer = {"id": "req-7", "inputs": [{"name": n, "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}
                                           for n in ("INPUT0", "INPUT1")]}  # fmt: skip
        assert http_request(server, "POST", "/v2/models/add_sub/infer", json.dumps(infer).encode())[0] == 200
        records = json.loads((tmp_path / "trace.json.0").read_text())  # the count is used up: written at once
        assert records[0] == {"id": 1, "model_name": "add_sub", "model_version": 1, "request_id": "req-7"}
        assert [r["timestamps"][0]["name"] for r in records[1:]] == ["REQUEST_START", "QUEUE_START", "REQUEST_END"]
    finally:
        server.stop()
