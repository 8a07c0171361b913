"""Running an ONNX model: `OnnxRunner` turns one batch of requests into `run()` calls of one InferenceSession
(in a worker process, see `worker.py`, or in the server, where `loaded.ThreadInstance` runs one on a thread of its
own: the SEAWALL_IN_PROCESS opt-in).

Imports numpy, `core.backend`, `core.types`, this package's `runtime` and `errors`. Gathering the batch's inputs
into one array per input, the `run()` (which releases the GIL) and splitting the outputs per request all happen off
the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seawall.backends.loaded import run_grouped
from seawall.backends.onnxruntime import runtime, signature
from seawall.backends.onnxruntime.runtime import translated
from seawall.backends.onnxruntime.session_options import SessionSettings
from seawall.backends.onnxruntime.signature import Signature
from seawall.core.backend import Execution, ModelConfig
from seawall.core.model_config import api_datatype
from seawall.core.types import InferRequest, InferResponse, Tensor
from seawall.errors import InternalError, InvalidArgumentError, SeawallError


@dataclass(frozen=True, slots=True)
class OutputPlan:
    name: str
    datatype: str  # API name (BYTES for strings)
    scalar_dims: tuple[int, ...] | None  # the model's output is a scalar: the config's dims to give it


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What every run of one model version needs, computed once at load."""

    model_name: str
    model_version: str
    batching: bool  # max_batch_size > 0: the first dimension of every tensor is the batch
    outputs: tuple[OutputPlan, ...]
    run_options: Any  # onnxruntime.RunOptions or None


class OnnxRunner:
    """One session and what its runs need: one `run()` per group of requests whose shapes agree."""

    def __init__(self, session: Any, plan: RunPlan) -> None:
        self._session: Any = session
        self._plan = plan
        self._output_names = [output.name for output in plan.outputs]

    def execute(self, requests: Sequence[InferRequest]) -> Execution:
        """The responses to `requests` (an error for each request that failed), and when the runs began and ended."""
        results: list[InferResponse | SeawallError | None] = [None] * len(requests)
        feeds: list[dict[str, np.ndarray] | None] = []
        for index, request in enumerate(requests):
            try:
                feeds.append(self._feed(request))
            except SeawallError as error:
                results[index] = error
                feeds.append(None)
        keys: list[tuple[object, ...] | None] = []
        for index, feed in enumerate(feeds):
            key: tuple[object, ...] | None = None if feed is None else (index,)
            if feed and self._plan.batching:
                key = tuple(sorted((name, array.shape[1:], array.dtype.str) for name, array in feed.items()))
            keys.append(key)
        return run_grouped(
            results, keys, lambda members: self._run([feeds[i] for i in members], [requests[i] for i in members])
        )

    def _feed(self, request: InferRequest) -> dict[str, np.ndarray]:
        feed: dict[str, np.ndarray] = {}
        for tensor in request.inputs:
            data = tensor.data
            if tensor.datatype == "BYTES":
                try:
                    text = [item.decode("utf-8") for item in data.reshape(-1)]
                except (UnicodeDecodeError, AttributeError):
                    raise InvalidArgumentError(
                        f"input '{tensor.name}' of model '{self._plan.model_name}' has an element that is not valid "
                        "UTF-8 (onnxruntime string tensors hold text)"
                    ) from None
                array = np.empty(len(text), dtype=object)
                array[:] = text
                data = array.reshape(tensor.shape)
            elif tensor.datatype == "BF16":
                raise InvalidArgumentError(f"input '{tensor.name}': BF16 is not supported by the onnxruntime backend")
            feed[tensor.name] = data
        return feed

    def _run(self, feeds: list[dict[str, np.ndarray] | None], requests: list[InferRequest]) -> list[InferResponse]:
        sizes = [_batch_size(feed or {}) for feed in feeds] if self._plan.batching else [0] * len(feeds)
        if len(feeds) == 1:
            merged = feeds[0] or {}
        else:
            merged = {name: np.concatenate([(feed or {})[name] for feed in feeds]) for name in feeds[0] or {}}
        with translated(""):
            arrays = self._session.run(self._output_names, merged, self._plan.run_options)
        total = sum(sizes)
        per_request: list[list[Tensor]] = [[] for _ in feeds]
        for output, array in zip(self._plan.outputs, arrays, strict=True):
            if self._plan.batching:
                if array.ndim == 0 or array.shape[0] != total:
                    raise InternalError(
                        f"output '{output.name}' of model '{self._plan.model_name}' has shape {list(array.shape)}, "
                        f"which does not start with the batch size {total}"
                    )
                parts = np.split(array, np.cumsum(sizes)[:-1]) if len(feeds) > 1 else [array]
            else:
                parts = [array]
            for target, part in zip(per_request, parts, strict=True):
                target.append(_tensor(output, part))
        return [
            InferResponse(request.model_name, self._plan.model_version, tensors, request.id)
            for request, tensors in zip(requests, per_request, strict=True)
        ]


def _batch_size(feed: dict[str, np.ndarray]) -> int:
    for array in feed.values():
        return int(array.shape[0]) if array.ndim else 1
    return 1


def _tensor(output: OutputPlan, array: np.ndarray) -> Tensor:
    if output.scalar_dims is not None and array.ndim == 0:
        array = array.reshape(output.scalar_dims)
    if output.datatype == "BYTES":
        encoded = np.empty(array.size, dtype=object)
        encoded[:] = [item.encode("utf-8") if isinstance(item, str) else bytes(item) for item in array.reshape(-1)]
        array = encoded.reshape(array.shape)
    return Tensor(output.name, output.datatype, tuple(int(d) for d in array.shape), array)


def plan_runs(config: ModelConfig, model_version: str, model: Signature, settings: SessionSettings) -> RunPlan:
    """Check `config` against the model's signature (BF16 refused, then Triton's checks) and plan its runs.

    Raises:
        InvalidArgumentError: a BF16 tensor, or a config that disagrees with the model (Triton's messages).
    """
    runtime.refuse_bf16(model, config.name)
    signature.check(config, model)
    scalars = {info.name for info in model.outputs if not info.dims}
    outputs = []
    for tensor in config.output:
        dims = tuple(tensor.reshape.shape if tensor.HasField("reshape") else tensor.dims)
        outputs.append(
            OutputPlan(
                tensor.name,
                api_datatype(tensor.data_type),
                dims if tensor.name in scalars and config.max_batch_size == 0 else None,
            )
        )
    batching = config.max_batch_size > 0
    return RunPlan(config.name, model_version, batching, tuple(outputs), runtime.run_options(settings))
