"""In-process ONNX Runtime and TorchScript instances (`SEAWALL_IN_PROCESS`) run on a thread of their own and queue
batches as a stub does: several without a dynamic batcher (the thread takes the next without waiting for the
event loop), one ahead with it (the scheduler still forms full batches); their answers keep their order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from seawall.backends.onnxruntime.backend import OnnxBackend
from seawall.core.backend import BATCHING_PIPELINE_DEPTH, PIPELINE_DEPTH
from seawall.core.types import InferRequest, InferResponse, Tensor
from tests import onnx_models as m
from tests.backends.test_python_backend import Reports, context_for

IN_PROCESS = 'parameters { key: "SEAWALL_IN_PROCESS" value: { string_value: "true" } }'


@pytest.mark.parametrize(
    ("extra", "depth"),
    [(IN_PROCESS, PIPELINE_DEPTH), (IN_PROCESS + "\ndynamic_batching { }", BATCHING_PIPELINE_DEPTH)],
)
async def test_an_in_process_instance_queues_batches_and_answers_them_in_order(
    tmp_path: Path, extra: str, depth: int
) -> None:
    assert (PIPELINE_DEPTH, BATCHING_PIPELINE_DEPTH) == (8, 2)
    m.write(tmp_path, "matmul", m.matmul(), m.MATMUL_CONFIG.format(name="matmul", extra=extra))
    model = await OnnxBackend().load(context_for(tmp_path / "matmul", Reports()))
    try:
        (instance,) = model.instances
        assert instance.pipeline_depth == depth
        inputs = [np.full((1, 4), index, dtype=np.float32) for index in range(3 * depth)]
        requests = [InferRequest("matmul", [Tensor.from_numpy("X", x)]) for x in inputs]
        executions = await asyncio.gather(*(instance.execute([request]) for request in requests))
        for x, execution in zip(inputs, executions, strict=True):
            (response,) = execution
            assert isinstance(response, InferResponse), response
            np.testing.assert_allclose(response.outputs[0].data, x @ m.WEIGHTS, rtol=1e-6)
        starts = [execution.compute_ns[0] for execution in executions if execution.compute_ns]
        assert len(starts) == len(inputs) and starts == sorted(starts)  # run in the order they came
    finally:
        await model.unload()
