"""The python backend through its public API: load, execute, unload, auto-complete, crash containment."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from seawall.backends.python.host import PythonBackend, PythonModel
from seawall.backends.python.restarts import MAX_RESTARTS
from seawall.backends.registry import BackendRegistry, create_backend
from seawall.core.backend import ModelLoadContext, ResponseSink
from seawall.core.types import InferRequest, InferResponse, RequestedOutput, Tensor
from seawall.errors import (
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    SeawallError,
    UnavailableError,
    UnsupportedError,
)
from seawall.options import BackendOptions

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLES = ROOT / "examples" / "models"
MODELS = ROOT / "tests" / "models"


@dataclass
class Reports:
    reasons: list[str] = field(default_factory=list)


def read_config(model_dir: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def context_for(
    model_dir: Path,
    reports: Reports,
    config: model_config_pb2.ModelConfig | None = None,
    settings: Mapping[str, str] | None = None,
) -> ModelLoadContext:
    model_dir = model_dir.resolve()
    return ModelLoadContext(
        name=model_dir.name,
        version=1,
        config=config if config is not None else read_config(model_dir),
        model_dir=str(model_dir),
        version_dir=str(model_dir / "1"),
        backend_settings=settings or {},
        auto_complete=True,
        report_unavailable=reports.reasons.append,
    )


def request(
    model: str, parameters: dict[str, bool | int | float | str] | None = None, **inputs: np.ndarray
) -> InferRequest:
    tensors = [Tensor.from_numpy(name, array) for name, array in inputs.items()]
    return InferRequest(model, tensors, parameters=parameters or {})


def fp32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


async def load(
    backend: PythonBackend, model_dir: Path, reports: Reports | None = None, **kwargs: object
) -> PythonModel:
    return await backend.load(context_for(model_dir, reports or Reports(), **kwargs))  # type: ignore[arg-type]


def only(results: list[InferResponse | SeawallError]) -> InferResponse:
    assert len(results) == 1
    result = results[0]
    assert isinstance(result, InferResponse), result
    return result


def outputs(response: InferResponse) -> dict[str, Tensor]:
    return {tensor.name: tensor for tensor in response.outputs}


async def wait_until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# --- the unchanged example models --------------------------------------------------------------------


async def test_add_sub_computes_both_outputs_and_finalizes(
    backend: PythonBackend, caplog: pytest.LogCaptureFixture
) -> None:
    model = await load(backend, EXAMPLES / "add_sub")
    (instance,) = model.instances
    assert instance.name == "add_sub_0_0" and instance.is_healthy()
    a, b = fp32(1, 2, 3, 4), fp32(10, 20, 30, 40)
    response = only(await instance.execute([request("add_sub", INPUT0=a, INPUT1=b)]))
    assert (response.model_name, response.model_version) == ("add_sub", "1")
    got = outputs(response)
    np.testing.assert_array_equal(got["OUTPUT0"].data, a + b)
    np.testing.assert_array_equal(got["OUTPUT1"].data, a - b)
    assert got["OUTPUT0"].datatype == "FP32" and got["OUTPUT0"].shape == (4,)
    with caplog.at_level(logging.INFO):
        await model.unload()
    assert "add_sub: finalize" in caplog.text
    assert not instance.is_healthy()
    await model.unload()  # idempotent


async def test_requested_outputs_are_the_only_ones_returned(backend: PythonBackend) -> None:
    model = await load(backend, EXAMPLES / "add_sub")
    req = request("add_sub", INPUT0=fp32(1, 1, 1, 1), INPUT1=fp32(2, 2, 2, 2))
    req.outputs = [RequestedOutput("OUTPUT1")]
    response = only(await model.instances[0].execute([req]))
    assert list(outputs(response)) == ["OUTPUT1"]
    np.testing.assert_array_equal(response.outputs[0].data, fp32(-1, -1, -1, -1))


async def test_identity_batch_of_requests(backend: PythonBackend) -> None:
    model = await load(backend, EXAMPLES / "identity")
    (instance,) = model.instances
    assert instance.name == "identity_0"
    batch = [request("identity", INPUT0=np.full((1, n), n, dtype=np.float32)) for n in range(1, 5)]
    for i, req in enumerate(batch):
        req.id = f"r{i}"
    results = await instance.execute(batch)
    assert [r.id for r in results if isinstance(r, InferResponse)] == ["r0", "r1", "r2", "r3"]
    for n, result in enumerate(results, start=1):
        assert isinstance(result, InferResponse)
        np.testing.assert_array_equal(result.outputs[0].data, np.full((1, n), n, dtype=np.float32))


async def test_string_identity_bytes(backend: PythonBackend) -> None:
    model = await load(backend, EXAMPLES / "string_identity")
    strings = np.array([b"", b"a", "h\u00e9llo".encode(), b"\x00\xff" * 100], dtype=np.object_)
    got = outputs(only(await model.instances[0].execute([request("string_identity", INPUT0=strings)])))
    assert got["OUTPUT0"].datatype == "BYTES"
    assert list(got["OUTPUT0"].data) == list(strings)
    np.testing.assert_array_equal(got["LENGTH"].data, np.array([0, 1, 6, 200], dtype=np.int32))


# --- data path ---------------------------------------------------------------------------------------

DTYPES = {
    "BOOL": np.array([True, False, True]),
    "UINT8": np.array([0, 255, 7], dtype=np.uint8),
    "UINT16": np.array([0, 65535], dtype=np.uint16),
    "UINT32": np.array([4294967295], dtype=np.uint32),
    "UINT64": np.array([2**64 - 1, 0], dtype=np.uint64),
    "INT8": np.array([-128, 127], dtype=np.int8),
    "INT16": np.array([-32768, 5], dtype=np.int16),
    "INT32": np.array([-(2**31), 2**31 - 1], dtype=np.int32),
    "INT64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
    "FP16": np.array([0.5, -2.0, np.inf], dtype=np.float16),
    "FP32": np.array([1.5, np.nan], dtype=np.float32),
    "FP64": np.array([1e300, -0.0], dtype=np.float64),
    "STRING": np.array([b"x", b"", b"\n\x00"], dtype=np.object_),
    "BF16": np.array([0x3F80, 0xC000], dtype=np.uint16),  # 1.0 and -2.0 as bfloat16 bit patterns
}


@pytest.mark.parametrize("empty", [False, True], ids=["values", "empty"])
async def test_all_dtypes_round_trip(backend: PythonBackend, empty: bool) -> None:
    model = await load(backend, MODELS / "all_dtypes")
    tensors = []
    for name, array in DTYPES.items():
        data = array[:0] if empty else array
        datatype = {"STRING": "BYTES"}.get(name, name)
        tensors.append(Tensor(f"IN_{name}", datatype, tuple(data.shape), data))
    got = outputs(only(await model.instances[0].execute([InferRequest("all_dtypes", tensors)])))
    for name, array in DTYPES.items():
        expected = array[:0] if empty else array
        out = got[f"OUT_{name}"]
        assert out.datatype == {"STRING": "BYTES"}.get(name, name)
        assert out.shape == expected.shape
        if name == "STRING":
            assert list(out.data) == list(expected)
        else:
            assert out.data.dtype == expected.dtype
            np.testing.assert_array_equal(out.data, expected)


async def test_regions_grow_for_large_tensors(backend: PythonBackend) -> None:
    settings = {"shm-default-byte-size": "4096", "shm-growth-byte-size": "4096"}
    model = await load(backend, EXAMPLES / "identity", settings=settings)
    instance = model.instances[0]
    for size in (10, 100_000, 10, 300_000):  # grows twice, reuses the big regions for small batches
        data = np.random.default_rng(size).random((2, size), dtype=np.float32)
        response = only(await instance.execute([request("identity", INPUT0=data)]))
        np.testing.assert_array_equal(response.outputs[0].data, data)
        assert response.outputs[0].data.flags.writeable


async def test_outputs_written_before_the_region_grows_are_written_again(backend: PythonBackend) -> None:
    # the stub writes each output while the region holds it: here the first few fit in the 4 KiB region and a
    # later one does not, so the region grows and every output must be in the new one
    settings = {"shm-default-byte-size": "4096", "shm-growth-byte-size": "4096"}
    model = await load(backend, MODELS / "all_dtypes", settings=settings)
    rng = np.random.default_rng(3)
    tensors, sent = [], {}
    for name, array in DTYPES.items():
        data = np.resize(array, 300)  # OUT_BOOL..OUT_UINT32 fit in 4096 bytes, OUT_UINT64 does not
        datatype = {"STRING": "BYTES"}.get(name, name)
        if name not in ("STRING", "BOOL"):
            data = rng.integers(0, 100, 300).astype(array.dtype)
        sent[name] = data
        tensors.append(Tensor(f"IN_{name}", datatype, tuple(data.shape), data))
    for _ in range(2):  # the second batch finds the grown region
        got = outputs(only(await model.instances[0].execute([InferRequest("all_dtypes", tensors)])))
        for name, data in sent.items():
            if name == "STRING":
                assert list(got[f"OUT_{name}"].data) == list(data)
            else:
                np.testing.assert_array_equal(got[f"OUT_{name}"].data, data)


async def test_a_slot_opened_for_a_large_batch_is_passed_once(backend: PythonBackend) -> None:
    # a small batch holds slot 0 while a large one opens slot 1: its input region used to be passed twice (default
    # size, then grown) and the stub mapped the first with the grown size ("mmap length is greater than file
    # size", a 500 on one of four concurrent 9 MiB requests over HTTP)
    settings = {"shm-default-byte-size": "4096", "shm-growth-byte-size": "4096"}
    model = await load(backend, EXAMPLES / "identity", settings=settings)
    instance = model.instances[0]
    batches = [np.full((1, 4), 1, dtype=np.float32), np.full((1, 3_000_000), 2, dtype=np.float32)]
    responses = await asyncio.gather(*(instance.execute([request("identity", INPUT0=data)]) for data in batches))
    for data, response in zip(batches, responses, strict=True):
        np.testing.assert_array_equal(only(response).outputs[0].data, data)


async def test_model_sees_request_metadata_and_initialize_args(backend: PythonBackend) -> None:
    model = await load(backend, MODELS / "slow")
    req = request(
        "slow",
        {"sequence_id": 42, "sequence_start": True, "priority": 1, "custom": "x", "n": 1.5},
        INPUT0=np.ones((1, 2), dtype=np.float32),
    )
    req.id = "abc"
    req.outputs = [RequestedOutput("REQUEST")]
    got = outputs(only(await model.instances[0].execute([req])))
    assert list(got) == ["REQUEST"]
    seen = json.loads(got["REQUEST"].data[0][0])
    assert seen["id"] == "abc" and seen["correlation_id"] == 42 and seen["flags"] == 1
    assert seen["parameters"] == {"custom": "x", "n": 1.5}
    assert seen["requested"] == ["REQUEST"]
    assert seen["instance"] == "slow_0" and seen["config_name"] == "slow"
    assert seen["args"] == sorted(
        [
            "model_config",
            "model_instance_kind",
            "model_instance_name",
            "model_instance_device_id",
            "model_repository",
            "model_version",
            "model_name",
        ]
    )


async def test_model_log_lines_are_escaped(backend: PythonBackend, caplog: pytest.LogCaptureFixture) -> None:
    model = await load(backend, MODELS / "slow")
    forged = "hello\nERROR forged line\x1b[31m"
    with caplog.at_level(logging.INFO):
        await model.instances[0].execute([request("slow", {"log": forged}, INPUT0=np.ones((1, 1), np.float32))])
    messages = [r.getMessage() for r in caplog.records if "hello" in r.getMessage()]
    assert len(messages) == 1
    assert "\n" not in messages[0] and "\x1b" not in messages[0]
    assert "hello\\nERROR forged line\\x1b[31m" in messages[0]


async def test_cancelled_execute_does_not_corrupt_the_next_batch(backend: PythonBackend) -> None:
    model = await load(backend, MODELS / "slow")
    instance = model.instances[0]
    first = request("slow", {"sleep_ms": 300}, INPUT0=np.full((1, 3), 1, np.float32))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(instance.execute([first]), 0.05)
    second = request("slow", INPUT0=np.full((1, 3), 2, np.float32))
    response = only(await instance.execute([second]))
    np.testing.assert_array_equal(outputs(response)["OUTPUT0"].data, np.full((1, 3), 2, np.float32))
    assert instance.is_healthy()


# --- errors ------------------------------------------------------------------------------------------


async def test_exception_in_execute_fails_the_batch_without_traceback(backend: PythonBackend) -> None:
    model = await load(backend, MODELS / "error_raise")
    instance = model.instances[0]
    with pytest.raises(InternalError) as info:
        await instance.execute([request("error_raise", INPUT0=fp32(1)), request("error_raise", INPUT0=fp32(2))])
    assert info.value.message == (
        "Failed to process the request(s) for model 'error_raise_0_0', message: ValueError: boom in execute"
    )
    assert instance.is_healthy()


async def test_error_response_maps_the_triton_code(backend: PythonBackend) -> None:
    model = await load(backend, MODELS / "error_response")
    results = await model.instances[0].execute(
        [request("error_response", INPUT0=fp32(-1)), request("error_response", INPUT0=fp32(3))]
    )
    assert isinstance(results[0], NotFoundError) and results[0].message == "no such thing"
    assert isinstance(results[1], InferResponse)
    np.testing.assert_array_equal(results[1].outputs[0].data, fp32(3))


async def test_wrong_number_of_responses(backend: PythonBackend) -> None:
    model = await load(backend, MODELS / "wrong_count")
    with pytest.raises(InternalError) as info:
        await model.instances[0].execute([request("wrong_count", INPUT0=fp32(1))])
    assert info.value.message == (
        "Failed to process the request(s) for model 'wrong_count_0', message: Number of InferenceResponse "
        "objects do not match the number of requests. InferenceRequest(s) size is 1, and "
        "InferenceResponse(s) size is 2"
    )


async def test_an_output_datatype_other_than_the_configs_goes_out_as_the_model_made_it(backend: PythonBackend) -> None:
    """As Triton 2.51 (NVIDIA's bls_decoupled example answers INT64 for an output its config declares INT32)."""
    model = await load(backend, MODELS / "wrong_dtype")
    (result,) = await model.instances[0].execute([request("wrong_dtype", INPUT0=fp32(1))])
    assert not isinstance(result, SeawallError)
    assert [(t.name, t.datatype, t.data.tolist()) for t in result.outputs] == [("OUTPUT0", "FP64", [1.0])]


async def test_initialize_failure_fails_the_load_without_paths(backend: PythonBackend) -> None:
    with pytest.raises(InternalError) as info:
        await load(backend, MODELS / "init_fail")
    message = info.value.message
    assert message == (
        "Failed to initialize model instance 'init_fail_0': RuntimeError: cannot read init_fail/1/weights.bin"
    )
    assert str(MODELS) not in message and "Traceback" not in message


async def test_a_decoupled_model_streams_into_its_sinks(backend: PythonBackend) -> None:
    model = await load(backend, MODELS / "square_int32")
    try:
        sinks = [ResponseSink(), ResponseSink()]
        requests = [request("square_int32", IN=np.array([n], dtype=np.int32)) for n in (2, 1)]
        result = await model.instances[0].execute_decoupled(requests, sinks)
        assert list(result) == [None, None]
        for sink, count in zip(sinks, (2, 1), strict=True):
            messages = [await asyncio.wait_for(sink.get(), 30) for _ in range(count + 1)]
            assert [m.final for m in messages] == [False] * count + [True]
            assert [int(m.response.outputs[0].data[0]) for m in messages[:-1]] == list(range(count))  # type: ignore[union-attr]
            assert messages[-1].response is None and messages[-1].error is None
    finally:
        await model.unload()


# --- crash containment -------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name,trigger", [("crash_segfault", "crash"), ("crash_exit", "exit")])
async def test_a_crash_fails_the_batch_in_flight_and_the_stub_is_started_again(
    backend: PythonBackend, model_name: str, trigger: str
) -> None:
    reports = Reports()
    model = await load(backend, MODELS / model_name, reports)
    other = await load(backend, EXAMPLES / "identity")
    crashing, sibling = model.instances
    assert (crashing.name, sibling.name) == (f"{model_name}_0_0", f"{model_name}_0_1")
    with pytest.raises(UnavailableError) as info:
        await crashing.execute([request(model_name, {trigger: True}, INPUT0=fp32(1))])
    assert info.value.message == f"model instance '{model_name}_0_0' crashed"
    assert crashing.is_healthy()  # a new stub is on its way
    response = only(await crashing.execute([request(model_name, INPUT0=fp32(7))]))  # waits for it
    np.testing.assert_array_equal(response.outputs[0].data, fp32(7))
    assert reports.reasons == []
    # the sibling instance and other models served throughout
    response = only(await sibling.execute([request(model_name, INPUT0=fp32(5))]))
    np.testing.assert_array_equal(response.outputs[0].data, fp32(5))
    response = only(await other.instances[0].execute([request("identity", INPUT0=np.ones((1, 2), np.float32))]))
    assert response.outputs[0].shape == (1, 2)
    await model.unload()


async def test_an_instance_that_keeps_crashing_stays_down(backend: PythonBackend) -> None:
    reports = Reports()
    model = await load(backend, MODELS / "crash_exit", reports)
    crashing = model.instances[0]
    for _ in range(MAX_RESTARTS + 1):
        assert crashing.is_healthy()
        with pytest.raises(UnavailableError) as info:
            await crashing.execute([request("crash_exit", {"exit": True}, INPUT0=fp32(1))])
        assert info.value.message == "model instance 'crash_exit_0_0' crashed"
    assert not crashing.is_healthy()
    assert reports.reasons == [f"model instance 'crash_exit_0_0' crashed {MAX_RESTARTS + 1} times in 60 s"]
    with pytest.raises(UnavailableError) as info:
        await crashing.execute([request("crash_exit", INPUT0=fp32(1))])
    assert info.value.message == "model instance 'crash_exit_0_0' is not available"
    await model.unload()  # unloading a model with a dead instance works


async def test_a_stub_that_cannot_start_again_leaves_the_instance_down(backend: PythonBackend, tmp_path: Path) -> None:
    model_dir = tmp_path / "crash_exit"
    shutil.copytree(MODELS / "crash_exit", model_dir)
    reports = Reports()
    model = await load(backend, model_dir, reports)
    crashing = model.instances[0]
    # the next start reads model.py again: now its initialize fails
    (model_dir / "1" / "model.py").write_text(
        "class TritonPythonModel:\n    def initialize(self, args):\n        raise RuntimeError('gone')\n"
    )
    with pytest.raises(UnavailableError):
        await crashing.execute([request("crash_exit", {"exit": True}, INPUT0=fp32(1))])
    with pytest.raises(UnavailableError) as info:
        await crashing.execute([request("crash_exit", INPUT0=fp32(1))])  # waits for the failed start
    assert info.value.message == "model instance 'crash_exit_0_0' is not available"
    assert not crashing.is_healthy()
    assert reports.reasons == [
        "model instance 'crash_exit_0_0' crashed and could not be started again: "
        "Failed to initialize model instance 'crash_exit_0_0': RuntimeError: gone"
    ]
    await model.unload()


async def test_death_of_an_idle_instance_is_noticed(backend: PythonBackend, caplog: pytest.LogCaptureFixture) -> None:
    model = await load(backend, MODELS / "crash_exit", Reports())
    instance = model.instances[0]
    only(await instance.execute([request("crash_exit", {"exit_later_ms": 100}, INPUT0=fp32(1))]))
    await wait_until(lambda: "model instance 'crash_exit_0_0': starting its stub process again" in caplog.text)
    response = only(await instance.execute([request("crash_exit", INPUT0=fp32(3))]))
    np.testing.assert_array_equal(response.outputs[0].data, fp32(3))
    await model.unload()


# --- auto-complete and paths -------------------------------------------------------------------------


async def test_auto_complete_fills_the_config_and_the_model_serves(backend: PythonBackend) -> None:
    model_dir = (MODELS / "auto_complete").resolve()
    assert not (model_dir / "config.pbtxt").exists()
    partial = model_config_pb2.ModelConfig(name="auto_complete", backend="python")
    config = await backend.auto_complete_config(partial, str(model_dir), str(model_dir / "1"))
    assert config.max_batch_size == 4
    assert config.HasField("dynamic_batching")
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("INPUT0", model_config_pb2.TYPE_FP32, [2])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("OUTPUT0", [2])]
    assert partial.max_batch_size == 0  # the input is not mutated
    model = await load(backend, model_dir, config=config)
    response = only(await model.instances[0].execute([request("auto_complete", INPUT0=np.ones((3, 2), np.float32))]))
    np.testing.assert_array_equal(response.outputs[0].data, np.full((3, 2), 2, np.float32))


