"""The onnxruntime backend end to end: ONNX models built at test time (tests/onnx_models.py), served by a real
Seawall and driven with tritonclient over HTTP and gRPC; outputs compared with running the same model directly in
the test. Bad models (a config that disagrees with the model, unsafe external data, a truncated file, unknown
parameters) each fail their own load with the exact reason while the other models serve."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto
from tritonclient.utils import InferenceServerException

from tests import onnx_models as m
from tests.harness import EXAMPLES, TEST_MODELS, ServerProcess, http_request, start_seawall

#: every model instance starts a worker process importing its runtime: many at once on a busy machine take a while
STARTUP_S = 240

ADD_SUB = m.add_sub(["n"])
FIXED = m.add_sub([4])
A = np.array([1.5, 2.0, -3.0, 4.25], dtype=np.float32)
B = np.array([0.5, 1.0, 1.0, -0.25], dtype=np.float32)


def _add_sub_config(name: str, extra: str = "") -> str:
    return m.ADD_SUB_CONFIG.format(name=name, extra=extra)


def _external(root: Path, name: str, location: str, config_extra: str = "") -> Path:
    return m.write(root, name, m.matmul(location), m.MATMUL_CONFIG.format(name=name, extra=config_extra))


def _fifo(path: Path) -> None:
    """A FIFO where the traversal points: opening it for reading would block the load forever."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


#: model → the reason its load fails (Triton's wording where Triton has one)
BAD: dict[str, str] = {
    "bad_dtype": (
        "unable to load model 'bad_dtype', configuration expects datatype TYPE_INT32 for input 'INPUT0', model "
        "provides TYPE_FP32"
    ),
    "bad_output_dtype": (
        "unable to load model 'bad_output_dtype', configuration expects datatype TYPE_FP64 for output 'OUTPUT1', "
        "model provides TYPE_FP32"
    ),
    "bad_name": "unexpected inference input 'IN0', allowed inputs are: INPUT0, INPUT1",
    "bad_output_name": "unexpected inference output 'OUT', allowed outputs are: OUTPUT0, OUTPUT1",
    "bad_count": "unable to load model 'bad_count', configuration expects 1 inputs, model provides 2",
    "bad_dims": (
        "model 'bad_dims', tensor 'X': the model expects 2 dimensions (shape [-1,4]) but the model configuration "
        "specifies 2 dimensions (an initial batch dimension because max_batch_size > 0 followed by the explicit "
        "tensor shape, making complete shape [-1,5])"
    ),
    "bad_batch": (
        "model 'bad_batch', tensor 'INPUT0': for the model to support batching the shape should have at least 1 "
        "dimension and the first dimension must be -1; but shape expected by the model is [4]"
    ),
    "bad_autofill": (
        "autofill failed for model 'bad_autofill': model does not support batching while non-zero max_batch_size "
        "is specified"
    ),
    "bad_param": (
        "parameter 'gpu_mem_limit' of model 'bad_param' is not supported by the onnxruntime backend (supported: "
        "intra_op_thread_count, inter_op_thread_count, execution_mode, enable_mem_pattern, enable_mem_arena, "
        "memory.enable_memory_arena_shrinkage)"
    ),
    "bad_mode": ("Invalid configuration value provided. Expected values for  execution_mode are 0 or 1 but got 2 ."),
    "bad_bool": "failed to convert 'maybe' to boolean",
    "bad_int": "failed to convert 'many' to integral number",
    "bad_bf16": "tensor 'X' of model 'bad_bf16' is BF16, which the onnxruntime backend does not support",
    "missing_file": "unable to find '1/model.onnx' for model 'missing_file'",
    "truncated": "model file '1/model.onnx' of model 'truncated' is not a valid ONNX model",
    "not_onnx": "model file '1/model.onnx' of model 'not_onnx' is not a valid ONNX model",
    "ext_dotdot": (
        "external data location '../outside.bin' of model 'ext_dotdot' must be a relative path inside the model's "
        "version directory"
    ),
    "ext_absolute": (
        "external data location '{fifo}' of model 'ext_absolute' must be a relative path inside the model's "
        "version directory"
    ),
    "ext_symlink": (
        "external data location 'weights.bin' of model 'ext_symlink' resolves outside the model's version directory"
    ),
    "ext_missing": "external data file 'nothere.bin' of model 'ext_missing' not found",
    "ext_short": "external data of tensor 'W' of model 'ext_short' lies outside file '1/weights.bin'",
    "ext_pinned": "checksum agent: file '1/weights.bin' does not match its SHA256 pin",
}


