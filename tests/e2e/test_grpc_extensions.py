"""End-to-end tests of the gRPC extension RPCs on a real `seawall` in explicit mode with client shared memory on:
model repository (load with config and file overrides, attacks on names and paths), log and trace settings,
system shared memory with tritonclient's helpers (inputs and outputs in shm) and its refusals, CUDA refusals.

After every refusal the server must still be ready.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
import tritonclient.utils.shared_memory as shm
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.harness import EXAMPLES, ROOT, ServerProcess, start_seawall

INVALID = grpc.StatusCode.INVALID_ARGUMENT
MAX_INPUT = 64 * 1024  # --http-max-input-size: also bounds the load overrides
ADD_SUB_CODE = (EXAMPLES / "add_sub" / "1" / "model.py").read_bytes()


@pytest.fixture(scope="module")
def seawall(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    cwd_marker = tmp_path_factory.mktemp("cwd")
    server = start_seawall(
        "--model-control-mode=explicit",
        "--allow-unrestricted-model-repository=true",  # explicit mode without a key
        "--load-model=add_sub",
        "--load-model=identity",
        "--allow-client-shm=true",
        f"--http-max-input-size={MAX_INPUT}",
        env={"TMPDIR": str(cwd_marker)},
    )
    server.addresses["tmp"] = str(cwd_marker)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(seawall: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(seawall.grpc) as sync_client:
        yield sync_client


@pytest.fixture(scope="module")
def stub(seawall: ServerProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(seawall.grpc, options=[("grpc.max_send_message_length", 1 << 24)]) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _refused(stub: Any, rpc: str, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub, rpc)(request)
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    return info.value.code(), info.value.details()


def _load_request(name: str, config: str | None = None, **files: bytes) -> Any:
    request = pb.RepositoryModelLoadRequest(model_name=name)
    if config is not None:
        request.parameters["config"].string_param = config
    for path, content in files.items():
        request.parameters[f"file:{path}"].bytes_param = content
    return request


def _add_sub_config(client: grpcclient.InferenceServerClient, name: str) -> str:
    config = client.get_model_config("add_sub").config
    config.name = name
    return str(json_format.MessageToJson(config))


def _add_sub_inputs(module: Any, a: np.ndarray) -> list[Any]:
    inputs = [module.InferInput("INPUT0", [4], "FP32"), module.InferInput("INPUT1", [4], "FP32")]
    for tensor in inputs:
        tensor.set_data_from_numpy(a)
    return inputs


# ------------------------------------------------------------------------------------------- repository


def test_index_load_unload(client: grpcclient.InferenceServerClient, stub: Any) -> None:
    index = client.get_model_repository_index().models
    assert [(m.name, m.version, m.state) for m in index] == [
        ("add_sub", "1", "READY"),
        ("identity", "1", "READY"),
        ("string_identity", "", ""),  # never loaded: name only
    ]
    client.load_model("string_identity")
    assert client.is_model_ready("string_identity")
    client.unload_model("string_identity", unload_dependents=True)
    assert not client.is_model_ready("string_identity")
    states = {m.name: (m.state, m.reason) for m in client.get_model_repository_index().models}
    assert states["string_identity"] == ("UNAVAILABLE", "unloaded")
    ready = stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True)).models
    assert [m.name for m in ready] == ["add_sub", "identity"]
    client.unload_model("no_such_model")  # accepted, as Triton does


def test_load_with_config_override(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("identity").config
    config.max_batch_size = 4
    client.load_model("identity", config=json_format.MessageToJson(config))
    assert client.get_model_config("identity").config.max_batch_size == 4
    client.load_model("identity")  # back to the repository's config
    assert client.get_model_config("identity").config.max_batch_size == 8


def test_load_with_file_overrides(client: grpcclient.InferenceServerClient) -> None:
    client.load_model("uploaded", config=_add_sub_config(client, "uploaded"), files={"file:1/model.py": ADD_SUB_CODE})
    a = np.arange(4, dtype=np.float32)
    result = client.infer("uploaded", _add_sub_inputs(grpcclient, a))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + a)
    client.unload_model("uploaded")
    assert not client.is_model_ready("uploaded")


@pytest.mark.parametrize(
    "path", ["../../PWNED", "1/../../PWNED", "/tmp/PWNED", "./1/model.py", "1//model.py", "1\\..\\PWNED"]
)
def test_override_paths_must_stay_inside(
    seawall: ServerProcess, client: grpcclient.InferenceServerClient, stub: Any, path: str
) -> None:
    request = _load_request("escape", _add_sub_config(client, "escape"), **{"1/model.py": ADD_SUB_CODE, path: b"x"})
    code, message = _refused(stub, "RepositoryModelLoad", request)
    assert code == INVALID and "must be a relative path inside the model directory" in message
    _assert_no_pwned(seawall)


def _assert_no_pwned(seawall: ServerProcess) -> None:
    for root in (ROOT, EXAMPLES, EXAMPLES.parent, Path(seawall.addresses["tmp"]), Path("/tmp")):
        assert not list(root.glob("PWNED")) and not list(root.glob("*/PWNED")), root


@pytest.mark.parametrize(
    "name", ["..", ".", "inj$(touch PWNED)", "inj$(touch${IFS}PWNED)", "a/b", "x;touch PWNED", "", "a\nb"]
)
def test_hostile_model_names(seawall: ServerProcess, client: grpcclient.InferenceServerClient, name: str) -> None:
    code = "import os\nos.system('touch PWNED')\n" + ADD_SUB_CODE.decode()
    config = _add_sub_config(client, name)
    request = _load_request(name, config, **{"1/model.py": code.encode()})
    with grpc.insecure_channel(seawall.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        status, message = _refused(stub, "RepositoryModelLoad", request)
        assert status == INVALID and message.startswith("invalid model name")
        assert _refused(stub, "RepositoryModelLoad", _load_request(name))[0] == INVALID
    _assert_no_pwned(seawall)


def test_oversized_overrides(client: grpcclient.InferenceServerClient, stub: Any) -> None:
    request = _load_request("big", _add_sub_config(client, "big"), **{"1/model.py": bytes(MAX_INPUT)})
    code, message = _refused(stub, "RepositoryModelLoad", request)
    assert (code, message) == (grpc.StatusCode.RESOURCE_EXHAUSTED, f"load parameters are larger than {MAX_INPUT} bytes")


@pytest.mark.parametrize(
    ("rpc", "field", "key", "value", "message"),
    [
        (
            "RepositoryModelLoad",
            "bytes_param",
            "config",
            b"{}",
            "invalid value type for load parameter 'config', expected string_param.",
        ),
        (
            "RepositoryModelLoad",
            "string_param",
            "file:1/model.py",
            "x",
            "invalid value type for load parameter 'file:1/model.py', expected bytes_param.",
        ),
        ("RepositoryModelLoad", "bool_param", "foo", True, "unrecognized load parameter 'foo'."),
        (
            "RepositoryModelUnload",
            "string_param",
            "unload_dependents",
            "true",
            "invalid value type for 'unload_dependents' parameter, expected bool_param.",
        ),
    ],
)
def test_wrong_parameter_types(stub: Any, rpc: str, field: str, key: str, value: object, message: str) -> None:
    request = getattr(pb, f"{rpc}Request")(model_name="add_sub")
    setattr(request.parameters[key], field, value)
    assert _refused(stub, rpc, request) == (INVALID, message)


def test_repository_name_is_not_supported(stub: Any) -> None:
    for rpc in ("RepositoryModelLoad", "RepositoryModelUnload"):
        request = getattr(pb, f"{rpc}Request")(model_name="add_sub", repository_name="other")
        assert _refused(stub, rpc, request) == (
            grpc.StatusCode.UNIMPLEMENTED,
            "'repository_name' specification is not supported",
        )


# -------------------------------------------------------------------------------------- log and trace


def test_log_settings_round_trip(client: grpcclient.InferenceServerClient) -> None:
    settings = client.get_log_settings(as_json=True)["settings"]
    assert settings["log_verbose_level"] == {"uint32_param": 0}
    assert settings["log_info"] == {"bool_param": True}
    changed = client.update_log_settings({"log_verbose_level": 1, "log_format": "ISO8601"}, as_json=True)
    assert changed["settings"]["log_verbose_level"] == {"uint32_param": 1}
    assert changed["settings"]["log_format"] == {"string_param": "ISO8601"}
    client.update_log_settings({"log_verbose_level": 0, "log_format": "default"})
    assert client.get_log_settings(as_json=True)["settings"] == settings


def _log_request(key: str, field: str, value: object) -> Any:
    request = pb.LogSettingsRequest()
    setattr(request.settings[key], field, value)
    return request


@pytest.mark.parametrize(
    ("key", "field", "value", "code", "message"),
    [
        ("log_info", "uint32_param", 1, INVALID, "expect boolean for 'log_info'"),
        ("log_verbose_level", "bool_param", True, INVALID, "expect int32 for 'log_verbose_level'"),
        ("log_format", "uint32_param", 1, INVALID, "expect string for 'log_format'"),
        (
            "log_file",
            "string_param",
            "/tmp/PWNED",
            grpc.StatusCode.UNIMPLEMENTED,
            "log file location can not be updated through network protocol",
        ),
    ],
)
def test_log_settings_refusals(
    stub: Any, key: str, field: str, value: object, code: grpc.StatusCode, message: str
) -> None:
    assert _refused(stub, "LogSettings", _log_request(key, field, value)) == (code, message)
    assert not Path("/tmp/PWNED").exists()


def test_trace_settings_round_trip(client: grpcclient.InferenceServerClient) -> None:
    settings = client.get_trace_settings(as_json=True)["settings"]
    assert settings["trace_level"] == {"value": ["OFF"]} and settings["trace_rate"] == {"value": ["1000"]}
    changed = client.update_trace_settings("add_sub", {"trace_rate": "5"}, as_json=True)["settings"]
    assert changed["trace_rate"] == {"value": ["5"]}
    assert client.get_trace_settings(as_json=True)["settings"]["trace_rate"] == {"value": ["1000"]}  # global kept
    cleared = client.update_trace_settings("add_sub", {"trace_rate": None}, as_json=True)["settings"]
    assert cleared["trace_rate"] == {"value": ["1000"]}


def _trace_request(model: str = "", **settings: list[str]) -> Any:
    request = pb.TraceSettingRequest(model_name=model)
    for key, values in settings.items():
        request.settings[key].value.extend(values)
    return request


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (_trace_request(trace_rate=["1", "2"]), INVALID, "expect only 1 value for 'trace_rate'"),
        (_trace_request(trace_rate=["abc"]), INVALID, "Unable to parse 'trace_rate', got: abc"),
        (_trace_request("nope"), INVALID, "Request for unknown model : nope"),
        (
            _trace_request(trace_level=["TIMESTAMPS"]),
            INVALID,
            "Attempting to set invalid trace setting :trace file name is not given",
        ),
        (
            _trace_request(trace_file=["/tmp/PWNED"], trace_level=["TIMESTAMPS"]),
            grpc.StatusCode.UNIMPLEMENTED,
            "trace file location can not be updated through network protocol",
        ),
    ],
)
def test_trace_settings_refusals(stub: Any, request_: Any, code: grpc.StatusCode, message: str) -> None:
    assert _refused(stub, "TraceSetting", request_) == (code, message)


# ------------------------------------------------------------------------------------- shared memory


@pytest.fixture
def regions(client: grpcclient.InferenceServerClient) -> Iterator[tuple[Any, Any]]:
    pid = os.getpid()
    handles = (
        shm.create_shared_memory_region("in", f"/sw_grpc_in_{pid}", 32),
        shm.create_shared_memory_region("out", f"/sw_grpc_out_{pid}", 32),
    )
    yield handles
    client.unregister_system_shared_memory()
    for handle in handles:
        shm.destroy_shared_memory_region(handle)


def _shm_infer(module: Any) -> tuple[list[Any], list[Any]]:
    inputs = [module.InferInput("INPUT0", [4], "FP32"), module.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_shared_memory("in", 16)
    inputs[1].set_shared_memory("in", 16, offset=16)
    outputs = [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("out", 16)
    outputs[1].set_shared_memory("out", 16, offset=16)
    return inputs, outputs


def test_shared_memory_inputs_and_outputs(client: grpcclient.InferenceServerClient, regions: tuple[Any, Any]) -> None:
    h_in, h_out = regions
    pid = os.getpid()
    a, b = np.arange(4, dtype=np.float32), np.full(4, 0.5, dtype=np.float32)
    shm.set_shared_memory_region(h_in, [a, b])
    client.register_system_shared_memory("in", f"/sw_grpc_in_{pid}", 32)
    client.register_system_shared_memory("out", f"/sw_grpc_out_{pid}", 32)
    status = client.get_system_shared_memory_status(as_json=True)["regions"]
    assert status["in"] == {"name": "in", "key": f"/sw_grpc_in_{pid}", "byte_size": "32"}
    inputs, outputs = _shm_infer(grpcclient)
    result = client.infer("add_sub", inputs, outputs=outputs)
    response = result.get_response()
    assert [(o.name, list(o.shape)) for o in response.outputs] == [("OUTPUT0", [4]), ("OUTPUT1", [4])]
    assert list(response.raw_output_contents) == [b"", b""]  # the data is in the region, as with Triton
    np.testing.assert_array_equal(shm.get_contents_as_numpy(h_out, np.float32, [4]), a + b)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(h_out, np.float32, [4], offset=16), a - b)
    client.unregister_system_shared_memory("in")
    assert list(client.get_system_shared_memory_status(as_json=True)["regions"]) == ["out"]


def _shm_request(region: str, offset: int, size: int) -> Any:
    request = pb.ModelInferRequest(model_name="add_sub")
    for index, name in enumerate(("INPUT0", "INPUT1")):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=[4])
        tensor.parameters["shared_memory_region"].string_param = region
        tensor.parameters["shared_memory_offset"].int64_param = offset if index == 0 else 16
        tensor.parameters["shared_memory_byte_size"].int64_param = size
    return request


def test_shared_memory_refusals(stub: Any, regions: tuple[Any, Any]) -> None:
    key = f"/sw_grpc_in_{os.getpid()}"
    register = pb.SystemSharedMemoryRegisterRequest
    bad_range = "failed to register shared memory region 'r': invalid args"
    assert _refused(stub, "SystemSharedMemoryRegister", register(name="r", key=key, offset=2**64 - 1, byte_size=2)) == (
        INVALID,
        bad_range,
    )
    assert _refused(stub, "SystemSharedMemoryRegister", register(name="r", key=key, offset=16, byte_size=32)) == (
        INVALID,
        "Unable to open shared memory region: 'r'",  # too small reads as missing: no size oracle
    )
    for internal in ("triton_python_backend_shm_region_x", "//triton_python_backend_shm_region_x"):
        code, message = _refused(stub, "SystemSharedMemoryRegister", register(name="r", key=internal, byte_size=8))
        assert (code, message) == (INVALID, "failed to register shared memory region 'r': invalid key")
    code, message = _refused(stub, "SystemSharedMemoryRegister", register(name="r", key="/no_such_key", byte_size=8))
    assert code == INVALID and "no_such_key" not in message  # no oracle for other processes' objects
    stub.SystemSharedMemoryRegister(register(name="in", key=key, byte_size=32))
    for offset in (-1, 2**63 - 1, 24, 33):  # -1 as int64 is read as 2**64-1, as Triton does
        code, message = _refused(stub, "ModelInfer", _shm_request("in", offset, 16))
        assert code == INVALID and message.startswith("Invalid offset"), message
    assert _refused(stub, "ModelInfer", _shm_request("in", 0, 2**62))[0] == INVALID
    assert _refused(stub, "ModelInfer", _shm_request("nope", 0, 16)) == (
        grpc.StatusCode.NOT_FOUND,
        "Unable to find shared memory region: 'nope'",
    )
    assert stub.ModelInfer(_shm_request("in", 0, 16)).outputs[0].name == "OUTPUT0"


async def test_unregister_while_in_use_is_safe(seawall: ServerProcess, regions: tuple[Any, Any]) -> None:
    h_in, h_out = regions
    shm.set_shared_memory_region(h_in, [np.ones(8, dtype=np.float32)])
    pid = os.getpid()
    async with aioclient.InferenceServerClient(seawall.grpc) as aio:

        async def register() -> None:
            await aio.register_system_shared_memory("in", f"/sw_grpc_in_{pid}", 32)
            await aio.register_system_shared_memory("out", f"/sw_grpc_out_{pid}", 32)

        async def infer() -> str:
            inputs, outputs = _shm_infer(aioclient)
            try:
                await aio.infer("add_sub", inputs, outputs=outputs)
            except InferenceServerException as exc:
                return str(exc.status())
            return "OK"

        answers: list[str] = []
        for _ in range(5):
            await register()
            tasks = [asyncio.create_task(infer()) for _ in range(8)]
            await asyncio.sleep(0)
            await aio.unregister_system_shared_memory()
            answers += await asyncio.gather(*tasks)
        assert set(answers) <= {"OK", "StatusCode.NOT_FOUND"}
        assert await aio.is_server_ready()
        await register()
        assert await infer() == "OK"


def test_cuda_shared_memory(client: grpcclient.InferenceServerClient, stub: Any) -> None:
    code, message = _refused(
        stub,
        "CudaSharedMemoryRegister",
        pb.CudaSharedMemoryRegisterRequest(name="c", raw_handle=bytes(64), device_id=0, byte_size=16),
    )
    assert (code, message) == (
        grpc.StatusCode.UNIMPLEMENTED,
        "failed to register CUDA shared memory region 'c': GPUs not supported",
    )
    assert json.loads(json.dumps(client.get_cuda_shared_memory_status(as_json=True))) == {}
    assert _refused(stub, "CudaSharedMemoryStatus", pb.CudaSharedMemoryStatusRequest(name="c")) == (
        grpc.StatusCode.NOT_FOUND,
        "Unable to find cuda shared memory region: 'c'",
    )
    client.unregister_cuda_shared_memory("c")
    client.unregister_cuda_shared_memory()
