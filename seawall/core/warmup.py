"""Model warmup (`model_warmup`): the samples a model runs on each instance before it reports READY.

Imports `core.model_config`, `core.reshape`, `core.scheduler`, `core.types`, `core.validation`, `errors` and
`options`. `read_samples` builds every sample's tensors at load, before any model code runs: zero data, random
data, or an `input_data_file` confined to the model's `warmup/` directory, each bounded by the server's tensor
limits. `run` then sends them through the model's scheduler, as Triton does: `batch_size` requests of batch 1
in one execution, `count` times (0: once), on every instance; the first failure fails the load.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath

import numpy as np

from seawall.core import reshape
from seawall.core.backend import ModelConfig, ModelInstance
from seawall.core.config_proto import model_config_pb2
from seawall.core.model_config import ModelSpec
from seawall.core.scheduler import Scheduler
from seawall.core.types import ELEMENT_SIZES, NUMPY_DTYPES, InferRequest, Tensor
from seawall.core.validation import check_request
from seawall.errors import InvalidArgumentError, SeawallError
from seawall.options import Limits

WARMUP_DIRECTORY = "warmup"
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class WarmupSample:
    """One `model_warmup` entry, its tensors built: each of `batch_size` requests carries `inputs`."""

    name: str
    batch_size: int
    count: int  # executions of the sample on each instance
    inputs: tuple[Tensor, ...]


def read_samples(config: ModelConfig, model_dir: str, limits: Limits) -> list[WarmupSample]:
    """Every warmup sample of `config`, with its data (blocking file IO: call it off the event loop).

    Raises:
        InvalidArgumentError: a sample without data or with variable-size dims, too large for the tensor limits,
            an `input_data_file` outside the model's `warmup/` directory, missing, or too short.
    """
    samples: list[WarmupSample] = []
    batching = config.max_batch_size > 0
    for sample in config.model_warmup:
        tensors: list[Tensor] = []
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
            _check_limits(sample.name, name, datatype, count, limits)
            kind = setting.WhichOneof("input_data_type")
            if kind == "zero_data":
                data = _zeros(datatype, count)
            elif kind == "random_data":
                data = _random(datatype, count)
            elif kind == "input_data_file":
                data = _from_file(model_dir, sample.name, name, setting.input_data_file, datatype, count, limits)
            else:
                raise InvalidArgumentError(
                    f"[request id: <id_unknown>] warmup setting expects input '{name}' to have input_data_type set"
                )
            shape = (1, *dims) if batching else dims
            tensors.append(Tensor(name, datatype, shape, data.reshape(shape)))
        samples.append(WarmupSample(sample.name, sample.batch_size, max(1, sample.count), tuple(tensors)))
    return samples


async def run(
    samples: Sequence[WarmupSample], spec: ModelSpec, instances: Sequence[ModelInstance], scheduler: Scheduler
) -> None:
    """Run every sample on every instance through `scheduler`, before it starts serving.

    Raises:
        InvalidArgumentError: a sample does not fit the model's inputs (Triton's request messages), or its batch
            size is larger than the model allows.
        SeawallError: the model failed a sample: "failed to run warmup sample '<name>': <the model's error>".
    """
    for instance in instances:
        for sample in samples:
            if sample.batch_size == 0:
                continue  # Triton sends no request for a sample of batch size 0
            if sample.batch_size > max(spec.max_batch_size, 1):
                raise InvalidArgumentError(
                    f"failed to run warmup sample '{sample.name}': batch size {sample.batch_size} for "
                    f"'{instance.name}', max allowed is {spec.max_batch_size}"
                )
            request = InferRequest(spec.name, list(sample.inputs))
            check_request(request, spec)
            if spec.reshaped:
                request = reshape.model_request(request, spec)
            for _ in range(sample.count):
                try:
                    await scheduler.run_on(instance, [request] * sample.batch_size)
                except SeawallError as error:
                    raise type(error)(f"failed to run warmup sample '{sample.name}': {error.message}") from None


def _datatype(data_type: int, name: str) -> str:
    type_name = str(model_config_pb2.DataType.Name(data_type))[len("TYPE_") :]
    datatype = "BYTES" if type_name == "STRING" else type_name
    if datatype not in NUMPY_DTYPES:
        raise InvalidArgumentError(f"warmup setting expects input '{name}' to have a valid data_type")
    return datatype


def _check_limits(sample: str, name: str, datatype: str, count: int, limits: Limits) -> None:
    """Refuse a sample input larger than any request may be, before allocating it."""
    size = count * ELEMENT_SIZES.get(datatype, _LENGTH.size)
    too_many = count > (limits.max_bytes_elements if datatype == "BYTES" else limits.max_tensor_elements)
    if too_many or size > limits.max_tensor_bytes:
        raise InvalidArgumentError(
            f"warmup sample '{sample}': input '{name}' is larger than the server's tensor limits "
            f"({count} elements, at most {limits.max_tensor_bytes} bytes)"
        )


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


def _from_file(
    model_dir: str, sample: str, name: str, filename: str, datatype: str, count: int, limits: Limits
) -> np.ndarray:
    """The first `count` elements in `<model_dir>/warmup/<filename>` (raw little-endian values; BYTES:
    4-byte little-endian length, then the bytes, per element). Longer files are read only that far.

    Raises:
        InvalidArgumentError: the path leaves the warmup directory (absolute, '..', a symlink out), the file is
            missing, or it holds too little data.
    """
    root = os.path.realpath(os.path.join(model_dir, WARMUP_DIRECTORY))
    what = f"warmup sample '{sample}': input_data_file '{filename[:256]}' of input '{name}'"
    parts = PurePath(filename).parts
    path = os.path.realpath(os.path.join(root, filename))
    if not filename or os.path.isabs(filename) or ".." in parts or "\x00" in filename:
        raise InvalidArgumentError(f"{what} must be a relative path inside the model's warmup directory")
    if os.path.commonpath([root, path]) != root:
        raise InvalidArgumentError(f"{what} leaves the model's warmup directory")
    if not os.path.isfile(path):
        raise InvalidArgumentError(f"{what} is not a file in the model's warmup directory")
    if datatype != "BYTES":
        needed = count * ELEMENT_SIZES[datatype]
        with open(path, "rb") as file:
            data = file.read(needed)
        if len(data) < needed:
            raise InvalidArgumentError(
                f"[request id: <id_unknown>] warmup setting expects {needed} bytes, but the data provided from "
                f"{filename} only has "
                f"{len(data)} bytes"
            )
        return np.frombuffer(data, dtype=NUMPY_DTYPES[datatype].newbyteorder("<"), count=count).copy()
    with open(path, "rb") as file:
        data = file.read(limits.max_tensor_bytes)
    items: list[bytes] = []
    position = 0
    for _ in range(count):
        if len(data) - position < _LENGTH.size:
            raise InvalidArgumentError(
                f"failed to run warmup sample '{sample}': incomplete string length for inference input '{name}', "
                f"expecting {_LENGTH.size} bytes but only {len(data) - position} bytes available"
            )
        (length,) = _LENGTH.unpack_from(data, position)
        position += _LENGTH.size
        if length > len(data) - position:
            raise InvalidArgumentError(
                f"failed to run warmup sample '{sample}': incomplete string data for inference input '{name}', "
                f"expecting string of length {length} but only {len(data) - position} bytes available"
            )
        items.append(data[position : position + length])
        position += length
    return _strings(items)
