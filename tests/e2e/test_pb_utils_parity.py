"""pb_utils as Triton's python backend has it (tests/models/logging_model), in a stub and in process: the
documented Logger usage with Triton's line format (level letter, time, pid, model file:line), exactly Triton's
public names in the module, get_model_dir(), and statistics that book execute() as compute_infer and a batch's
wait behind earlier ones in the instance as queue time (not compute_input/compute_output)."""

from __future__ import annotations

import concurrent.futures
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.harness import TEST_MODELS, ServerProcess, start_seawall

IN_PROCESS = 'parameters { key: "SEAWALL_IN_PROCESS" value: { string_value: "true" } }\n'
#: dir(triton_python_backend_utils) of Triton 2.51's stub (public names), less `struct` (a module it imports)
TRITON_NAMES = {
    "InferenceRequest", "InferenceResponse", "Logger", "MetricFamily", "ModelConfig", "PreferredMemory",
    "TRITONSERVER_MEMORY_CPU", "TRITONSERVER_MEMORY_GPU", "TRITONSERVER_REQUEST_FLAG_SEQUENCE_END",
    "TRITONSERVER_REQUEST_FLAG_SEQUENCE_START", "TRITONSERVER_REQUEST_RELEASE_ALL",
    "TRITONSERVER_REQUEST_RELEASE_RESCHEDULE", "TRITONSERVER_RESPONSE_COMPLETE_FINAL", "TRITON_STRING_TO_NUMPY",
    "Tensor", "TritonError", "TritonModelException", "deserialize_bytes_tensor", "get_input_config_by_name",
    "get_input_tensor_by_name", "get_model_dir", "get_output_config_by_name", "get_output_tensor_by_name",
    "is_model_ready", "json", "load_model", "np", "numpy_to_triton_type", "serialize_byte_tensor",
    "triton_string_to_numpy", "triton_to_numpy_type", "unload_model", "using_decoupled_model_transaction_policy",
}  # fmt: skip
TRITON_LOGGER = ["ERROR", "INFO", "LogLevel", "VERBOSE", "WARNING", "log", "log_error", "log_info", "log_verbose",
                 "log_warn"]  # fmt: skip


@pytest.fixture(scope="module", params=["stub", "in_process"])
def seawall(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("repository")
    shutil.copytree(TEST_MODELS / "logging_model", repository / "logging_model")
    if request.param == "in_process":
        config = repository / "logging_model" / "config.pbtxt"
        config.write_text(config.read_text() + IN_PROCESS)
    server = start_seawall("--log-verbose=1", repository=repository)
    server.addresses["repository"] = str(repository)
    yield server
    server.stop()


def infer(server: ServerProcess, seconds: float) -> dict[str, object]:
    with httpclient.InferenceServerClient(server.http) as client:
        tensor = httpclient.InferInput("IN", [1], "FP32")
        tensor.set_data_from_numpy(np.array([seconds], dtype=np.float32))
        result = client.infer("logging_model", [tensor]).as_numpy("OUT")
    assert result is not None
    found: dict[str, object] = json.loads(result[0])
    return found


@pytest.mark.parametrize(
    ("letter", "line", "text"),
    [
        ("I", 14, "info line with\\\\nnewline"),  # escaped in the record, and again by the line: one line
        ("W", 15, "warning line"),
        ("E", 16, "error line"),
        ("I", 17, "verbose line"),  # --log-verbose=1
        ("W", 18, "log_warn line"),
        ("E", 19, "log_error line"),
        ("I", 20, "log_verbose line"),
        ("I", 21, "default level line"),
    ],
)
def test_logger_lines_name_the_model_file_and_line(seawall: ServerProcess, letter: str, line: int, text: str) -> None:
    pattern = re.compile(rf"^{letter}\d{{4}} \d\d:\d\d:\d\d\.\d{{6}} \d+ model\.py:{line}\] {re.escape(text)}$")
    assert [entry for entry in seawall.lines if pattern.match(entry)], f"no line like {pattern.pattern}"


def test_verbose_lines_need_log_verbose(tmp_path: Path) -> None:
    shutil.copytree(TEST_MODELS / "logging_model", tmp_path / "logging_model")
    server = start_seawall(repository=tmp_path)
    try:
        assert [entry for entry in server.lines if entry.endswith("model.py:16] error line")]
        assert not [entry for entry in server.lines if "verbose line" in entry]
    finally:
        server.stop()


def test_the_module_has_tritons_names_only(seawall: ServerProcess) -> None:
    found = infer(seawall, 0.0)
    assert set(found["names"]) == TRITON_NAMES  # type: ignore[arg-type]
    assert found["logger"] == TRITON_LOGGER


def test_get_model_dir_is_the_model_files_directory(seawall: ServerProcess) -> None:
    expected = Path(seawall.addresses["repository"]).resolve() / "logging_model" / "1"
    assert infer(seawall, 0.0)["model_dir"] == str(expected)


def test_execute_is_compute_infer_and_waiting_is_queue_time(seawall: ServerProcess) -> None:
    with httpclient.InferenceServerClient(seawall.http) as client:
        before = client.get_inference_statistics("logging_model")["model_stats"][0]["inference_stats"]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:  # one instance: the 2nd and 3rd wait for the 1st
        list(pool.map(infer, [seawall] * 3, [0.4] * 3))
    with httpclient.InferenceServerClient(seawall.http) as client:
        after = client.get_inference_statistics("logging_model")["model_stats"][0]["inference_stats"]
    spent = {kind: (int(after[kind]["ns"]) - int(before[kind]["ns"])) / 1e9 for kind in after}
    assert spent["compute_infer"] >= 1.2  # three executes of 0.4 s
    assert spent["queue"] >= 1.0  # 0 + 0.4 + 0.8 s behind the others, whether in the scheduler or the stub
    assert spent["compute_input"] < 0.3 and spent["compute_output"] < 0.3, spent