async def test_auto_complete_without_the_hook_keeps_the_config(backend: PythonBackend) -> None:
    model_dir = (EXAMPLES / "add_sub").resolve()
    config = read_config(model_dir)
    completed = await backend.auto_complete_config(config, str(model_dir), str(model_dir / "1"))
    assert completed == config


@pytest.mark.parametrize("filename", ["../config.pbtxt", "/etc/passwd", "escape.py", "missing.py"])
async def test_model_file_must_stay_in_the_version_dir(backend: PythonBackend, tmp_path: Path, filename: str) -> None:
    model_dir = tmp_path / "confined"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text('backend: "python"')
    outside = tmp_path / "outside.py"
    outside.write_text("raise SystemExit('must never run')\n")
    os.symlink(outside, model_dir / "1" / "escape.py")
    config = model_config_pb2.ModelConfig(name="confined", backend="python", default_model_filename=filename)
    with pytest.raises(InvalidArgumentError) as info:
        await load(backend, model_dir, config=config)
    assert str(tmp_path) not in info.value.message


async def test_bad_backend_setting_is_refused(backend: PythonBackend) -> None:
    with pytest.raises(InvalidArgumentError, match="shm-default-byte-size"):
        await load(backend, EXAMPLES / "identity", settings={"shm-default-byte-size": "lots"})


async def test_instance_groups_start_one_stub_per_instance(backend: PythonBackend) -> None:
    config = read_config(EXAMPLES / "identity")
    config.instance_group.add(count=2, kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
    config.instance_group.add(name="named", count=1)
    model = await load(backend, EXAMPLES / "identity", config=config)
    assert [i.name for i in model.instances] == ["identity_0_0", "identity_0_1", "named_0"]
    data = np.ones((1, 1), np.float32)
    results = await asyncio.gather(*(i.execute([request("identity", INPUT0=data)]) for i in model.instances))
    assert all(isinstance(r[0], InferResponse) for r in results)


# --- registry ----------------------------------------------------------------------------------------


async def test_registry_creates_and_caches_backends() -> None:
    registry = BackendRegistry(BackendOptions())
    backend = registry.get("python")
    assert backend.name == "python" and registry.get("python") is backend
    with pytest.raises(UnsupportedError, match="'tensorrt'"):
        registry.get("tensorrt")
    with pytest.raises(UnsupportedError, match="'nope'"):
        create_backend("nope", BackendOptions())
    model = await backend.load(context_for(EXAMPLES / "identity", Reports()))
    await registry.stop()  # unloads what the backend still holds
    assert not model.instances[0].is_healthy()
