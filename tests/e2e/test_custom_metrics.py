"""Custom metrics (pb_utils.MetricFamily) end to end: a model's counter, gauge and histogram on /metrics beside
Triton's families, every refused use with its exact message, the limits, and removal when objects are dropped or
the model unloads. Each test runs against a stub-process model and against the same model in process."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from seawall.core import custom_metrics
from tests.harness import TEST_MODELS, ServerProcess, start_seawall

MODEL = TEST_MODELS / "custom_metrics"
IN_PROCESS = 'parameters { key: "SEAWALL_IN_PROCESS" value: { string_value: "true" } }\n'


def _copy_model(repository: Path, name: str, in_process: bool = False) -> None:
    target = repository / name
    shutil.copytree(MODEL, target)
    config = (MODEL / "config.pbtxt").read_text().replace('name: "custom_metrics"', f'name: "{name}"')
    (target / "config.pbtxt").write_text(config + (IN_PROCESS if in_process else ""))


def _start(repository: Path, *models: str) -> ServerProcess:
    return start_seawall(
        "--model-control-mode=explicit",
        "--allow-unrestricted-model-repository=true",  # explicit mode without a key (the unload test)
        *(f"--load-model={name}" for name in models),
        repository=repository,
    )


@pytest.fixture(scope="module", params=["stub", "in_process"])
def seawall(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("repository")
    _copy_model(repository, "custom_metrics", in_process=request.param == "in_process")
    server = _start(repository, "custom_metrics")
    yield server
    server.stop()


def run(server: ServerProcess, command: dict[str, object], model: str = "custom_metrics") -> str:
    """One command to the model (see tests/models/custom_metrics); its RESULT text."""
    with httpclient.InferenceServerClient(server.http) as client:
        tensor = httpclient.InferInput("COMMAND", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([json.dumps(command)], dtype=np.object_))
        result = client.infer(model, [tensor]).as_numpy("RESULT")
    assert result is not None
    return str(result[0].decode())


def exposition(server: ServerProcess) -> str:
    with urllib.request.urlopen(f"http://{server.metrics}/metrics", timeout=30) as reply:
        return str(reply.read().decode())


def family_lines(text: str, name: str) -> list[str]:
    """The lines of family `name` (HELP, TYPE, samples) in the exposition."""
    lines = text.splitlines()
    start = lines.index(next(line for line in lines if line.startswith(f"# HELP {name} ")))
    end = start + 1
    while end < len(lines) and not lines[end].startswith("# HELP "):
        end += 1
    return lines[start:end]


PROBE_FAMILIES = {
    "probe_requests": [
        "# HELP probe_requests Number of requests",
        "# TYPE probe_requests counter",
        'probe_requests{model="custom_metrics",version="1"} 2',
    ],
    "probe_gauge": [
        "# HELP probe_gauge A gauge",
        "# TYPE probe_gauge gauge",
        "probe_gauge -0.25",
        'probe_gauge{alpha="a\\"b\\\\c\\nd",zeta="z"} 2.5',
    ],
    "probe_latency": [
        "# HELP probe_latency A histogram",
        "# TYPE probe_latency histogram",
        'probe_latency_count{kind="x"} 3',
        'probe_latency_sum{kind="x"} 12.05',
        'probe_latency_bucket{kind="x",le="0.1"} 1',
        'probe_latency_bucket{kind="x",le="1"} 1',
        'probe_latency_bucket{kind="x",le="2.5"} 2',
        'probe_latency_bucket{kind="x",le="+Inf"} 3',
    ],
}


def test_each_kind_is_shown_beside_tritons_families(seawall: ServerProcess) -> None:
    text = exposition(seawall)
    for name, lines in PROBE_FAMILIES.items():
        assert family_lines(text, name) == lines
    assert 'nv_inference_count{model="custom_metrics",version="1"}' in text
    assert text.index("# HELP nv_inference_pending_request_count") < text.index("# HELP probe_requests")


def test_value_is_read_from_the_server(seawall: ServerProcess) -> None:
    assert run(seawall, {"op": "family", "key": "rt", "name": "rt_gauge", "kind": "gauge"}) == "OK None"
    assert run(seawall, {"op": "metric", "key": "rt1", "family": "rt", "labels": {"k": "v"}}) == "OK None"
    assert run(seawall, {"op": "set", "metric": "rt1", "value": 4.25}) == "OK None"
    assert run(seawall, {"op": "increment", "metric": "rt1", "value": -1.5}) == "OK None"
    assert run(seawall, {"op": "value", "metric": "rt1"}) == "OK 2.75"
    assert 'rt_gauge{k="v"} 2.75' in exposition(seawall).splitlines()


_COUNTER = {"op": "metric", "key": "ec", "family": "requests", "labels": {"e": "1"}}
_HISTOGRAM = {"op": "metric", "key": "eh", "family": "latency", "labels": {"e": "1"}, "buckets": [1]}
_MONOTONIC = "TRITONSERVER_METRIC_KIND_COUNTER can only be incremented monotonically by non-negative values."


@pytest.mark.parametrize(
    ("setup", "command", "expected"),
    [
        (
            [_COUNTER],
            {"op": "increment", "metric": "ec", "value": -1},
            f"Failed to increment metric value: {_MONOTONIC}",
        ),
        ([_COUNTER], {"op": "increment", "metric": "ec", "value": "1"}, "TypeError: a metric value must be a number"),
        (
            [_COUNTER],
            {"op": "set", "metric": "ec", "value": 1},
            "TRITONSERVER_METRIC_KIND_COUNTER does not support Set",
        ),
        ([_COUNTER], {"op": "observe", "metric": "ec", "value": 1}, "KIND_COUNTER does not support Observe"),
        ([], {"op": "observe", "metric": "g", "value": 1}, "TRITONSERVER_METRIC_KIND_GAUGE does not support Observe"),
        ([_HISTOGRAM], {"op": "value", "metric": "eh"}, "TRITONSERVER_METRIC_KIND_HISTOGRAM does not support Value"),
        ([_HISTOGRAM], {"op": "set", "metric": "eh", "value": 1}, "KIND_HISTOGRAM does not support Set"),
        ([_HISTOGRAM], {"op": "increment", "metric": "eh", "value": 1}, "KIND_HISTOGRAM does not support Increment"),
        (
            [],
            {"op": "family", "key": "x", "name": "nv_inference_count", "kind": "counter"},
            "Error when creating MetricFamily: Invalid metric name 'nv_inference_count': names starting with 'nv_' "
            "are Triton's own",
        ),
        ([], {"op": "family", "key": "x", "name": "NV_x", "kind": "gauge"}, "names starting with 'nv_' are Triton's"),
        (
            [],
            {"op": "family", "key": "x", "name": "probe_requests", "kind": "gauge"},
            "Error when creating MetricFamily: metric family 'probe_requests' already exists with kind COUNTER, "
            "not GAUGE",
        ),
        (
            [],
            {"op": "family", "key": "x", "name": "probe_latency_count", "kind": "counter"},
            "metric family 'probe_latency_count' would print samples of family 'probe_latency'",
        ),
        ([], {"op": "family", "key": "x", "name": "bad name{}", "kind": "counter"}, "Invalid metric name 'bad name{}'"),
        ([], {"op": "family", "key": "x", "name": "9abc", "kind": "counter"}, "Invalid metric name '9abc'"),
        ([], {"op": "family", "key": "x", "name": "", "kind": "counter"}, "a metric name must be a non-empty string"),
        ([], {"op": "family", "key": "x", "name": "a" * 129, "kind": "counter"}, "at most 128 characters"),
        ([], {"op": "family", "key": "x", "name": "k", "kind": 0}, "TypeError: MetricFamily(name: str"),
        ([], {"op": "family", "key": "x", "name": None, "kind": "gauge"}, "TypeError: MetricFamily(name: str"),
        (
            [],
            {"op": "family", "key": "x", "name": "esc", "description": "\x1b[2J", "kind": "gauge"},
            "Error when creating MetricFamily: the description holds control characters",
        ),
        (
            [],
            {"op": "family", "key": "x", "name": "long", "description": "d" * 1025, "kind": "gauge"},
            "the description is longer than 1024 characters",
        ),
        (
            [],
            {"op": "metric", "key": "x", "family": "requests", "labels": ["a"]},
            "TritonModelException: Failed to create metric. Labels must be a dictionary.",
        ),
        (
            [],
            {"op": "metric", "key": "x", "family": "requests", "labels": {"a": 1}},
            "Error when creating Metric: label names and values must be strings",
        ),
        (
            [],
            {"op": "metric", "key": "x", "family": "requests", "labels": {"bad label": "x"}},
            "Error when creating Metric: Invalid label name 'bad label'",
        ),
        ([], {"op": "metric", "key": "x", "family": "requests", "labels": {"__name__": "x"}}, "Invalid label name"),
        (
            [],
            {"op": "metric", "key": "x", "family": "requests", "labels": {"a": "x\ry"}},
            "the value of label 'a' holds control characters",
        ),
        (
            [],
            {"op": "metric", "key": "x", "family": "requests", "labels": {"a": "v" * 257}},
            "the value of label 'a' is longer than 256 characters",
        ),
        (
            [],
            {"op": "metric", "key": "x", "family": "requests", "labels": {f"l{i}": "v" for i in range(17)}},
            "a metric has at most 16 labels",
        ),
        (
            [],
            {"op": "metric", "key": "x", "family": "latency", "labels": {"le": "1"}, "buckets": [1]},
            "label name 'le' is reserved for the buckets of a histogram",
        ),
        ([], {"op": "metric", "key": "x", "family": "latency"}, "Failed to create metric. Missing required buckets."),
        (
            [],
            {"op": "metric", "key": "x", "family": "requests", "buckets": [1]},
            "Failed to create metric. Unexpected buckets found.",
        ),
        (
            [],
            {"op": "metric", "key": "x", "family": "latency", "buckets": {"a": 1}},
            "Failed to create metric. Buckets must be a list.",
        ),
        (
            [],
            {"op": "metric", "key": "x", "family": "latency", "labels": {"u": "1"}, "buckets": [2, 1]},
            "Error when creating Metric: Bucket Boundaries must be strictly sorted",
        ),
        (
            [],
            {"op": "metric", "key": "x", "family": "latency", "labels": {"u": "2"}, "buckets": list(range(65))},
            "a histogram has at most 64 buckets",
        ),
        (
            [],
            {"op": "metric", "key": "x", "family": "latency", "labels": {"kind": "x"}, "buckets": [5]},
            "a metric of family 'probe_latency' with these labels has other buckets",
        ),
    ],
)
def test_refused_uses_raise_in_the_model(
    seawall: ServerProcess, setup: list[dict[str, object]], command: dict[str, object], expected: str
) -> None:
    for step in setup:
        assert run(seawall, step) == "OK None"
    result = run(seawall, command)
    assert expected in result and not result.startswith("OK"), result
    assert seawall.is_ready()
    assert PROBE_FAMILIES["probe_requests"][2] in exposition(seawall).splitlines()


def test_texts_from_the_model_cannot_add_lines_to_the_exposition(seawall: ServerProcess) -> None:
    description = "first\n# TYPE forged counter\nforged 1 \\"
    assert run(seawall, {"op": "family", "key": "inj", "name": "inj", "description": description, "kind": "gauge"})
    value = 'v"} 1\nforged{a="b'
    assert run(seawall, {"op": "metric", "key": "inj1", "family": "inj", "labels": {"a": value}}) == "OK None"
    text = exposition(seawall)
    assert family_lines(text, "inj") == [
        "# HELP inj first\\n# TYPE forged counter\\nforged 1 \\\\",
        "# TYPE inj gauge",
        'inj{a="v\\"} 1\\nforged{a=\\"b"} 0',
    ]
    assert not [line for line in text.splitlines() if line.startswith("forged")]


def test_a_model_instance_holds_a_bounded_number_of_families_and_series(seawall: ServerProcess) -> None:
    held = 3  # the families initialize() created
    result = run(seawall, {"op": "families", "count": custom_metrics.MAX_OWNER_FAMILIES + 5})
    limit = f"a model instance may hold {custom_metrics.MAX_OWNER_FAMILIES} metric families"
    assert limit in result
    text = exposition(seawall)
    created = [line for line in text.splitlines() if line.startswith("# TYPE many_")]
    assert held + len(created) <= custom_metrics.MAX_OWNER_FAMILIES
    result = run(seawall, {"op": "metrics", "family": "requests", "count": custom_metrics.MAX_OWNER_SERIES + 1})
    assert f"a model instance may hold {custom_metrics.MAX_OWNER_SERIES} metrics" in result
    assert seawall.is_ready()
    assert run(seawall, {"op": "drop", "prefix": "m"}) == "OK None"  # many_*, m0...: deleted at the next call
    assert run(seawall, {"op": "value", "metric": "c"}) == "OK 2.0"
    assert "many_" not in exposition(seawall)


def test_dropped_objects_leave_the_exposition(seawall: ServerProcess) -> None:
    assert run(seawall, {"op": "family", "key": "d", "name": "dropped", "kind": "counter"}) == "OK None"
    assert run(seawall, {"op": "metric", "key": "d1", "family": "d", "labels": {"n": "1"}}) == "OK None"
    assert run(seawall, {"op": "metric", "key": "d2", "family": "d", "labels": {"n": "2"}}) == "OK None"
    assert family_lines(exposition(seawall), "dropped")[2:] == ['dropped{n="1"} 0', 'dropped{n="2"} 0']
    assert run(seawall, {"op": "drop", "key": "d1"}) == "OK None"
    assert run(seawall, {"op": "increment", "metric": "d2", "value": 1}) == "OK None"  # the next call deletes d1
    assert family_lines(exposition(seawall), "dropped")[2:] == ['dropped{n="2"} 1']
    assert run(seawall, {"op": "drop", "key": "d"}) == "OK None"
    result = run(seawall, {"op": "increment", "metric": "d2", "value": 1})
    assert "Invalid metric operation as the corresponding 'MetricFamily' has been deleted" in result
    assert "# HELP dropped " not in exposition(seawall)


def test_families_go_when_their_models_unload_and_kinds_never_collide(tmp_path: Path) -> None:
    _copy_model(tmp_path, "custom_metrics")
    _copy_model(tmp_path, "custom_metrics_b")
    server = _start(tmp_path, "custom_metrics", "custom_metrics_b")
    try:
        # the same family and labels in two models: one series, as in Triton
        text = exposition(server)
        assert 'probe_requests{model="custom_metrics",version="1"} 4' in text.splitlines()
        other_kind = {"op": "family", "key": "x", "name": "probe_gauge", "kind": "histogram"}
        result = run(server, other_kind, model="custom_metrics_b")
        assert "metric family 'probe_gauge' already exists with kind GAUGE, not HISTOGRAM" in result
        assert run(server, {"op": "family", "key": "b", "name": "only_b", "kind": "gauge"}, "custom_metrics_b")
        assert "# HELP only_b " in exposition(server)
        with httpclient.InferenceServerClient(server.http) as client:
            client.unload_model("custom_metrics_b")
            text = exposition(server)
            assert "# HELP only_b " not in text
            assert 'probe_requests{model="custom_metrics",version="1"} 4' in text.splitlines()  # still shared
            client.unload_model("custom_metrics")
        text = exposition(server)
        assert "probe_" not in text and server.is_ready()
    finally:
        server.stop()