def repository(root: Path) -> Path:
    """The good models, the bad ones of BAD, and the python models the ensemble and BLS tests use."""
    for source in (EXAMPLES / "add_sub", TEST_MODELS / "bls"):
        shutil.copytree(source, root / source.name)
    m.write(root, "onnx_add_sub", ADD_SUB, _add_sub_config("onnx_add_sub"))
    m.write(root, "onnx_auto", m.matmul(), None)
    m.write(root, "onnx_partial", m.matmul(), 'name: "onnx_partial"\nbackend: "onnxruntime"\nmax_batch_size: 16\n')
    m.write(root, "onnx_strings", m.strings(), None)
    version = _external(root, "onnx_ext", "weights.bin")
    (version / "weights.bin").write_bytes(m.WEIGHTS.tobytes())
    directory = m.write(root, "onnx_dir", None, m.MATMUL_CONFIG.format(name="onnx_dir", extra=""))
    (directory / "model.onnx").mkdir()
    (directory / "model.onnx" / "model.onnx").write_bytes(m.matmul("weights.bin").SerializeToString())
    (directory / "model.onnx" / "weights.bin").write_bytes(m.WEIGHTS.tobytes())
    batching = "dynamic_batching { preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 30000000 }"
    m.write(root, "onnx_batched", m.matmul(), m.MATMUL_CONFIG.format(name="onnx_batched", extra=batching))
    tuned = "optimization { graph { level: 1 } }\ninstance_group [ { kind: KIND_CPU, count: 2 } ]\n" + "".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n'
        for k, v in (
            ("intra_op_thread_count", "1"),
            ("inter_op_thread_count", "1"),
            ("execution_mode", "1"),
            ("enable_mem_pattern", "false"),
            ("enable_mem_arena", "on"),
            ("memory.enable_memory_arena_shrinkage", "cpu:0"),
        )
    )
    m.write(root, "onnx_tuned", ADD_SUB, _add_sub_config("onnx_tuned", tuned))
    m.write(root, "onnx_ensemble", None, ENSEMBLE)
    # bad models
    m.write(root, "bad_dtype", ADD_SUB, _add_sub_config("bad_dtype").replace("TYPE_FP32", "TYPE_INT32", 1))
    output_type = _add_sub_config("bad_output_dtype").replace(
        '"OUTPUT1", data_type: TYPE_FP32', '"OUTPUT1", data_type: TYPE_FP64'
    )
    m.write(root, "bad_output_dtype", ADD_SUB, output_type)
    m.write(root, "bad_name", ADD_SUB, _add_sub_config("bad_name").replace('"INPUT0"', '"IN0"'))
    m.write(root, "bad_output_name", ADD_SUB, _add_sub_config("bad_output_name").replace('"OUTPUT0"', '"OUT"'))
    one_input = _add_sub_config("bad_count").replace('  { name: "INPUT1", data_type: TYPE_FP32, dims: [ -1 ] }', "")
    m.write(root, "bad_count", ADD_SUB, one_input.replace("dims: [ -1 ] },\n\n]", "dims: [ -1 ] }\n]"))
    m.write(
        root, "bad_dims", m.matmul(), m.MATMUL_CONFIG.format(name="bad_dims", extra="").replace("[ 4 ] }", "[ 5 ] }", 1)
    )
    m.write(root, "bad_batch", FIXED, _add_sub_config("bad_batch").replace("max_batch_size: 0", "max_batch_size: 4"))
    m.write(root, "bad_autofill", FIXED, 'name: "bad_autofill"\nbackend: "onnxruntime"\nmax_batch_size: 8\n')
    parameter = 'parameters {{ key: "{}" value: {{ string_value: "{}" }} }}'
    for name, key, value in (
        ("bad_param", "gpu_mem_limit", "1"),
        ("bad_mode", "execution_mode", "2"),
        ("bad_bool", "enable_mem_arena", "maybe"),
        ("bad_int", "intra_op_thread_count", "many"),
    ):
        m.write(root, name, ADD_SUB, _add_sub_config(name, parameter.format(key, value)))
    bf16 = (
        'name: "bad_bf16"\nbackend: "onnxruntime"\nmax_batch_size: 0\n'
        'input [ { name: "X", data_type: TYPE_BF16, dims: [ -1 ] } ]\n'
        'output [ { name: "Y", data_type: TYPE_BF16, dims: [ -1 ] } ]\n'
    )
    m.write(root, "bad_bf16", m.identity(TensorProto.BFLOAT16), bf16)
    m.write(root, "missing_file", None, _add_sub_config("missing_file"))
    m.write(root, "truncated", ADD_SUB.SerializeToString()[:80], _add_sub_config("truncated"))
    m.write(root, "not_onnx", b"not an onnx model at all", _add_sub_config("not_onnx"))
    _fifo(root / "ext_dotdot" / "outside.bin")
    _external(root, "ext_dotdot", "../outside.bin")
    _external(root, "ext_absolute", str(root / "ext_dotdot" / "outside.bin"))
    _fifo(root / "outside" / "weights.bin")
    version = _external(root, "ext_symlink", "weights.bin")
    (version / "weights.bin").symlink_to(root / "outside" / "weights.bin")
    _external(root, "ext_missing", "nothere.bin")
    version = _external(root, "ext_short", "weights.bin")
    (version / "weights.bin").write_bytes(m.WEIGHTS.tobytes()[:32])
    version = _external(root, "ext_pinned", "weights.bin")
    (version / "weights.bin").write_bytes(m.WEIGHTS.tobytes())
    model_digest = hashlib.sha256((version / "model.onnx").read_bytes()).hexdigest()
    pins = (
        'model_repository_agents { agents [ { name: "checksum" parameters ['
        f' {{ key: "SHA256:1/model.onnx" value: "{model_digest}" }},'
        f' {{ key: "SHA256:1/weights.bin" value: "{"0" * 64}" }} ] }} ] }}'
    )
    (root / "ext_pinned" / "config.pbtxt").write_text(m.MATMUL_CONFIG.format(name="ext_pinned", extra=pins))
    return root


