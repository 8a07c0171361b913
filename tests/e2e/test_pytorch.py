"""The pytorch backend end to end: TorchScript models scripted or traced at test time (tests/torch_models.py),
served by a real Seawall and driven with tritonclient over HTTP and gRPC, outputs compared with calling the module
directly. Triton's naming conventions, dict inputs, tuple outputs, dynamic batching, ensembles and BLS; a pickle
or a torch.save checkpoint named model.pt fails its load and none of it runs. Skipped without torch (make test installs
it)."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.harness import EXAMPLES, TEST_MODELS, ServerProcess, http_request, start_seawall

#: every model instance starts a worker process importing its runtime: many at once on a busy machine take a while
STARTUP_S = 240

torch = pytest.importorskip("torch")
tm = pytest.importorskip("tests.torch_models")

A = np.array([1.5, 2.0, -3.0, 4.25], dtype=np.float32)
B = np.array([0.5, 1.0, 1.0, -0.25], dtype=np.float32)
FP4 = "TYPE_FP32 4"
VAR = "TYPE_FP32 -1"


class Payload:
    """Unpickling this creates MARKER: proof that a pickle named model.pt never ran."""

    marker = ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


BAD = {
    "pt_pickle": (
        "model file '1/model.pt' of model 'pt_pickle' is not a TorchScript archive (torch.jit.save); pickles and "
        "torch.save checkpoints are never loaded"
    ),
    "pt_checkpoint": (
        "model file '1/model.pt' of model 'pt_checkpoint' is not a TorchScript archive (torch.jit.save); pickles "
        "and torch.save checkpoints are never loaded"
    ),
    "pt_truncated": (
        "model file '1/model.pt' of model 'pt_truncated' is not a TorchScript archive (torch.jit.save); pickles and "
        "torch.save checkpoints are never loaded"
    ),
    "pt_count": "unable to load model 'pt_count', configuration expects 1 inputs, model provides 2",
    "pt_string": (
        "input 'a' of model 'pt_string' is TYPE_STRING, but forward() takes argument 'a' as TensorType: a TYPE_STRING "
        "input needs an argument of type List[str]"
    ),
    "pt_param": (
        "parameter 'ENABLE_WEIGHT_SHARING' of model 'pt_param' is not supported by the pytorch backend (supported: "
        "DISABLE_OPTIMIZED_EXECUTION, INFERENCE_MODE, ENABLE_CACHE_CLEANING, DISABLE_CUDNN, INTRA_OP_THREAD_COUNT, "
        "INTER_OP_THREAD_COUNT)"
    ),
    "pt_missing": "unable to find '1/model.pt' for model 'pt_missing'",
}


def repository(root: Path, marker: Path) -> Path:
    for source in (EXAMPLES / "add_sub", TEST_MODELS / "bls"):
        shutil.copytree(source, root / source.name)
    add_sub = tm.scripted(tm.AddSub())
    outputs = [("OUTPUT__0", FP4), ("OUTPUT__1", FP4)]
    tm.write(root, "pt_index", add_sub, tm.config("pt_index", [("INPUT__0", FP4), ("INPUT__1", FP4)], outputs))
    tm.write(root, "pt_args", add_sub, tm.config("pt_args", [("b", FP4), ("a", FP4)], outputs))
    strict = tm.config("pt_add_sub", [("INPUT0", VAR), ("INPUT1", VAR)], [("OUTPUT0", VAR), ("OUTPUT1", VAR)])
    tm.write(root, "pt_add_sub", add_sub, strict)
    tm.write(root, "pt_dict", tm.scripted(tm.DictInput()), tm.config("pt_dict", [("q", FP4), ("p", FP4)], [("y", FP4)]))
    tm.write(root, "pt_dict_out", tm.scripted(tm.DictOutput()), tm.config("pt_dict_out", [("a", FP4)], [("y", FP4)]))
    wrong_type = tm.config("pt_out_type", [("a", FP4), ("b", FP4)], [("OUTPUT__0", "TYPE_INT32 4")])
    tm.write(root, "pt_out_type", add_sub, wrong_type)
    batching = "dynamic_batching { preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 30000000 }"
    params = "".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n'
        for k, v in (
            ("INFERENCE_MODE", "true"),
            ("DISABLE_OPTIMIZED_EXECUTION", "true"),
            ("INTRA_OP_THREAD_COUNT", "1"),
        )
    )
    mlp = tm.config("pt_mlp", [("x__0", "TYPE_FP32 4")], [("y__0", "TYPE_FP32 3")], batching + "\n" + params, batch=8)
    tm.write(root, "pt_mlp", tm.traced_mlp(), mlp)
    (root / "pt_ensemble" / "1").mkdir(parents=True)
    (root / "pt_ensemble" / "config.pbtxt").write_text(ENSEMBLE)
    # bad models
    Payload.marker = str(marker)
    tm.write(root, "pt_pickle", pickle.dumps(Payload()), tm.config("pt_pickle", [("a", FP4)], [("y", FP4)]))
    checkpoint = io.BytesIO()
    torch.save({"w": torch.ones(2)}, checkpoint)
    tm.write(root, "pt_checkpoint", checkpoint.getvalue(), tm.config("pt_checkpoint", [("a", FP4)], [("y", FP4)]))
    tm.write(root, "pt_truncated", add_sub[: len(add_sub) // 2], tm.config("pt_truncated", [("a", FP4)], [("y", FP4)]))
    tm.write(root, "pt_count", add_sub, tm.config("pt_count", [("a", FP4)], [("y", FP4)]))
    tm.write(root, "pt_string", add_sub, tm.config("pt_string", [("a", "TYPE_STRING 1"), ("b", FP4)], [("y", FP4)]))
    bad_param = 'parameters { key: "ENABLE_WEIGHT_SHARING" value: { string_value: "true" } }'
    tm.write(root, "pt_param", add_sub, tm.config("pt_param", [("a", FP4), ("b", FP4)], outputs, bad_param))
    tm.write(root, "pt_missing", None, tm.config("pt_missing", [("a", FP4), ("b", FP4)], outputs))
    return root


#: TorchScript add_sub, then the python add_sub: TWICE_A = 2 * A, TWICE_B = 2 * B
ENSEMBLE = """
name: "pt_ensemble"
platform: "ensemble"
max_batch_size: 0
input [ { name: "A", data_type: TYPE_FP32, dims: [ 4 ] }, { name: "B", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [
  { name: "TWICE_A", data_type: TYPE_FP32, dims: [ 4 ] }, { name: "TWICE_B", data_type: TYPE_FP32, dims: [ 4 ] }
]
ensemble_scheduling { step [
  { model_name: "pt_index" model_version: -1
    input_map [ { key: "INPUT__0" value: "A" }, { key: "INPUT__1" value: "B" } ]
    output_map [ { key: "OUTPUT__0" value: "sum" }, { key: "OUTPUT__1" value: "difference" } ] },
  { model_name: "add_sub" model_version: -1
    input_map [ { key: "INPUT0" value: "sum" }, { key: "INPUT1" value: "difference" } ]
    output_map [ { key: "OUTPUT0" value: "TWICE_A" }, { key: "OUTPUT1" value: "TWICE_B" } ] }
] }
"""


@pytest.fixture(scope="module")
def marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("marker") / "pickle-ran"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, marker: Path) -> Iterator[ServerProcess]:
    root = repository(tmp_path_factory.mktemp("torch"), marker)
    process = start_seawall("--exit-on-error=false", repository=root, timeout=STARTUP_S)
    yield process
    process.stop()


def _infer(server: ServerProcess, protocol: str, model: str, inputs: dict[str, np.ndarray], **kwargs: Any) -> Any:
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(server.http if protocol == "http" else server.grpc)
    tensors = []
    for name, array in inputs.items():
        tensor = module.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return client.infer(model, tensors, **kwargs)


def _healthy(server: ServerProcess) -> None:
    assert http_request(server, "GET", "/v2/health/live")[0] == 200
    assert http_request(server, "GET", "/v2/models/pt_index/ready")[0] == 200


PROTOCOLS = ["http", "grpc"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("model", "names"),
    [
        ("pt_index", ("INPUT__0", "INPUT__1", "OUTPUT__0", "OUTPUT__1")),  # <name>__<index>
        ("pt_args", ("a", "b", "OUTPUT__0", "OUTPUT__1")),  # forward()'s argument names, in another order
        ("pt_add_sub", ("INPUT0", "INPUT1", "OUTPUT0", "OUTPUT1")),  # neither: config order
    ],
)
def test_naming_conventions_map_inputs_and_tuple_outputs(
    server: ServerProcess, protocol: str, model: str, names: tuple[str, ...]
) -> None:
    result = _infer(server, protocol, model, {names[0]: A, names[1]: B})
    expected = tm.AddSub()(torch.from_numpy(A), torch.from_numpy(B))
    np.testing.assert_array_equal(result.as_numpy(names[2]), expected[0].numpy())
    np.testing.assert_array_equal(result.as_numpy(names[3]), expected[1].numpy())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_dict_input_gets_every_input_by_name(server: ServerProcess, protocol: str) -> None:
    result = _infer(server, protocol, "pt_dict", {"p": A, "q": B})
    np.testing.assert_array_equal(result.as_numpy("y"), A * 2 + B)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_execution_errors_have_tritons_text_and_the_server_stays_healthy(server: ServerProcess, protocol: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        _infer(server, protocol, "pt_dict_out", {"a": A})
    assert info.value.message() == (
        "PyTorch execute failure: output must be of type Tensor, List[str] or Tuple containing one of these two "
        "types. It should not be a List / Dictionary of Tensors or a Scalar"
    )
    with pytest.raises(InferenceServerException) as info:
        _infer(server, protocol, "pt_out_type", {"a": A, "b": B})
    assert info.value.message() == (
        "configuration expects datatype TYPE_INT32 for output 'OUTPUT__0', model provides TYPE_FP32"
    )
    _healthy(server)


@pytest.mark.parametrize("model", sorted(BAD))
def test_each_bad_model_fails_its_load_and_no_pickle_runs(server: ServerProcess, marker: Path, model: str) -> None:
    status, _, body = http_request(server, "POST", "/v2/repository/index")
    entry = {e["name"]: e for e in json.loads(body)}[model]
    assert (entry["state"], entry.get("reason", "")) == ("UNAVAILABLE", BAD[model])
    assert not marker.exists()
    _healthy(server)


def test_dynamic_batching_runs_a_traced_mlp_once_for_four_requests(server: ServerProcess) -> None:
    inputs = [np.full((1, 4), i - 1.5, dtype=np.float32) for i in range(4)]
    results: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        results[i] = _infer(server, "http", "pt_mlp", {"x__0": inputs[i]}).as_numpy("y__0")

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    module = tm.mlp()
    with torch.no_grad():
        for i in range(4):
            np.testing.assert_allclose(results[i], module(torch.from_numpy(inputs[i])).numpy(), rtol=1e-5, atol=1e-6)
    stats = httpclient.InferenceServerClient(server.http).get_inference_statistics("pt_mlp")["model_stats"][0]
    assert (stats["inference_count"], stats["execution_count"]) == (4, 1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_ensemble_and_a_bls_call_run_the_torchscript_model(server: ServerProcess, protocol: str) -> None:
    result = _infer(server, protocol, "pt_ensemble", {"A": A, "B": B})
    np.testing.assert_allclose(result.as_numpy("TWICE_A"), 2 * A, rtol=1e-6)
    result = _infer(server, protocol, "bls", {"INPUT0": A, "INPUT1": B}, parameters={"target": "pt_add_sub"})
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)


def test_auto_complete_leaves_a_torchscript_config_as_given(server: ServerProcess) -> None:
    config = httpclient.InferenceServerClient(server.http).get_model_config("pt_index")
    assert config["platform"] == "pytorch_libtorch" and config["max_batch_size"] == 0
    assert [t["name"] for t in config["input"]] == ["INPUT__0", "INPUT__1"]
