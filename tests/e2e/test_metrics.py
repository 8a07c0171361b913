"""End-to-end metrics frontend: Triton's per-model families, HELP texts and labels; 404/405 elsewhere."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.harness import ServerProcess, http_call, start_seawall

FAMILIES = {
    "nv_inference_request_success": ("counter", "Number of successful inference requests, all batch sizes"),
    "nv_inference_request_failure": ("counter", "Number of failed inference requests, all batch sizes"),
    "nv_inference_count": ("counter", "Number of inferences performed (does not include cached requests)"),
    "nv_inference_exec_count": (
        "counter",
        "Number of model executions performed (does not include cached requests)",
    ),
    "nv_inference_pending_request_count": (
        "gauge",
        "Instantaneous number of pending requests awaiting execution per-model.",
    ),
    "nv_inference_request_duration_us": (
        "counter",
        "Cumulative inference request duration in microseconds (includes cached requests)",
    ),
    "nv_inference_queue_duration_us": (
        "counter",
        "Cumulative inference queuing duration in microseconds (includes cached requests)",
    ),
    "nv_inference_compute_input_duration_us": (
        "counter",
        "Cumulative compute input duration in microseconds (does not include cached requests)",
    ),
    "nv_inference_compute_infer_duration_us": (
        "counter",
        "Cumulative compute inference duration in microseconds (does not include cached requests)",
    ),
    "nv_inference_compute_output_duration_us": (
        "counter",
        "Cumulative inference compute output duration in microseconds (does not include cached requests)",
    ),
}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = start_seawall()
    try:
        yield process
    finally:
        process.stop()


def _get(address: str, path: str, method: str = "GET") -> tuple[int, str, str]:
    status, headers, body = http_call(address, method, path)
    return status, headers.get("content-type", ""), body.decode()


def _samples(text: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def test_families_help_and_type(server: ServerProcess) -> None:
    status, content_type, text = _get(server.metrics, "/metrics")
    assert status == 200 and content_type == "text/plain; charset=utf-8"
    for name, (kind, documentation) in FAMILIES.items():
        assert f"# HELP {name} {documentation}\n# TYPE {name} {kind}\n" in text
    samples = _samples(text)
    assert samples['nv_inference_request_failure{model="add_sub",reason="BACKEND",version="1"}'] == 0
    assert 'nv_inference_pending_request_count{model="identity",version="1"}' in samples
    assert "_total" not in text


def test_counts_follow_inferences(server: ServerProcess) -> None:
    before = _samples(_get(server.metrics, "/metrics/")[2])
    client = httpclient.InferenceServerClient(server.http)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        tensor = httpclient.InferInput(name, [4], "FP32")
        tensor.set_data_from_numpy(np.ones(4, dtype=np.float32))
        inputs.append(tensor)
    for _ in range(3):
        client.infer("add_sub", inputs)
    client.close()
    after = _samples(_get(server.metrics, "/metrics")[2])
    key = 'nv_inference_request_success{model="add_sub",version="1"}'
    assert after[key] - before[key] == 3
    count = 'nv_inference_count{model="add_sub",version="1"}'
    assert after[count] - before[count] == 3
    duration = 'nv_inference_request_duration_us{model="add_sub",version="1"}'
    assert after[duration] > before[duration]


def test_other_paths_and_methods(server: ServerProcess) -> None:
    assert _get(server.metrics, "/other")[::2] == (404, '{"error":"Not Found"}')
    assert _get(server.metrics, "/metrics", "POST")[::2] == (405, '{"error":"Method Not Allowed"}')
    assert _get(server.metrics, "/metrics?x=1")[0] == 200


def test_metrics_config_counter_latencies_false_removes_the_duration_counters() -> None:
    process = start_seawall("--metrics-config=counter_latencies=false", "--metrics-config=summary_latencies=false")
    try:
        status, _, text = _get(process.metrics, "/metrics")
        assert status == 200 and "nv_inference_request_success" in text
        assert "_duration_us" not in text and "_summary_us" not in text
    finally:
        process.stop()
