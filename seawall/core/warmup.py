"""Model warmup (`model_warmup`): the samples a model runs on each instance before it reports READY.

Imports `core.model_config`, `core.reshape`, `core.scheduler`, `core.types`, `core.validation`, `errors` and
`options`. `read_samples` checks every sample at load, before any model code runs: zero data, random data, or an
`input_data_file` confined to the model's `warmup/` directory, bounded by the server's request limits. `run`
then makes each sample's data and sends it through the model's scheduler, as Triton does: `batch_size` requests
of batch 1 in one execution, `count` times (0: once), on every instance; the first failure fails the load.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath

import numpy as np

from seawall.core import reshape
from seawall.core.backend import ModelConfig, ModelInstance
from seawall.core.model_config import ModelSpec, api_datatype
from seawall.core.scheduler import Scheduler
from seawall.core.types import ELEMENT_SIZES, NUMPY_DTYPES, InferRequest, Tensor
from seawall.core.validation import check_request
from seawall.errors import InvalidArgumentError, SeawallError
from seawall.options import Limits

WARMUP_DIRECTORY = "warmup"
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class WarmupInput:
    """One input of a sample, checked: its data is made (or read) only when the sample runs."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    count: int  # elements
    kind: str  # zero_data, random_data or input_data_file
    filename: str = ""
    max_bytes: int = 0  # BYTES read from the file: at most this many (the server's max_tensor_bytes)


@dataclass(frozen=True, slots=True)
class WarmupSample:
    """One `model_warmup` entry: each of `batch_size` requests carries `inputs`, `count` times per instance."""

    name: str
    batch_size: int
    count: int
    inputs: tuple[WarmupInput, ...]


def read_samples(config: ModelConfig, model_dir: str, limits: Limits) -> list[WarmupSample]:
    """Every warmup sample of `config`, checked before any model code runs (blocking file IO: call it off the
    event loop). A sample's data is made when it runs, one sample at a time, so the memory warmup takes is
    bounded by one sample: no more than one request may carry (`max_inputs`, `max_request_bytes`).

    Raises:
        InvalidArgumentError: a sample without data or with variable-size dims, larger than the request limits,
            an `input_data_file` outside the model's `warmup/` directory, missing, or too short.
    """
    samples: list[WarmupSample] = []
    for sample in config.model_warmup:
        inputs: list[WarmupInput] = []
        total = 0
        if len(sample.inputs) > limits.max_inputs:
            raise InvalidArgumentError(
                f"warmup sample '{sample.name}' has more than {limits.max_inputs} inputs (the server's limit)"
            )
        for name, setting in sample.inputs.items():
            datatype = _datatype(setting.data_type, name)
            dims = tuple(int(d) for d in setting.dims)
            if any(d < 0 for d in dims):
                raise InvalidArgumentError(
                    f"warmup setting expects all variable-size dimensions are specified for input '{name}'"
                )
            count = 1
            for dim in dims:
                count *= dim
            total += _check_limits(sample.name, name, datatype, count, limits)
            if total > limits.max_request_bytes:
                raise InvalidArgumentError(
                    f"warmup sample '{sample.name}' is larger than a request may be ({limits.max_request_bytes} bytes)"
                )
            kind = setting.WhichOneof("input_data_type")
            if kind is None:
                raise InvalidArgumentError(
                    f"[request id: <id_unknown>] warmup setting expects input '{name}' to have input_data_type set"
                )
            filename = setting.input_data_file if kind == "input_data_file" else ""
            if filename:
                path = _confined(model_dir, sample.name, name, filename)
                needed = count * ELEMENT_SIZES.get(datatype, 0)
                if os.path.getsize(path) < needed:
                    raise _too_short(needed, filename, os.path.getsize(path))
            inputs.append(WarmupInput(name, datatype, dims, count, kind, filename, limits.max_tensor_bytes))
        samples.append(WarmupSample(sample.name, sample.batch_size, max(1, sample.count), tuple(inputs)))
    return samples


async def run(
    samples: Sequence[WarmupSample],
    spec: ModelSpec,
    model_dir: str,
    instances: Sequence[ModelInstance],
    scheduler: Scheduler,
) -> None:
    """Run every sample on every instance through `scheduler`, before it starts serving.

    Raises:
        InvalidArgumentError: a sample does not fit the model's inputs (Triton's request messages), its batch
            size is larger than the model allows, or its file changed since it was checked.
        SeawallError: the model failed a sample: "failed to run warmup sample '<name>': <the model's error>".
    """
    for sample in samples:
        if sample.batch_size == 0:
            continue  # Triton sends no request for a sample of batch size 0
        if sample.batch_size > max(spec.max_batch_size, 1):
            raise InvalidArgumentError(
                f"failed to run warmup sample '{sample.name}': batch size {sample.batch_size} for "
                f"'{instances[0].name if instances else spec.name}', max allowed is {spec.max_batch_size}"
            )
        tensors = await asyncio.to_thread(_tensors, sample, spec.max_batch_size > 0, model_dir)
        request = InferRequest(spec.name, tensors)
        check_request(request, spec)
        if spec.reshaped:
            request = reshape.model_request(request, spec)
        for instance in instances:
            for _ in range(sample.count):
                try:
                    await scheduler.run_on(instance, [request] * sample.batch_size)
                except SeawallError as error:
                    raise type(error)(f"failed to run warmup sample '{sample.name}': {error.message}") from None


