"""What happens to tensors around the scheduler: inputs read from and outputs written to client shared
memory, and the classification extension's top-k labels.

Imports `core.raw`, `core.shm`, `core.types`, `errors`, `options`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from seawall.core import offload, raw
from seawall.core.shm import SharedMemoryManager
from seawall.core.types import InferRequest, ParamValue, RequestedOutput, Tensor
from seawall.errors import InvalidArgumentError
from seawall.options import Limits

SHM_REGION = "shared_memory_region"
SHM_OFFSET = "shared_memory_offset"
SHM_BYTE_SIZE = "shared_memory_byte_size"
#: Shared-memory transfers at least this large run in a worker thread (64 MiB take 20-40 ms on a loaded
#: 2-core machine); smaller ones (1 MiB: 0.05-0.1 ms) cost less than the thread hand-off (0.1-0.2 ms).
THREAD_TRANSFER_BYTES = 2 << 20


def _uint(parameters: Mapping[str, ParamValue], key: str, what: str) -> int:
    value = parameters.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(f"'{key}' of {what} must be a non-negative integer")
    return value


async def _transfer(size: int, work: Callable[[], None]) -> None:
    """Run a shared-memory read or write: inline when small, else in a worker thread that is always waited
    for, even when the request is cancelled, since it uses the region's descriptor, which `use` closes
    once the region is unregistered and its block ends (a recycled descriptor would be another file)."""
    if size < THREAD_TRANSFER_BYTES:
        work()
        return
    future = asyncio.get_running_loop().run_in_executor(None, work)
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        future.exception()  # retrieved: the request is gone, and its error with it
        raise


async def read_shm_inputs(request: InferRequest, shm: SharedMemoryManager, limits: Limits) -> None:
    """Replace the data of every input that names a shared memory region with a copy of its bytes.

    The size is checked against the shape and the limits before anything is allocated; the bytes are
    copied into a buffer the server owns, so the client may rewrite, shrink or unregister the region.

    Raises:
        UnsupportedError: client shared memory is disabled.
        NotFoundError: unknown region.
        InvalidArgumentError: offset or size outside the region, a size that does not fit the shape, or a
            region whose object was truncated since registration.
    """
    for tensor in request.inputs:
        region = tensor.parameters.get(SHM_REGION)
        if region is None:
            continue
        what = f"input '{tensor.name}'"
        offset = _uint(tensor.parameters, SHM_OFFSET, what)
        size = _uint(tensor.parameters, SHM_BYTE_SIZE, what)
        _, count = raw.checked_shape(tensor.shape, tensor.datatype, tensor.name, request.model_name, limits)
        with shm.use(str(region), offset, size) as window:
            if tensor.datatype != "BYTES":
                raw.check_byte_size(tensor.datatype, count, size, tensor.name, request.model_name)
            elif size > limits.max_tensor_bytes:
                raise InvalidArgumentError(
                    f"input '{tensor.name}' for model '{request.model_name}' is larger than "
                    f"{limits.max_tensor_bytes} bytes (--max-tensor-bytes)"
                )
            buffer = np.empty(size, dtype=np.uint8).data  # the server's own copy, aligned for numpy
            await _transfer(size, functools.partial(window.read_into, buffer))
        heavy = tensor.datatype == "BYTES" and count > offload.HEAVY_BYTES_ELEMENTS
        tensor.data = await offload.run(
            heavy, raw.decode, buffer, tensor.datatype, tensor.shape, count, tensor.name, request.model_name
        )


async def write_shm_outputs(
    outputs: Sequence[RequestedOutput], tensors: list[Tensor], shm: SharedMemoryManager
) -> list[Tensor]:
    """`tensors` with each one that asked for a region written into it and replaced by a tensor that keeps only a
    marker parameter (the given tensors are not modified).

    Raises:
        NotFoundError: unknown region.
        InvalidArgumentError: the region range is too small for the result, or outside the region, or the
            region's object was truncated since registration.
    """
    written: dict[str, Tensor] = {}
    by_name = {t.name: t for t in tensors}
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
        view = memoryview(data).cast("B")
        with shm.use(str(region), offset, len(view)) as window:
            await _transfer(len(view), functools.partial(window.write, view))
        written[tensor.name] = Tensor(tensor.name, tensor.datatype, tensor.shape, tensor.data, {SHM_REGION: region})
    if not written:
        return tensors
    return [written.get(t.name, t) for t in tensors]


def classify_outputs(
    outputs: Sequence[RequestedOutput], tensors: list[Tensor], labels: Mapping[str, Sequence[str]], batching: bool
) -> list[Tensor]:
    """`tensors` with each output that has a `classification` count turned into its top-k "value:index[:label]"
    BYTES tensor (a new list when any is; the given tensors are not modified).

    Raises:
        InvalidArgumentError: the count is not a positive integer, or the output is not numeric.
    """
    for requested in outputs:
        k = requested.parameters.get("classification")
        if k is None or k == 0:
            continue
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise InvalidArgumentError("invalid value for 'classification' parameter, expected >= 0")
        tensors = [
            _classify(t, k, labels.get(t.name, ()), batching) if t.name == requested.name else t for t in tensors
        ]
    return tensors


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
