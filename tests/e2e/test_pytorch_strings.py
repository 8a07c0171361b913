"""TYPE_STRING (BYTES) tensors of the pytorch backend: TorchScript models whose forward() takes and returns List[str],
as Triton's pytorch backend passes them, served isolated and in process and driven over HTTP and gRPC; outputs
compared with calling the module directly. Bad cases: a string input bound to a Tensor argument (and the reverse),
a string tensor of more than one dimension, a List[int] output and text that is not UTF-8, each with its exact
error while the server stays healthy. Skipped without torch (make test installs it)."""

from __future__ import annotations

import io
import json
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.harness import ServerProcess, http_request, start_seawall

#: every model instance starts a worker process importing its runtime: many at once on a busy machine take a while
STARTUP_S = 240

torch = pytest.importorskip("torch")
tm = pytest.importorskip("tests.torch_models")

TEXT = np.array([b"hello", "Grüße".encode(), b"", b"a b"], dtype=np.object_)
SCALE = np.array([3], dtype=np.int64)
IN_PROCESS = 'parameters { key: "SEAWALL_IN_PROCESS" value: { string_value: "true" } }'
STRINGS_IO = (
    [("text", "TYPE_STRING -1"), ("scale", "TYPE_INT64 1")],
    [("upper__0", "TYPE_STRING -1"), ("lengths__1", "TYPE_INT64 -1"), ("bang__2", "TYPE_STRING -1")],
)
BATCHED = """
name: "pt_strings_batched"
platform: "pytorch_libtorch"
max_batch_size: 8
input [ { name: "text", data_type: TYPE_STRING, dims: [ 1 ], reshape: { shape: [ ] } },
        { name: "scale", data_type: TYPE_INT64, dims: [ 1 ], reshape: { shape: [ ] } } ]
output [ { name: "upper__0", data_type: TYPE_STRING, dims: [ 1 ], reshape: { shape: [ ] } },
         { name: "lengths__1", data_type: TYPE_INT64, dims: [ 1 ], reshape: { shape: [ ] } },
         { name: "bang__2", data_type: TYPE_STRING, dims: [ 1 ], reshape: { shape: [ ] } } ]
dynamic_batching { preferred_batch_size: [ 3 ] max_queue_delay_microseconds: 30000000 }
"""

BAD = {
    "pt_str_to_tensor": (
        "input 'a' of model 'pt_str_to_tensor' is TYPE_STRING, but forward() takes argument 'a' as TensorType: a "
        "TYPE_STRING input needs an argument of type List[str]"
    ),
    "pt_tensor_to_str": (
        "input 'text' of model 'pt_tensor_to_str' is TYPE_FP32, but forward() takes argument 'text' as List[str]: "
        "only TYPE_STRING inputs are passed as List[str]"
    ),
    "pt_str_2d": "Triton only supports 1 dimensional List of String as input for 'text' for model 'pt_str_2d'",
    "pt_str_out_2d": (
        "Triton only supports 1 dimensional List of String as output for 'upper__0' for model 'pt_str_out_2d'"
    ),
}


def repository(root: Path) -> Path:
    strings = tm.scripted(tm.Strings())
    tm.write(root, "pt_strings", strings, tm.config("pt_strings", *STRINGS_IO))
    tm.write(root, "pt_strings_inprocess", strings, tm.config("pt_strings_inprocess", *STRINGS_IO, IN_PROCESS))
    tm.write(root, "pt_strings_batched", strings, BATCHED)
    join = tm.scripted(tm.JoinStrings())
    tm.write(root, "pt_join", join, tm.config("pt_join", [("text", "TYPE_STRING -1")], [("joined", "TYPE_STRING 1")]))
    ints = tm.config("pt_list_int", [("text", "TYPE_STRING -1")], [("n", "TYPE_INT64 -1")])
    tm.write(root, "pt_list_int", tm.scripted(tm.ListOfInts()), ints)
    # bad models
    add_sub = tm.config("pt_str_to_tensor", [("a", "TYPE_STRING -1"), ("b", "TYPE_FP32 -1")], [("y", "TYPE_FP32 -1")])
    tm.write(root, "pt_str_to_tensor", tm.scripted(tm.AddSub()), add_sub)
    inputs, outputs = STRINGS_IO
    wrong = tm.config("pt_tensor_to_str", [("text", "TYPE_FP32 -1"), inputs[1]], outputs)
    tm.write(root, "pt_tensor_to_str", strings, wrong)
    tm.write(root, "pt_str_2d", strings, tm.config("pt_str_2d", [("text", "TYPE_STRING 2, 2"), inputs[1]], outputs))
    out_2d = tm.config("pt_str_out_2d", inputs, [("upper__0", "TYPE_STRING -1, 2"), *outputs[1:]])
    tm.write(root, "pt_str_out_2d", strings, out_2d)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = repository(tmp_path_factory.mktemp("torch_strings"))
    process = start_seawall("--exit-on-error=false", repository=root, timeout=STARTUP_S)
    yield process
    process.stop()


