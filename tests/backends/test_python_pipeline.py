"""The python backend's pipelined data path: several batches in flight per stub, in order, with crashes and
cancellations, through the backend API and through `open_server()`."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

import seawall
from seawall.backends.python.host import PythonBackend
from seawall.core.backend import BATCHING_PIPELINE_DEPTH, PIPELINE_DEPTH
from seawall.core.request_queue import BatchPolicy
from seawall.core.scheduler import Scheduler
from seawall.core.stats import StatsRecorder
from seawall.core.types import InferRequest, Tensor
from seawall.errors import UnavailableError
from seawall.options import Options, RepositoryOptions
from tests.backends.test_python_backend import MODELS, Reports, fp32, load, only, outputs, read_config, request


def order_request(values: np.ndarray, parameters: dict[str, bool | int | float | str] | None = None) -> InferRequest:
    return request("execution_order", parameters, INPUT0=values)


def repository(tmp_path: Path, *names: str) -> Options:
    for name in names:
        shutil.copytree(MODELS / name, tmp_path / name)
    return Options(repository=RepositoryOptions(paths=(str(tmp_path),)))


async def test_instance_takes_several_batches_at_once(backend: PythonBackend) -> None:
    model = await load(backend, MODELS / "execution_order")
    (instance,) = model.instances
    assert instance.pipeline_depth == PIPELINE_DEPTH == 8
    config = read_config(MODELS / "execution_order")
    config.max_batch_size = 8
    config.dynamic_batching.SetInParent()  # one batch ahead: deeper pipelines would split the batches
    batching = await load(backend, MODELS / "execution_order", config=config)
    assert batching.instances[0].pipeline_depth == BATCHING_PIPELINE_DEPTH == 2


async def test_waiting_in_the_pipeline_counts_as_queue_time(tmp_path: Path) -> None:
    async with seawall.open_server(repository(tmp_path, "execution_order")) as server:
        slow = asyncio.ensure_future(server.infer(order_request(fp32(1), {"sleep_ms": 300})))
        await asyncio.sleep(0.05)  # the slow batch is running in the stub
        await server.infer(order_request(fp32(2)))  # handed to the stub at once, waits there behind it
        await slow
        (stats,) = server.model_statistics("execution_order")
    assert stats.compute_infer.count == 2 and stats.queue.count == 2
    assert 0.3e9 <= stats.compute_infer.ns < 0.45e9  # the slow batch, and the quick one's own run only
    assert stats.queue.ns >= 0.2e9  # the quick one waited ~250 ms behind the slow one


async def test_concurrent_batches_get_their_own_outputs(backend: PythonBackend) -> None:
    model = await load(backend, MODELS / "execution_order")
    instance = model.instances[0]
    # sizes around the 1 MiB default region: small batches spread over every slot, large ones over two,
    # which grow their input and output regions on the way
    sizes = [1, 7, 300_000, 3, 262_144, 500_000, 17, 1] * 4
    inputs = [np.arange(size, dtype=np.float32) + index for index, size in enumerate(sizes)]
    results = await asyncio.gather(*(instance.execute([order_request(values)]) for values in inputs))
    for values, result in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(outputs(only(result))["OUTPUT0"].data, values)
    orders = sorted(int(outputs(only(result))["ORDER"].data[0]) for result in results)
    assert orders == list(range(1, len(sizes) + 1))


async def test_server_executes_queued_requests_in_arrival_order(tmp_path: Path) -> None:
    async with seawall.open_server(repository(tmp_path, "execution_order")) as server:
        requests = [order_request(fp32(index)) for index in range(40)]
        responses = await asyncio.gather(*(server.infer(r) for r in requests))
    orders = [int(outputs(response)["ORDER"].data[0]) for response in responses]
    assert orders == list(range(1, 41))
    for index, response in enumerate(responses):
        np.testing.assert_array_equal(outputs(response)["OUTPUT0"].data, fp32(index))


async def test_dynamic_batching_forms_one_batch_at_a_time(tmp_path: Path) -> None:
    # two pipelined workers must not split what arrives within one queue delay into two batches
    options = repository(tmp_path, "execution_order")
    config = tmp_path / "execution_order" / "config.pbtxt"
    text = config.read_text().replace("max_batch_size: 0", "max_batch_size: 8")
    config.write_text(text + "\ndynamic_batching { max_queue_delay_microseconds: 300000 }\n")
    async with seawall.open_server(options) as server:
        first = [asyncio.ensure_future(server.infer(order_request(fp32(i).reshape(1, 1)))) for i in range(3)]
        await asyncio.sleep(0.02)
        second = [asyncio.ensure_future(server.infer(order_request(fp32(i).reshape(1, 1)))) for i in range(3, 6)]
        responses = await asyncio.gather(*first, *second)
    assert [int(outputs(r)["BATCH"].data[0, 0]) for r in responses] == [6] * 6
    for index, response in enumerate(responses):
        np.testing.assert_array_equal(outputs(response)["OUTPUT0"].data, fp32(index).reshape(1, 1))


async def test_crash_fails_both_batches_in_flight(backend: PythonBackend) -> None:
    reports = Reports()
    model = await load(backend, MODELS / "crash_exit", reports)
    crashing = model.instances[0]
    results = await asyncio.gather(
        crashing.execute([request("crash_exit", {"exit": True}, INPUT0=fp32(1))]),
        crashing.execute([request("crash_exit", INPUT0=fp32(2))]),
        return_exceptions=True,
    )
    assert all(
        isinstance(r, UnavailableError) and r.message == "model instance 'crash_exit_0_0' crashed" for r in results
    )
    assert reports.reasons == []  # the stub is started again
    for instance in model.instances:
        response = only(await instance.execute([request("crash_exit", INPUT0=fp32(5))]))
        np.testing.assert_array_equal(response.outputs[0].data, fp32(5))


async def test_requests_reach_the_surviving_instance(backend: PythonBackend) -> None:
    # each request wakes one parked worker; one of the dead instance must hand its wake-up on
    model = await load(backend, MODELS / "crash_exit", Reports())
    dead, alive = model.instances
    scheduler = Scheduler(model.instances, BatchPolicy(), StatsRecorder("crash_exit", "1"))
    scheduler.start()
    try:
        await asyncio.sleep(0.05)  # every worker is parked, those of `dead` first
        with pytest.raises(UnavailableError):
            await dead.execute([request("crash_exit", {"exit": True}, INPUT0=fp32(1))])
        for value in range(6):
            response = await asyncio.wait_for(scheduler.enqueue(request("crash_exit", INPUT0=fp32(value)), 1), 5)
            np.testing.assert_array_equal(response.outputs[0].data, fp32(value))
        assert alive.is_healthy()
    finally:
        await scheduler.stop()


async def test_cancelled_batch_keeps_its_slot_until_answered(backend: PythonBackend) -> None:
    model = await load(backend, MODELS / "execution_order")
    instance = model.instances[0]
    slow = asyncio.ensure_future(instance.execute([order_request(fp32(1, 1), {"sleep_ms": 200})]))
    other = asyncio.ensure_future(instance.execute([order_request(fp32(2, 2))]))
    await asyncio.sleep(0.05)
    slow.cancel()
    later = [instance.execute([order_request(np.full(100_000, 3 + i, np.float32))]) for i in range(4)]
    results = await asyncio.gather(*later)
    np.testing.assert_array_equal(outputs(only(await other))["OUTPUT0"].data, fp32(2, 2))
    for i, result in enumerate(results):
        np.testing.assert_array_equal(outputs(only(result))["OUTPUT0"].data, np.full(100_000, 3 + i, np.float32))
    assert slow.cancelled() and instance.is_healthy()


@pytest.mark.parametrize("shape", [(0,), (1, 0), (0, 3), (2, 3), ()])
async def test_any_shape_travels(backend: PythonBackend, shape: tuple[int, ...]) -> None:
    model = await load(backend, MODELS / "all_dtypes")
    request_tensors = []
    for datatype, dtype in (("FP16", np.float16), ("BOOL", np.bool_), ("UINT64", np.uint64)):
        data = (np.arange(int(np.prod(shape))) % 2).astype(dtype).reshape(shape[::-1]).T  # not C-contiguous in 2-D
        request_tensors.append(Tensor(f"IN_{datatype}", datatype, shape, data))
    got = outputs(only(await model.instances[0].execute([InferRequest("all_dtypes", request_tensors)])))
    for tensor in request_tensors:
        out = got["OUT_" + tensor.name[3:]]
        assert out.shape == shape
        np.testing.assert_array_equal(out.data, tensor.data)


async def test_a_model_writing_into_its_inputs_changes_its_own_copy_only(backend: PythonBackend) -> None:
    # as on Triton, a model may write into its input arrays; the host's region and the caller's tensor never change
    model = await load(backend, MODELS / "execution_order")
    values = fp32(1, 2, 3)
    response = only(await model.instances[0].execute([order_request(values, {"write_input": True})]))
    np.testing.assert_array_equal(outputs(response)["OUTPUT0"].data, fp32(-1, -1, -1))
    np.testing.assert_array_equal(values, fp32(1, 2, 3))
    response = only(await model.instances[0].execute([order_request(values, {})]))
    np.testing.assert_array_equal(outputs(response)["OUTPUT0"].data, fp32(1, 2, 3))
