"""The model repository end to end: exit-on-error, strict readiness, config names, version policies,
and a crashing model that must not take the server down."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from seawall.backends.python.restarts import MAX_RESTARTS
from tests.harness import EXAMPLES, TEST_MODELS, ServerProcess, http_request, run_seawall, start_seawall


def _repository(root: Path, *models: tuple[Path, str]) -> Path:
    for source, name in models:
        shutil.copytree(source, root / name)
    return root


def _status(server: ServerProcess, path: str) -> int:
    return http_request(server, "GET", path, timeout=10)[0]


def _add_sub(client: httpclient.InferenceServerClient) -> np.ndarray:
    inputs = [httpclient.InferInput("INPUT0", [4], "FP32"), httpclient.InferInput("INPUT1", [4], "FP32")]
    for tensor in inputs:
        tensor.set_data_from_numpy(np.ones(4, dtype=np.float32))
    result: np.ndarray = client.infer("add_sub", inputs).as_numpy("OUTPUT0")
    return result


def test_a_model_that_fails_to_load_stops_start_up_by_default(tmp_path: Path) -> None:
    repo = _repository(tmp_path, (EXAMPLES / "add_sub", "add_sub"), (TEST_MODELS / "init_fail", "init_fail"))
    done = run_seawall(f"--model-repository={repo}", "--http-port=0", "--grpc-port=0", "--metrics-port=0")
    assert done.returncode == 1
    assert "error: creating server: Internal - failed to load all models" in done.stderr
    assert str(tmp_path) not in done.stderr.split("error: creating server")[-1]
    table = _model_table(done.stdout + done.stderr)  # logged before giving up, as Triton does
    assert table[0] == ["Model", "Version", "Status"]
    assert ["add_sub", "1", "READY"] in table
    assert any(row[0] == "init_fail" and row[2].startswith("UNAVAILABLE: ") for row in table), table
    assert str(tmp_path) not in "\n".join(map(str, table))


def _model_table(log: str) -> list[list[str]]:
    """The cells of the start-up model table's rows (header included), from the log lines that hold them."""
    rows = []
    for line in log.splitlines():
        body = line.split("] ", 1)[-1]
        if body.startswith("| Model ") or (rows and body.startswith("| ")):
            rows.append([cell.strip() for cell in body.strip("|").split(" | ")])
        elif rows and not body.startswith("+"):
            break
    return rows


@pytest.fixture(scope="module")
def degraded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("repo")
    repo = _repository(root, (EXAMPLES / "add_sub", "add_sub"), (TEST_MODELS / "init_fail", "init_fail"))
    server = start_seawall("--exit-on-error=false", repository=repo)
    yield server
    server.stop()


def test_the_start_up_model_table_counts_only_what_loaded(degraded: ServerProcess) -> None:
    table = _model_table(degraded.log())
    assert table[1:2] == [["add_sub", "1", "READY"]]
    assert table[2][0] == "init_fail" and table[2][2].startswith("UNAVAILABLE: "), table
    assert "loaded 1 model(s) in " in degraded.log()


def test_without_exit_on_error_the_rest_serves_and_readiness_tells(degraded: ServerProcess) -> None:
    assert _status(degraded, "/v2/health/live") == 200
    assert _status(degraded, "/v2/health/ready") == 400  # strict readiness: a model failed
    assert _status(degraded, "/v2/models/init_fail/ready") == 400
    assert _status(degraded, "/v2/models/add_sub/ready") == 200
    client = httpclient.InferenceServerClient(degraded.http)
    np.testing.assert_array_equal(_add_sub(client), np.full(4, 2, dtype=np.float32))
    client.close()


def test_strict_readiness_off_means_ready_when_live(tmp_path: Path) -> None:
    repo = _repository(tmp_path, (EXAMPLES / "add_sub", "add_sub"), (TEST_MODELS / "init_fail", "init_fail"))
    server = start_seawall("--exit-on-error=false", "--strict-readiness=false", repository=repo)
    try:
        assert _status(server, "/v2/health/ready") == 200
        assert _status(server, "/v2/models/init_fail/ready") == 400
    finally:
        server.stop()


