"""The model class a worker process of the onnxruntime or pytorch backend serves: Triton's TritonPythonModel
contract (initialize, execute, finalize) over one of Seawall's runners instead of a repository's model.py.

Runs only inside a stub process (`backends/python/stub.py` imports a backend's `worker` module by a fixed name,
never one a config chose); imports numpy, `core.backend` (Execution), `core.types` and `errors`. Requests arrive
as pb_utils requests over the stub's shared regions and leave as pb_utils responses; an error of one request is
that response's error with its code, so a client reads the same message and status as from the in-process runner.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from seawall.core.backend import Execution
from seawall.core.types import InferRequest, InferResponse, Tensor
from seawall.errors import SeawallError


class Runner(Protocol):
    def execute(self, requests: Sequence[InferRequest]) -> Execution: ...


#: (the worker's model bytes, the plan the host computed at load as JSON) → the runner serving them
RunnerFactory = Callable[[memoryview, dict[str, Any]], Runner]


def worker_model_class(pb: Any, model: Any, factory: RunnerFactory) -> type:
    """The TritonPythonModel class serving `model` (the mapped model bytes) with the runner `factory` builds."""

    class WorkerModel:
        def initialize(self, args: dict[str, str]) -> None:
            self._name = args["model_name"]
            self._version = args["model_version"]
            with memoryview(model) as data:
                self._runner: Runner | None = factory(data, json.loads(args["seawall_plan"]))
            model.close()  # the runtime holds its own copy now

        def execute(self, requests: list[Any]) -> list[Any]:
            assert self._runner is not None
            batch = [
                InferRequest(self._name, [_tensor(pb, tensor) for tensor in request.inputs()], self._version)
                for request in requests
            ]
            execution = self._runner.execute(batch)
            return [_response(pb, result) for result in execution]

        def finalize(self) -> None:
            self._runner = None

    return WorkerModel


def _tensor(pb: Any, tensor: Any) -> Tensor:
    datatype, array = pb._raw(tensor)
    return Tensor(tensor.name(), datatype, tuple(array.shape), array)


def _response(pb: Any, result: InferResponse | SeawallError) -> Any:
    if isinstance(result, SeawallError):
        code = getattr(pb.TritonError, result.code.name, pb.TritonError.INTERNAL)
        return pb.InferenceResponse(error=pb.TritonError(result.message, code))
    return pb.InferenceResponse(
        output_tensors=[pb.Tensor(tensor.name, tensor.data, tensor.datatype) for tensor in result.outputs]
    )
