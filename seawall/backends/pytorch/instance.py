"""Running a TorchScript model: `TorchRunner` turns one batch of requests into `forward()` calls of one module (in a
worker process, see `worker.py`, or in the server, where `loaded.ThreadInstance` runs one on a thread of its own: the
SEAWALL_IN_PROCESS opt-in).

Imports numpy, `core.backend`, `core.types`, this package's `runtime` and `naming`, and `errors`. As the onnxruntime
runner: gathering the batch (one array per input), `forward()` (torch releases the GIL) and splitting the outputs
per request happen off the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seawall.backends.loaded import run_grouped
from seawall.backends.pytorch import naming, runtime
from seawall.backends.pytorch.naming import Binding, TorchSettings
from seawall.core.backend import Execution, ModelConfig
from seawall.core.config_proto import model_config_pb2
from seawall.core.model_config import api_datatype
from seawall.core.types import InferRequest, InferResponse, Tensor, datatype_of
from seawall.errors import InternalError, InvalidArgumentError, SeawallError


@dataclass(frozen=True, slots=True)
class TorchPlan:
    model_name: str
    model_version: str
    batching: bool
    binding: Binding
    output_types: tuple[str, ...]  # API datatypes of the config outputs, in config order
    settings: TorchSettings
    string_inputs: frozenset[str] = frozenset()  # the TYPE_STRING inputs: forward() takes each as a List[str]


class TorchRunner:
    """One ScriptModule and its plan: one forward() per group of requests whose shapes agree."""

    def __init__(self, script: Any, plan: TorchPlan) -> None:
        self._script: Any = script
        self._plan = plan

    def execute(self, requests: Sequence[InferRequest]) -> Execution:
        """The responses to `requests` (an error for each request that failed), and when the runs began and ended."""
        results: list[InferResponse | SeawallError | None] = [None] * len(requests)
        keys = [
            tuple(sorted((t.name, t.shape[1:], t.datatype) for t in request.inputs)) if self._plan.batching else (i,)
            for i, request in enumerate(requests)
        ]
        return run_grouped(results, keys, lambda members: self._run([requests[i] for i in members]))

    def _run(self, requests: list[InferRequest]) -> list[InferResponse]:
        plan = self._plan
        by_name = [{t.name: t.data for t in request.inputs} for request in requests]
        ordered = sorted(plan.binding.inputs, key=lambda pair: pair[1])
        arrays: list[np.ndarray | list[str]] = []
        for name, _ in ordered:
            parts = [inputs[name] for inputs in by_name if name in inputs]
            if len(parts) != len(requests):
                raise InvalidArgumentError(f"input '{name}' is required by model '{plan.model_name}'")
            array = parts[0] if len(parts) == 1 else np.concatenate(parts)
            arrays.append(_strings(array, name, plan.model_name) if name in plan.string_inputs else array)
        names = [name for name, _ in ordered] if plan.binding.dict_input else None
        datatypes = {t.name: t.datatype for t in requests[0].inputs}
        bf16 = [datatypes.get(name) == "BF16" for name, _ in ordered]
        outputs = runtime.run(self._script, plan.settings, arrays, names, bf16)
        sizes = [int(by_name[i][ordered[0][0]].shape[0]) for i in range(len(requests))] if plan.batching else []
        per_request: list[list[Tensor]] = [[] for _ in requests]
        for (name, index), datatype in zip(plan.binding.outputs, plan.output_types, strict=True):
            if not 0 <= index < len(outputs):
                raise InvalidArgumentError(
                    f"The output {name} in the model configuration refers to an output index which doesn't exist. "
                    f"This model has {len(outputs)} outputs"
                )
            array, is_bf16 = outputs[index]
            produced = "BF16" if is_bf16 else datatype_of(array)
            if produced != datatype:
                raise InvalidArgumentError(
                    f"configuration expects datatype TYPE_{datatype} for output '{name}', model provides "
                    f"TYPE_{produced}"
                )
            if plan.batching:
                if array.ndim == 0 or array.shape[0] != sum(sizes):
                    raise InternalError(
                        f"output '{name}' of model '{plan.model_name}' has shape {list(array.shape)}, which does not "
                        f"start with the batch size {sum(sizes)}"
                    )
                parts = np.split(array, np.cumsum(sizes)[:-1]) if len(requests) > 1 else [array]
            else:
                parts = [array]
            for target, part in zip(per_request, parts, strict=True):
                target.append(Tensor(name, datatype, tuple(int(d) for d in part.shape), part))
        return [
            InferResponse(request.model_name, plan.model_version, tensors, request.id)
            for request, tensors in zip(requests, per_request, strict=True)
        ]


def plan_runs(
    config: ModelConfig, model_name: str, model_version: str, script: Any, settings: TorchSettings
) -> TorchPlan:
    """Bind `config` to the module's `forward()` (Triton's naming conventions) and plan its runs.

    Raises:
        InvalidArgumentError / InternalError: the config does not fit `forward()` (Triton's messages).
    """
    binding = naming.bind(config, runtime.arguments(script))
    output_types = tuple(api_datatype(t.data_type) for t in config.output)
    strings = frozenset(t.name for t in config.input if t.data_type == model_config_pb2.TYPE_STRING)
    return TorchPlan(model_name, model_version, config.max_batch_size > 0, binding, output_types, settings, strings)


def _strings(array: np.ndarray, name: str, model_name: str) -> list[str]:
    """A BYTES tensor's elements as the List[str] forward() takes (flattened, as Triton's pytorch backend does).

    Raises:
        InvalidArgumentError: an element is not UTF-8 text (a TorchScript str is).
    """
    texts = []
    for index, item in enumerate(array.reshape(-1)):
        try:
            texts.append(item.decode("utf-8") if isinstance(item, bytes) else str(item))
        except UnicodeDecodeError:
            raise InvalidArgumentError(
                f"element {index} of input '{name}' of model '{model_name}' is not UTF-8 text, which a List[str] "
                "argument of forward() needs"
            ) from None
    return texts
