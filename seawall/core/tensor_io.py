"""What happens to tensors around the scheduler: inputs read from and outputs written to client shared
memory, and the classification extension's top-k labels.

Imports `core.raw`, `core.shm`, `core.types`, `errors`, `options`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from seawall.core import raw
from seawall.core.shm import SharedMemoryManager
from seawall.core.types import InferRequest, InferResponse, ParamValue, RequestedOutput, Tensor
from seawall.errors import InvalidArgumentError
from seawall.options import Limits

SHM_REGION = "shared_memory_region"
SHM_OFFSET = "shared_memory_offset"
SHM_BYTE_SIZE = "shared_memory_byte_size"


def _uint(parameters: Mapping[str, ParamValue], key: str, what: str) -> int:
    value = parameters.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(f"'{key}' of {what} must be a non-negative integer")
    return value


def read_shm_inputs(request: InferRequest, shm: SharedMemoryManager, limits: Limits) -> None:
    """Replace the data of every input that names a shared memory region with a copy of its bytes.

    Raises:
        UnsupportedError: client shared memory is disabled.
        NotFoundError: unknown region.
        InvalidArgumentError: offset or size outside the region, or a size that does not fit the shape.
    """
    for tensor in request.inputs:
        region = tensor.parameters.get(SHM_REGION)
        if region is None:
            continue
        what = f"input '{tensor.name}'"
        offset = _uint(tensor.parameters, SHM_OFFSET, what)
        size = _uint(tensor.parameters, SHM_BYTE_SIZE, what)
        _, count = raw.checked_shape(tensor.shape, tensor.datatype, tensor.name, request.model_name, limits)
        with shm.use(str(region), offset, size) as view:
            data = raw.decode(view, tensor.datatype, tensor.shape, count, tensor.name, request.model_name)
            # copy out: the region may be unregistered, or rewritten by the client, once this returns
            tensor.data = data if tensor.datatype == "BYTES" else data.copy()


def write_shm_outputs(outputs: Sequence[RequestedOutput], response: InferResponse, shm: SharedMemoryManager) -> None:
    """Write each output that asked for a region into it; its tensor keeps only a marker parameter.

    Raises:
        NotFoundError: unknown region.
        InvalidArgumentError: the region range is too small for the result, or outside the region.
    """
    by_name = {t.name: t for t in response.outputs}
    for requested in outputs:
        region = requested.parameters.get(SHM_REGION)
        tensor = by_name.get(requested.name)
        if region is None or tensor is None:
            continue
        what = f"output '{requested.name}'"
        offset = _uint(requested.parameters, SHM_OFFSET, what)
        size = _uint(requested.parameters, SHM_BYTE_SIZE, what)
        data = raw.encode(tensor)
        if len(data) > size:
            raise InvalidArgumentError(
                f"shared memory size specified with the request for output '{tensor.name}' ({size} bytes) "
                f"should be at least {len(data)} bytes to hold the results"
            )
        with shm.use(str(region), offset, len(data)) as view:
            view[:] = data
        tensor.parameters = {SHM_REGION: region}


def classify_outputs(
    outputs: Sequence[RequestedOutput], response: InferResponse, labels: Mapping[str, Sequence[str]], batching: bool
) -> None:
    """Turn each output with a `classification` count into its top-k "value:index[:label]" BYTES tensor.

    Raises:
        InvalidArgumentError: the count is not a positive integer, or the output is not numeric.
    """
    for requested in outputs:
        k = requested.parameters.get("classification")
        if k is None or k == 0:
            continue
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise InvalidArgumentError("invalid value for 'classification' parameter, expected >= 0")
        for index, tensor in enumerate(response.outputs):
            if tensor.name == requested.name:
                response.outputs[index] = _classify(tensor, k, labels.get(tensor.name, ()), batching)


def _classify(tensor: Tensor, k: int, labels: Sequence[str], batching: bool) -> Tensor:
    if tensor.datatype in ("BYTES", "BOOL"):
        raise InvalidArgumentError(f"classification is not supported for {tensor.datatype} output '{tensor.name}'")
    rows = tensor.data.reshape(tensor.shape[0] if batching and tensor.shape else 1, -1)
    k = min(k, rows.shape[1])
    result = np.empty((rows.shape[0], k), dtype=np.object_)
    for r, row in enumerate(rows):
        order = np.argsort(-row.astype(np.float64), kind="stable")[:k]
        for c, i in enumerate(order):
            text = f"{float(row[i]):f}:{int(i)}"
            if int(i) < len(labels):
                text += f":{labels[int(i)]}"
            result[r, c] = text.encode()
    shape = (rows.shape[0], k) if batching and tensor.shape else (k,)
    return Tensor(tensor.name, "BYTES", shape, result.reshape(shape))