def _infer(server: ServerProcess, protocol: str, model: str, inputs: dict[str, np.ndarray]) -> Any:
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(server.http if protocol == "http" else server.grpc)
    tensors = []
    for name, array in inputs.items():
        datatype = "BYTES" if array.dtype == np.object_ else {"int64": "INT64", "float32": "FP32"}[array.dtype.name]
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return client.infer(model, tensors)


def _direct(module: Any, *args: Any) -> Any:
    """The same TorchScript archive, loaded and called in the test: the reference outputs."""
    with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript; Triton's pytorch_libtorch still serves it
        warnings.simplefilter("ignore", DeprecationWarning)
        script = torch.jit.load(io.BytesIO(tm.scripted(module)))
    with torch.no_grad():
        return script(*args)


def _healthy(server: ServerProcess) -> None:
    assert http_request(server, "GET", "/v2/health/live")[0] == 200
    assert http_request(server, "GET", "/v2/models/pt_strings/ready")[0] == 200


PROTOCOLS = ["http", "grpc"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("model", ["pt_strings", "pt_strings_inprocess"])
def test_list_of_str_inputs_and_outputs_match_the_module_called_directly(
    server: ServerProcess, protocol: str, model: str
) -> None:
    result = _infer(server, protocol, model, {"text": TEXT, "scale": SCALE})
    upper, lengths, bang = _direct(tm.Strings(), [t.decode() for t in TEXT], torch.from_numpy(SCALE))
    output = result.get_output("upper__0")
    assert (output["datatype"] if isinstance(output, dict) else output.datatype) == "BYTES"
    assert result.as_numpy("upper__0").tolist() == [t.encode() for t in upper]
    np.testing.assert_array_equal(result.as_numpy("lengths__1"), lengths.numpy())
    assert result.as_numpy("bang__2").tolist() == [t.encode() for t in bang]
    assert result.as_numpy("upper__0").tolist()[0] == b"HELLO"  # TorchScript's upper() changes ASCII letters only


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_single_list_output_keeps_its_own_length(server: ServerProcess, protocol: str) -> None:
    result = _infer(server, protocol, "pt_join", {"text": TEXT})
    expected = _direct(tm.JoinStrings(), [t.decode() for t in TEXT])
    assert result.as_numpy("joined").tolist() == [t.encode() for t in expected] == ["hello Grüße  a b".encode()]
    assert list(result.as_numpy("joined").shape) == [1]


def test_dynamic_batching_gathers_string_requests_into_one_list(server: ServerProcess) -> None:
    """Three one-row requests wait for the preferred batch of 3 (the queue delay is 30 s): one forward() of a
    List[str] of 3, and each request gets its own row back."""
    rows = [np.array([[word]], dtype=np.object_) for word in (b"one", b"two", b"three")]
    results: dict[int, Any] = {}

    def call(i: int) -> None:
        results[i] = _infer(server, "http", "pt_strings_batched", {"text": rows[i], "scale": np.array([[i]])})

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for i, word in enumerate((b"one", b"two", b"three")):
        assert results[i].as_numpy("upper__0").tolist() == [[word.upper()]]
        assert results[i].as_numpy("lengths__1").tolist() == [[len(word) * i]]
    stats = httpclient.InferenceServerClient(server.http).get_inference_statistics("pt_strings_batched")
    model_stats = stats["model_stats"][0]
    assert (model_stats["inference_count"], model_stats["execution_count"]) == (3, 1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("model", ["pt_strings", "pt_strings_inprocess"])
def test_text_that_is_not_utf8_is_refused_for_a_list_of_str(server: ServerProcess, protocol: str, model: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        _infer(server, protocol, model, {"text": np.array([b"ok", b"\xff\xfe"], dtype=np.object_), "scale": SCALE})
    assert info.value.message() == (
        f"element 1 of input 'text' of model '{model}' is not UTF-8 text, which a List[str] argument of forward() needs"
    )
    assert info.value.status() == ("400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT")
    _healthy(server)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_numeric_tensor_sent_for_a_string_input_is_refused(server: ServerProcess, protocol: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        _infer(server, protocol, "pt_strings", {"text": np.array([1.0, 2.0], dtype=np.float32), "scale": SCALE})
    assert info.value.message() == (
        "[request id: <id_unknown>] inference input 'text' data-type is 'FP32', but model 'pt_strings' expects 'BYTES'"
    )
    _healthy(server)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_list_of_int_output_has_tritons_execute_error(server: ServerProcess, protocol: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        _infer(server, protocol, "pt_list_int", {"text": TEXT})
    assert info.value.message() == (
        "PyTorch execute failure: output must be of type Tensor or List[str], received List[int]"
    )
    _healthy(server)


@pytest.mark.parametrize("model", sorted(BAD))
def test_each_bad_string_binding_fails_its_load(server: ServerProcess, model: str) -> None:
    status, _, body = http_request(server, "POST", "/v2/repository/index")
    assert status == 200
    entry = {e["name"]: e for e in json.loads(body)}[model]
    assert (entry["state"], entry.get("reason", "")) == ("UNAVAILABLE", BAD[model])
    _healthy(server)
