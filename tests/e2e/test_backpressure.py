"""Backpressure (issue 14): `--max-inflight-requests` caps the inference requests in flight in the whole server;
one more is answered at once, HTTP 429 with Retry-After and gRPC RESOURCE_EXHAUSTED (Triton has no such cap,
and answers a full model queue 503: docs/differences.md), and the server serves again once requests finish.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml
from tritonclient.utils import InferenceServerException

from tests.harness import ROOT, TEST_MODELS, ServerProcess, http_call, http_request, start_seawall

MESSAGE = "the server has 2 inference requests in flight (--max-inflight-requests); retry later"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("backpressure")
    shutil.copytree(TEST_MODELS / "gate", repository / "gate")
    config = repository / "gate" / "config.pbtxt"
    config.write_text(config.read_text() + "instance_group [ { count: 2 kind: KIND_CPU } ]\n")
    process = start_seawall(
        "--max-inflight-requests=2",
        "--allow-sagemaker=true",
        "--sagemaker-port=0",
        repository=repository,
        env={"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "gate"},
    )
    yield process
    process.stop()


def body(folder: Path | None, tag: str) -> bytes:
    parameters = {"dir": str(folder), "tag": tag} if folder else {}
    inputs = [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]
    return json.dumps({"inputs": inputs, "parameters": parameters}).encode()


def overloaded_routes() -> list[tuple[str, bytes]]:
    """The POST routes docs/openapi.yaml answers 429 on (with a Retry-After header), for the gate model, each
    with a body it accepts."""
    document = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    overloaded = document["components"]["responses"]["Overloaded"]
    assert overloaded["headers"]["Retry-After"]["required"] is True
    routes = []
    for template, item in document["paths"].items():
        if "429" in item.get("post", {}).get("responses", {}):
            path = template.replace("{model}", "gate").replace("{version}", "1")
            generate = json.dumps({"INPUT0": [1.0]}).encode()
            routes.append((path, generate if "/generate" in path else body(None, "r")))
    return routes


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_requests_over_the_cap_get_429_then_the_server_serves_again(server: ServerProcess, tmp_path: Path) -> None:
    with ThreadPoolExecutor(2) as pool:
        held = [
            pool.submit(http_request, server, "POST", "/v2/models/gate/infer", body(tmp_path, tag), None, 90)
            for tag in ("a", "b")
        ]
        wait_for(tmp_path / "started-a")
        wait_for(tmp_path / "started-b")  # both instances busy: 2 requests in flight
        status, headers, reply = http_request(server, "POST", "/v2/models/gate/infer", body(None, "c"))
        assert (status, json.loads(reply)) == (429, {"error": MESSAGE})
        assert headers["retry-after"] == "1"
        # every inference route docs/openapi.yaml documents the 429 on answers it, with the documented header
        routes = overloaded_routes()
        assert len(routes) == 6  # infer, generate, generate_stream, each with and without a version
        for path, document in routes:
            status, headers, reply = http_request(server, "POST", path, document)
            assert (status, json.loads(reply), headers.get("retry-after")) == (429, {"error": MESSAGE}, "1"), path
        # the SageMaker listener answers its own limits as the KServe one (not Triton's cloud 400)
        status, headers, reply = http_call(server.addresses["sagemaker"], "POST", "/invocations", body(None, "s"))
        assert (status, json.loads(reply), headers["retry-after"]) == (429, {"error": MESSAGE}, "1")
        client = grpcclient.InferenceServerClient(server.grpc)
        try:
            data = grpcclient.InferInput("INPUT0", [1, 1], "FP32")
            data.set_data_from_numpy(np.ones((1, 1), np.float32))
            with pytest.raises(InferenceServerException) as refused:
                client.infer("gate", [data])
            assert (refused.value.status(), refused.value.message()) == ("StatusCode.RESOURCE_EXHAUSTED", MESSAGE)
            assert http_request(server, "GET", "/v2/health/ready")[0] == 200
            (tmp_path / "open").touch()
            assert [f.result(90)[0] for f in held] == [200, 200]
            # the cap counts requests in flight, not requests served: the next ones run
            assert http_request(server, "POST", "/v2/models/gate/infer", body(None, "d"))[0] == 200
            assert client.infer("gate", [data]).as_numpy("OUTPUT0").tolist() == [[1.0]]
        finally:
            client.close()