def test_config_name_and_version_policy(tmp_path: Path) -> None:
    repo = _repository(tmp_path, (EXAMPLES / "identity", "identity"))
    shutil.copytree(repo / "identity" / "1", repo / "identity" / "2")
    shutil.copytree(repo / "identity" / "1", repo / "identity" / "3")
    (repo / "identity" / "configs").mkdir()
    config = (repo / "identity" / "config.pbtxt").read_text()
    (repo / "identity" / "configs" / "two.pbtxt").write_text(config + "version_policy: { latest: { num_versions: 2 } }")
    server = start_seawall("--model-config-name=two", repository=repo)
    try:
        client = httpclient.InferenceServerClient(server.http)
        assert client.get_model_metadata("identity")["versions"] == ["2", "3"]
        assert client.get_model_config("identity")["version_policy"] == {"latest": {"num_versions": 2}}
        assert _status(server, "/v2/models/identity/versions/1/ready") == 400
        assert _status(server, "/v2/models/identity/versions/2/ready") == 200
        client.close()
    finally:
        server.stop()


@pytest.fixture
def crashing(tmp_path: Path) -> Iterator[ServerProcess]:
    repo = _repository(tmp_path, (EXAMPLES / "add_sub", "add_sub"), (TEST_MODELS / "crash_exit", "crash_exit"))
    server = start_seawall(repository=repo)
    yield server
    server.stop()


def _crash(server: ServerProcess, protocol: str) -> InferenceServerException:
    data = np.ones(3, dtype=np.float32)
    client: Any = httpclient if protocol == "http" else grpcclient
    connection = client.InferenceServerClient(server.http if protocol == "http" else server.grpc)
    tensor = client.InferInput("INPUT0", [3], "FP32")
    tensor.set_data_from_numpy(data)
    try:
        with pytest.raises(InferenceServerException) as info:
            connection.infer("crash_exit", [tensor], parameters={"exit": True})
    finally:
        connection.close()
    return info.value


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_crashing_model_fails_its_requests_and_the_server_stays_up(crashing: ServerProcess, protocol: str) -> None:
    error = _crash(crashing, protocol)
    assert error.status() == ("503" if protocol == "http" else "StatusCode.UNAVAILABLE")
    message = error.message()
    assert "crash_exit" in message and "/" not in message.replace("crash_exit", "")
    assert _status(crashing, "/v2/health/live") == 200
    assert _status(crashing, "/v2/models/crash_exit/ready") == 200  # its stub is started again
    client = httpclient.InferenceServerClient(crashing.http)
    np.testing.assert_array_equal(_add_sub(client), np.full(4, 2, dtype=np.float32))  # others still serve
    tensor = httpclient.InferInput("INPUT0", [2], "FP32")
    tensor.set_data_from_numpy(np.full(2, 9, dtype=np.float32))
    for _ in range(4):  # both instances serve again
        result = client.infer("crash_exit", [tensor])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full(2, 9, dtype=np.float32))
    client.close()
    assert crashing.process.poll() is None


def test_a_model_that_keeps_crashing_goes_unavailable(crashing: ServerProcess) -> None:
    # each instance is started again up to MAX_RESTARTS times a minute; then the version is UNAVAILABLE
    for _ in range(2 * (MAX_RESTARTS + 1)):
        if _status(crashing, "/v2/models/crash_exit/ready") != 200:
            break
        assert _crash(crashing, "http").status() == "503"
    assert _status(crashing, "/v2/models/crash_exit/ready") == 400  # readiness tells the truth
    assert _status(crashing, "/v2/health/ready") == 400
    assert _status(crashing, "/v2/health/live") == 200
    client = httpclient.InferenceServerClient(crashing.http)
    np.testing.assert_array_equal(_add_sub(client), np.full(4, 2, dtype=np.float32))  # others still serve
    client.close()
    assert crashing.process.poll() is None