#: ONNX add_sub, then the python add_sub on its outputs: OUTPUT0 = 2 * INPUT0, OUTPUT1 = 2 * INPUT1
ENSEMBLE = """
name: "onnx_ensemble"
platform: "ensemble"
max_batch_size: 0
input [
  { name: "A", data_type: TYPE_FP32, dims: [ 4 ] },
  { name: "B", data_type: TYPE_FP32, dims: [ 4 ] }
]
output [
  { name: "TWICE_A", data_type: TYPE_FP32, dims: [ 4 ] },
  { name: "TWICE_B", data_type: TYPE_FP32, dims: [ 4 ] }
]
ensemble_scheduling { step [
  { model_name: "onnx_add_sub" model_version: -1
    input_map [ { key: "INPUT0" value: "A" }, { key: "INPUT1" value: "B" } ]
    output_map [ { key: "OUTPUT0" value: "sum" }, { key: "OUTPUT1" value: "difference" } ] },
  { model_name: "add_sub" model_version: -1
    input_map [ { key: "INPUT0" value: "sum" }, { key: "INPUT1" value: "difference" } ]
    output_map [ { key: "OUTPUT0" value: "TWICE_A" }, { key: "OUTPUT1" value: "TWICE_B" } ] }
] }
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return repository(tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[ServerProcess]:
    process = start_seawall("--exit-on-error=false", repository=root, timeout=STARTUP_S)
    yield process
    process.stop()


def _client(server: ServerProcess, protocol: str) -> Any:
    if protocol == "http":
        return httpclient.InferenceServerClient(server.http)
    return grpcclient.InferenceServerClient(server.grpc)


def _module(protocol: str) -> Any:
    return httpclient if protocol == "http" else grpcclient


def _infer(server: ServerProcess, protocol: str, model: str, inputs: dict[str, np.ndarray], **kwargs: Any) -> Any:
    module = _module(protocol)
    tensors = []
    for name, array in inputs.items():
        datatype = "BYTES" if array.dtype == object else {"float32": "FP32"}[array.dtype.name]
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return _client(server, protocol).infer(model, tensors, **kwargs)


def _direct(model: Any, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The same model run in the test process: the reference outputs."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    result: list[np.ndarray] = session.run(None, inputs)
    return result


def _index(server: ServerProcess) -> dict[str, dict[str, str]]:
    status, _, body = http_request(server, "POST", "/v2/repository/index")
    assert status == 200
    return {entry["name"]: entry for entry in json.loads(body)}


def _healthy(server: ServerProcess) -> None:
    """Live, and the good models still ready (the server is not ready as a whole: some models failed on purpose)."""
    assert http_request(server, "GET", "/v2/health/live")[0] == 200
    assert http_request(server, "GET", "/v2/models/onnx_add_sub/ready")[0] == 200


PROTOCOLS = ["http", "grpc"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_add_sub_matches_the_model_run_directly(server: ServerProcess, protocol: str) -> None:
    result = _infer(server, protocol, "onnx_add_sub", {"INPUT0": A, "INPUT1": B})
    expected = _direct(ADD_SUB, {"INPUT0": A, "INPUT1": B})
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), expected[0])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), expected[1])


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("model", ["onnx_ext", "onnx_dir", "onnx_auto", "onnx_partial"])
def test_matmul_with_external_weights_matches_the_direct_run(server: ServerProcess, protocol: str, model: str) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4) - 3
    result = _infer(server, protocol, model, {"X": x})
    np.testing.assert_allclose(result.as_numpy("Y"), _direct(m.matmul(), {"X": x})[0], rtol=1e-6)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_string_tensors_go_through_a_string_op(server: ServerProcess, protocol: str) -> None:
    text = np.array([["hello"], ["Grüße"], [""]], dtype=object)
    result = _infer(
        server, protocol, "onnx_strings", {"TEXT": np.array([[t.encode()] for t in text[:, 0]], dtype=object)}
    )
    upper, same = _direct(m.strings(), {"TEXT": text})
    assert result.as_numpy("UPPER").tolist() == [[s.encode()] for s in upper[:, 0]]
    assert result.as_numpy("SAME").tolist() == [[s.encode()] for s in same[:, 0]]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_string_that_is_not_utf8_is_refused_and_the_server_stays_healthy(
    server: ServerProcess, protocol: str
) -> None:
    with pytest.raises(InferenceServerException) as info:
        _infer(server, protocol, "onnx_strings", {"TEXT": np.array([[b"\xff\xfe"]], dtype=object)})
    assert info.value.message() == (
        "input 'TEXT' of model 'onnx_strings' has an element that is not valid UTF-8 (onnxruntime string tensors "
        "hold text)"
    )
    _healthy(server)
    result = _infer(server, protocol, "onnx_strings", {"TEXT": np.array([[b"ok"]], dtype=object)})
    assert result.as_numpy("UPPER").tolist() == [[b"OK"]]


def test_session_parameters_and_graph_level_are_applied_to_every_instance(server: ServerProcess) -> None:
    for protocol in PROTOCOLS:
        result = _infer(server, protocol, "onnx_tuned", {"INPUT0": A, "INPUT1": B})
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_auto_complete_fills_the_config_as_triton_does(server: ServerProcess, protocol: str) -> None:
    client = _client(server, protocol)
    if protocol == "http":
        config = client.get_model_config("onnx_auto")
    else:
        config = client.get_model_config("onnx_auto", as_json=True)["config"]
    assert config["platform"] == "onnxruntime_onnx" and config["backend"] == "onnxruntime"
    assert int(config["max_batch_size"]) == 4  # Triton's default-max-batch-size
    assert "dynamic_batching" in config
    assert [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in config["input"]] == [
        ("X", "TYPE_FP32", [4])
    ]
    assert [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in config["output"]] == [
        ("Y", "TYPE_FP32", [4])
    ]
    metadata = client.get_model_metadata("onnx_strings", as_json=True) if protocol == "grpc" else None
    if metadata is not None:
        assert metadata["platform"] == "onnxruntime_onnx"
        assert [(t["name"], t["datatype"]) for t in metadata["inputs"]] == [("TEXT", "BYTES")]


def test_a_config_listing_no_io_gets_it_from_the_model_and_keeps_its_max_batch_size(server: ServerProcess) -> None:
    config = httpclient.InferenceServerClient(server.http).get_model_config("onnx_partial")
    assert config["max_batch_size"] == 16
    assert [t["name"] for t in config["input"]] == ["X"]


@pytest.mark.parametrize("model", sorted(BAD))
def test_each_bad_model_fails_its_load_with_the_exact_reason(server: ServerProcess, root: Path, model: str) -> None:
    entry = _index(server)[model]
    expected = BAD[model].format(fifo=root / "ext_dotdot" / "outside.bin")
    assert (entry["state"], entry.get("reason", "")) == ("UNAVAILABLE", expected)
    _healthy(server)
    result = _infer(server, "http", "onnx_add_sub", {"INPUT0": A, "INPUT1": B})  # the others still serve
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)


def test_dynamic_batching_runs_concurrent_requests_in_one_run(server: ServerProcess) -> None:
    """Four requests wait for the preferred batch size of 4 (the queue delay is 30 s): one execution of 4."""
    inputs = [np.full((1, 4), i, dtype=np.float32) for i in range(4)]
    results: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        results[i] = _infer(server, "http", "onnx_batched", {"X": inputs[i]}).as_numpy("Y")

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for i in range(4):
        np.testing.assert_allclose(results[i], inputs[i] @ m.WEIGHTS, rtol=1e-6)
    stats = httpclient.InferenceServerClient(server.http).get_inference_statistics("onnx_batched")
    [model] = stats["model_stats"]
    assert (model["inference_count"], model["execution_count"]) == (4, 1)
    assert [b["batch_size"] for b in model["batch_stats"]] == [4]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_ensemble_runs_the_onnx_model_then_a_python_model(server: ServerProcess, protocol: str) -> None:
    result = _infer(server, protocol, "onnx_ensemble", {"A": A, "B": B})
    np.testing.assert_allclose(result.as_numpy("TWICE_A"), 2 * A, rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("TWICE_B"), 2 * B, rtol=1e-6)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_python_model_calls_the_onnx_model_through_bls(server: ServerProcess, protocol: str) -> None:
    result = _infer(server, protocol, "bls", {"INPUT0": A, "INPUT1": B}, parameters={"target": "onnx_add_sub"})
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)
    stats = httpclient.InferenceServerClient(server.http).get_inference_statistics("onnx_add_sub")
    assert stats["model_stats"][0]["inference_count"] >= 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_request_onnxruntime_refuses_fails_with_its_message(server: ServerProcess, protocol: str) -> None:
    """Shapes the config allows but the graph cannot add: onnxruntime's error, Triton's form, INTERNAL."""
    with pytest.raises(InferenceServerException) as info:
        _infer(server, protocol, "onnx_add_sub", {"INPUT0": A, "INPUT1": B[:3]})
    assert info.value.message().startswith("onnx runtime error 1: Non-zero status code returned while running Sub")
    _healthy(server)
