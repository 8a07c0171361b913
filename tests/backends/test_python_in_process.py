"""The SEAWALL_IN_PROCESS opt-in: model.py on a worker thread of the server, with the stub's semantics
(same results, same error codes and messages), a warning at load, and no copies shared with the model."""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2

import seawall
from seawall.backends.python.host import PythonBackend
from seawall.core.types import InferRequest, InferResponse, Tensor
from seawall.errors import InternalError, InvalidArgumentError, SeawallError, UnavailableError
from seawall.options import Options, RepositoryOptions
from tests.backends.test_python_backend import (
    DTYPES,
    EXAMPLES,
    MODELS,
    fp32,
    load,
    only,
    outputs,
    read_config,
    request,
)

PARAMETER = "SEAWALL_IN_PROCESS"


def in_process_config(model_dir: Path, value: str = "true") -> model_config_pb2.ModelConfig:
    config = read_config(model_dir)
    config.parameters[PARAMETER].string_value = value
    return config


async def test_add_sub_runs_in_process_with_a_warning(backend: PythonBackend, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        model = await load(backend, EXAMPLES / "add_sub", config=in_process_config(EXAMPLES / "add_sub"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and PARAMETER in r.getMessage()]
    assert [r.getMessage() for r in warnings] == [
        "model 'add_sub' version 1 runs in the server process (parameter SEAWALL_IN_PROCESS): "
        "a crash in its code stops the server; it has no isolation at all (it reads the server's memory, keys "
        "and files as its user)"
    ]
    (instance,) = model.instances
    assert instance.name == "add_sub_0_0" and instance.is_healthy() and instance.pipeline_depth == 8
    a, b = fp32(1, 2, 3, 4), fp32(10, 20, 30, 40)
    got = outputs(only(await instance.execute([request("add_sub", INPUT0=a, INPUT1=b)])))
    np.testing.assert_array_equal(got["OUTPUT0"].data, a + b)
    np.testing.assert_array_equal(got["OUTPUT1"].data, a - b)
    assert got["OUTPUT0"].datatype == "FP32" and got["OUTPUT0"].shape == (4,)
    threads = {t.name for t in threading.enumerate()}
    assert "add_sub_0_0" in threads  # one worker thread per instance, named after it
    with caplog.at_level(logging.INFO):
        await model.unload()
    assert "add_sub: finalize" in caplog.text
    assert not instance.is_healthy()
    with pytest.raises(UnavailableError):
        await instance.execute([request("add_sub", INPUT0=a, INPUT1=b)])


async def test_false_and_absent_mean_a_stub(backend: PythonBackend) -> None:
    model = await load(backend, EXAMPLES / "add_sub", config=in_process_config(EXAMPLES / "add_sub", "False"))
    assert type(model.instances[0]).__name__ == "PythonModelInstance"


async def test_other_values_are_refused(backend: PythonBackend) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        await load(backend, EXAMPLES / "add_sub", config=in_process_config(EXAMPLES / "add_sub", "yes"))
    assert info.value.message == (
        'parameter \'SEAWALL_IN_PROCESS\' of model \'add_sub\' must be "true", "inline" or "false"'
    )


async def outcome(backend: PythonBackend, name: str, requests: list[InferRequest], mode: str) -> list[object]:
    """What a batch gives, comparable across modes ("false": a stub): (error type, message) or output arrays."""
    config = in_process_config(MODELS / name, mode)
    model = await load(backend, MODELS / name, config=config)
    try:
        results: list[InferResponse | SeawallError] = await model.instances[0].execute(requests)
    except SeawallError as error:
        return [(type(error).__name__, error.message)]
    finally:
        await model.unload()
    return [
        (type(r).__name__, r.message)
        if isinstance(r, SeawallError)
        else [(t.name, t.datatype, t.shape, t.data.tolist()) for t in r.outputs]
        for r in results
    ]


@pytest.mark.parametrize(
    "name,inputs",
    [
        ("error_raise", [fp32(1), fp32(2)]),
        ("error_response", [fp32(-1), fp32(3)]),
        ("wrong_count", [fp32(1)]),
        ("wrong_dtype", [fp32(1)]),
    ],
)
async def test_errors_map_as_in_a_stub(backend: PythonBackend, name: str, inputs: list[np.ndarray]) -> None:
    batch = [request(name, INPUT0=values) for values in inputs]
    in_stub = await outcome(backend, name, batch, "false")
    assert in_stub and all(isinstance(item, tuple) or item for item in in_stub)
    assert await outcome(backend, name, batch, "true") == in_stub
    assert await outcome(backend, name, batch, "inline") == in_stub


async def test_initialize_failure_reads_as_in_a_stub(backend: PythonBackend) -> None:
    with pytest.raises(InternalError) as info:
        await load(backend, MODELS / "init_fail", config=in_process_config(MODELS / "init_fail"))
    assert info.value.message == (
        "Failed to initialize model instance 'init_fail_0': RuntimeError: cannot read init_fail/1/weights.bin"
    )


async def test_all_dtypes_round_trip_in_process(backend: PythonBackend) -> None:
    model = await load(backend, MODELS / "all_dtypes", config=in_process_config(MODELS / "all_dtypes"))
    tensors = []
    for name, array in DTYPES.items():
        datatype = {"STRING": "BYTES"}.get(name, name)
        tensors.append(Tensor(f"IN_{name}", datatype, tuple(array.shape), array))
    got = outputs(only(await model.instances[0].execute([InferRequest("all_dtypes", tensors)])))
    for name, expected in DTYPES.items():
        out = got[f"OUT_{name}"]
        assert out.datatype == {"STRING": "BYTES"}.get(name, name) and out.shape == expected.shape
        if name == "STRING":
            assert list(out.data) == list(expected)
        else:
            assert out.data.dtype == expected.dtype and out.data.flags.writeable
            np.testing.assert_array_equal(out.data, expected)
            assert not np.shares_memory(out.data, expected)  # outputs are the server's own copies


async def test_model_cannot_write_the_clients_inputs(backend: PythonBackend) -> None:
    model_dir = MODELS / "execution_order"
    model = await load(backend, model_dir, config=in_process_config(model_dir))
    values = fp32(1, 2, 3)
    got = outputs(
        only(await model.instances[0].execute([request("execution_order", {"write_input": True}, INPUT0=values)]))
    )
    np.testing.assert_array_equal(values, fp32(1, 2, 3))
    np.testing.assert_array_equal(got["OUTPUT0"].data, fp32(1, 2, 3))


async def test_sys_exit_in_execute_fails_only_the_batch(backend: PythonBackend) -> None:
    model_dir = MODELS / "execution_order"
    model = await load(backend, model_dir, config=in_process_config(model_dir))
    instance = model.instances[0]
    with pytest.raises(InternalError) as info:
        await instance.execute([request("execution_order", {"sys_exit": True}, INPUT0=fp32(1))])
    assert info.value.message == (
        "Failed to process the request(s) for model 'execution_order_0_0', message: SystemExit: 3"
    )
    got = outputs(only(await instance.execute([request("execution_order", INPUT0=fp32(2))])))
    np.testing.assert_array_equal(got["OUTPUT0"].data, fp32(2))


@pytest.mark.parametrize("mode", ["true", "inline"])
async def test_model_log_lines_are_escaped_in_process(
    backend: PythonBackend, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    model = await load(backend, MODELS / "slow", config=in_process_config(MODELS / "slow", mode))
    forged = "hello\nERROR forged line\x1b[31m"
    with caplog.at_level(logging.INFO):
        await model.instances[0].execute([request("slow", {"log": forged}, INPUT0=np.ones((1, 1), np.float32))])
    records = [r for r in caplog.records if "hello" in r.getMessage()]
    assert [r.getMessage() for r in records] == ["hello\\nERROR forged line\\x1b[31m"]
    assert records[0].filename == "model.py"  # with the line of the call, as Triton logs it
    # where execute() ran: the instance's worker thread, or inline the event loop's own thread
    assert records[0].threadName == ("slow_0" if mode == "true" else threading.current_thread().name)


async def test_inline_runs_execute_on_the_event_loop_thread(
    backend: PythonBackend, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        model = await load(backend, EXAMPLES / "add_sub", config=in_process_config(EXAMPLES / "add_sub", "Inline"))
    assert (
        "model 'add_sub' version 1 runs in the server process (parameter SEAWALL_IN_PROCESS): a crash in its code "
        "stops the server; execute() runs on the event loop, so a slow one delays every request; it has no isolation "
        "at all"
    ) in caplog.text
    (instance,) = model.instances
    assert instance.pipeline_depth == 1  # nothing to queue behind a call that runs right away
    a, b = fp32(1, 2, 3, 4), fp32(4, 3, 2, 1)
    got = outputs(only(await instance.execute([request("add_sub", INPUT0=a, INPUT1=b)])))
    np.testing.assert_array_equal(got["OUTPUT0"].data, a + b)
    np.testing.assert_array_equal(got["OUTPUT1"].data, a - b)
    await model.unload()


async def test_embedded_server_with_an_in_process_model(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shutil.copytree(MODELS / "execution_order", tmp_path / "execution_order")
    config = tmp_path / "execution_order" / "config.pbtxt"
    config.write_text(config.read_text() + f'\nparameters {{ key: "{PARAMETER}" value {{ string_value: "true" }} }}\n')
    options = Options(repository=RepositoryOptions(paths=(str(tmp_path),)))
    with caplog.at_level(logging.WARNING):
        async with seawall.open_server(options) as server:
            requests = [request("execution_order", INPUT0=fp32(i)) for i in range(40)]
            responses = await asyncio.gather(*(server.infer(r) for r in requests))
    assert [int(outputs(r)["ORDER"].data[0]) for r in responses] == list(range(1, 41))
    assert sum(PARAMETER in r.getMessage() for r in caplog.records) == 1