def _tensors(sample: WarmupSample, batching: bool, model_dir: str) -> list[Tensor]:
    """The sample's input tensors (batch 1 when the model batches), their data made or read now."""
    tensors: list[Tensor] = []
    for item in sample.inputs:
        if item.kind == "zero_data":
            data = _zeros(item.datatype, item.count)
        elif item.kind == "random_data":
            data = _random(item.datatype, item.count)
        else:
            data = _from_file(model_dir, sample.name, item)
        shape = (1, *item.dims) if batching else item.dims
        tensors.append(Tensor(item.name, item.datatype, shape, data.reshape(shape)))
    return tensors


def _datatype(data_type: int, name: str) -> str:
    datatype = api_datatype(data_type)
    if datatype not in NUMPY_DTYPES:
        raise InvalidArgumentError(f"warmup setting expects input '{name}' to have a valid data_type")
    return datatype


def _check_limits(sample: str, name: str, datatype: str, count: int, limits: Limits) -> int:
    """Refuse a sample input larger than any request may be, before allocating it; its least byte size."""
    size = count * ELEMENT_SIZES.get(datatype, _LENGTH.size)
    too_many = count > (limits.max_bytes_elements if datatype == "BYTES" else limits.max_tensor_elements)
    if too_many or size > limits.max_tensor_bytes:
        raise InvalidArgumentError(
            f"warmup sample '{sample}': input '{name}' is larger than the server's tensor limits "
            f"({count} elements, at most {limits.max_tensor_bytes} bytes)"
        )
    return size


def _zeros(datatype: str, count: int) -> np.ndarray:
    if datatype == "BYTES":
        return _strings([b""] * count)
    return np.zeros(count, dtype=NUMPY_DTYPES[datatype])


def _random(datatype: str, count: int) -> np.ndarray:
    """Random bytes as elements, as Triton sends them (BYTES: empty elements, as in Triton; BOOL: 0 or 1)."""
    if datatype == "BYTES":
        return _strings([b""] * count)
    generator = np.random.default_rng()
    if datatype == "BOOL":
        return generator.integers(0, 2, count, dtype=np.uint8).astype(np.bool_)
    raw = generator.bytes(count * ELEMENT_SIZES[datatype])
    return np.frombuffer(raw, dtype=NUMPY_DTYPES[datatype]).copy()


def _strings(items: list[bytes]) -> np.ndarray:
    array = np.empty(len(items), dtype=np.object_)
    array[:] = items
    return array


def _confined(model_dir: str, sample: str, name: str, filename: str) -> str:
    """The resolved path of `filename` in `<model_dir>/warmup/`.

    Raises:
        InvalidArgumentError: the path is absolute, has '..', resolves outside (symlinks followed), or is no file.
    """
    root = os.path.realpath(os.path.join(model_dir, WARMUP_DIRECTORY))
    what = f"warmup sample '{sample}': input_data_file '{filename[:256]}' of input '{name}'"
    if os.path.isabs(filename) or ".." in PurePath(filename).parts or "\x00" in filename:
        raise InvalidArgumentError(f"{what} must be a relative path inside the model's warmup directory")
    path = os.path.realpath(os.path.join(root, filename))
    if os.path.commonpath([root, path]) != root:
        raise InvalidArgumentError(f"{what} leaves the model's warmup directory")
    if not os.path.isfile(path):
        raise InvalidArgumentError(f"{what} is not a file in the model's warmup directory")
    return path


def _too_short(needed: int, filename: str, size: int) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"[request id: <id_unknown>] warmup setting expects {needed} bytes, but the data provided from "
        f"{filename} only has {size} bytes"
    )


def _from_file(model_dir: str, sample: str, item: WarmupInput) -> np.ndarray:
    """The first `item.count` elements in its file (raw little-endian values; BYTES: 4-byte little-endian length,
    then the bytes, per element). Longer files are read only that far; the path is checked again.

    Raises:
        InvalidArgumentError: the path leaves the warmup directory, or the file holds too little data.
    """
    path = _confined(model_dir, sample, item.name, item.filename)
    if item.datatype != "BYTES":
        needed = item.count * ELEMENT_SIZES[item.datatype]
        with open(path, "rb") as file:
            data = file.read(needed)
        if len(data) < needed:
            raise _too_short(needed, item.filename, len(data))
        dtype = NUMPY_DTYPES[item.datatype].newbyteorder("<")
        return np.frombuffer(data, dtype=dtype, count=item.count).copy()
    items: list[bytes] = []
    budget = item.max_bytes
    with open(path, "rb") as file:
        for _ in range(item.count):
            prefix = file.read(_LENGTH.size)
            if len(prefix) < _LENGTH.size:
                raise InvalidArgumentError(
                    f"failed to run warmup sample '{sample}': incomplete string length for inference input "
                    f"'{item.name}', expecting {_LENGTH.size} bytes but only {len(prefix)} bytes available"
                )
            (length,) = _LENGTH.unpack(prefix)
            budget -= length
            if budget < 0:
                raise InvalidArgumentError(
                    f"warmup sample '{sample}': input '{item.name}' is larger than the server's tensor limits "
                    f"(more than {item.max_bytes} bytes)"
                )
            value = file.read(length)  # at most what the file holds
            if len(value) < length:
                raise InvalidArgumentError(
                    f"failed to run warmup sample '{sample}': incomplete string data for inference input "
                    f"'{item.name}', expecting string of length {length} but only {len(value)} bytes available"
                )
            items.append(value)
    return _strings(items)
