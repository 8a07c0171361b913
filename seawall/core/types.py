"""Transport-free values of the core: tensors, inference requests and responses, metadata, model states.

Imports only numpy and `errors`. Tensors hold numpy arrays; BYTES tensors hold object arrays of `bytes`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from seawall.errors import InvalidArgumentError, SeawallError

ParamValue = bool | int | float | str

#: API datatype → numpy dtype. BF16 has no numpy type: its elements travel as raw uint16 bit patterns.
NUMPY_DTYPES: Mapping[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BF16": np.dtype(np.uint16),
    "BYTES": np.dtype(np.object_),
}

#: Bytes per element of fixed-size datatypes (BYTES is variable and absent).
ELEMENT_SIZES: Mapping[str, int] = {k: v.itemsize for k, v in NUMPY_DTYPES.items() if k != "BYTES"}


def datatype_of(array: np.ndarray) -> str:
    """The API datatype of a numpy array (object, bytes and str arrays are BYTES).

    Raises:
        InvalidArgumentError: the dtype has no Triton datatype.
    """
    kind = array.dtype.kind
    if kind in ("O", "S", "U"):
        return "BYTES"
    for name, dtype in NUMPY_DTYPES.items():
        if name != "BF16" and dtype == array.dtype:
            return name
    raise InvalidArgumentError(f"unsupported numpy dtype '{array.dtype}'")


def element_count(shape: Sequence[int]) -> int:
    """Product of `shape` (1 for a scalar shape)."""
    count = 1
    for dim in shape:
        count *= dim
    return count


@dataclass(slots=True)
class Tensor:
    """A named tensor. `data` has `shape`; for BYTES it is an object array of `bytes`."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: dict[str, ParamValue] = field(default_factory=dict)

    def __init__(
        self,
        name: str,
        datatype: str,
        shape: tuple[int, ...],
        data: np.ndarray,
        parameters: dict[str, ParamValue] | None = None,
    ) -> None:  # written out (as in the classes below): compiled, where the dataclass's own is interpreted code
        self.name = name
        self.datatype = datatype
        self.shape = shape
        self.data = data
        self.parameters = {} if parameters is None else parameters

    @classmethod
    def from_numpy(cls, name: str, array: np.ndarray) -> Tensor:
        """Wrap an array, deriving the datatype (str elements of a BYTES array become UTF-8 bytes).

        Raises:
            InvalidArgumentError: the dtype has no Triton datatype.
        """
        datatype = datatype_of(array)
        if datatype == "BYTES" and array.dtype.kind != "O":
            array = np.array([_to_bytes(x) for x in array.reshape(-1)], dtype=object).reshape(array.shape)
        return cls(name, datatype, tuple(int(d) for d in array.shape), array)


def _to_bytes(item: object) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode()
    return str(item).encode()


@dataclass(slots=True)
class RequestedOutput:
    """An output the client asked for, with its per-output parameters (binary_data, classification, ...)."""

    name: str
    parameters: dict[str, ParamValue] = field(default_factory=dict)

    def __init__(self, name: str, parameters: dict[str, ParamValue] | None = None) -> None:
        self.name = name
        self.parameters = {} if parameters is None else parameters


@dataclass(slots=True)
class InferRequest:
    """One inference request. `model_version` "" means the latest served version."""

    model_name: str
    inputs: list[Tensor]
    model_version: str = ""
    id: str = ""
    outputs: list[RequestedOutput] = field(default_factory=list)  # empty: every output
    parameters: dict[str, ParamValue] = field(default_factory=dict)
    # BLS: "<model>/<version>" of every execution this request was called from (empty: a client's request)
    callers: tuple[str, ...] = ()

    def __init__(
        self,
        model_name: str,
        inputs: list[Tensor],
        model_version: str = "",
        id: str = "",  # noqa: A002  # the protocol's name
        outputs: list[RequestedOutput] | None = None,
        parameters: dict[str, ParamValue] | None = None,
        callers: tuple[str, ...] = (),
    ) -> None:
        self.model_name = model_name
        self.inputs = inputs
        self.model_version = model_version
        self.id = id
        self.outputs = [] if outputs is None else outputs
        self.parameters = {} if parameters is None else parameters
        self.callers = callers


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    outputs: list[Tensor]
    id: str = ""
    parameters: dict[str, ParamValue] = field(default_factory=dict)

    def __init__(
        self,
        model_name: str,
        model_version: str,
        outputs: list[Tensor],
        id: str = "",  # noqa: A002  # the protocol's name
        parameters: dict[str, ParamValue] | None = None,
    ) -> None:
        self.model_name = model_name
        self.model_version = model_version
        self.outputs = outputs
        self.id = id
        self.parameters = {} if parameters is None else parameters


class StreamResponse(NamedTuple):
    """One message of a request's response stream (`ServedModel.stream`).

    `response`: a response of the model; `error`: the model's error for this message (the stream goes on
    unless `final`); neither: an empty final message (a decoupled model said it sends nothing more).
    `final`: the request's last message. A model that is not decoupled answers one message, `final` set.
    """

    response: InferResponse | None
    error: SeawallError | None
    final: bool


@dataclass(frozen=True, slots=True)
class RawInputSpec:
    """What a raw binary request (the whole body is one input) needs to know about a model's first input."""

    name: str
    datatype: str
    dims: tuple[int, ...]  # config dims, without the batch dimension
    max_batch_size: int
    input_count: int


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]


class ModelState(enum.Enum):
    UNKNOWN = "UNKNOWN"
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class ModelIndexEntry:
    """A row of the repository index; `version`/`state` are empty for a model never loaded."""

    name: str
    version: str = ""
    state: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Duration:
    """A cumulative count and total of nanoseconds (Triton's StatisticDuration)."""

    count: int = 0
    ns: int = 0


@dataclass(frozen=True, slots=True)
class BatchStatistics:
    """Executions of one batch size: counts and nanoseconds of each compute phase."""

    batch_size: int
    compute_input: Duration = Duration()
    compute_infer: Duration = Duration()
    compute_output: Duration = Duration()


#: The Duration fields of ModelStatistics, in the order of Triton's `inference_stats`.
DURATION_STATISTICS = (
    "success",
    "fail",
    "queue",
    "compute_input",
    "compute_infer",
    "compute_output",
    "cache_hit",
    "cache_miss",
)


@dataclass(frozen=True, slots=True)
class ModelStatistics:
    """Statistics of one model version since it was loaded (the statistics extension's fields)."""

    name: str
    version: str
    last_inference: int = 0  # milliseconds since the epoch, 0 = never
    inference_count: int = 0  # batch elements executed
    execution_count: int = 0  # model executions
    success: Duration = Duration()
    fail: Duration = Duration()
    queue: Duration = Duration()
    compute_input: Duration = Duration()
    compute_infer: Duration = Duration()
    compute_output: Duration = Duration()
    cache_hit: Duration = Duration()
    cache_miss: Duration = Duration()
    failures_by_reason: tuple[tuple[str, int], ...] = ()  # (REJECTED|CANCELED|BACKEND|OTHER, count)
    pending_request_count: int = 0
    batch_stats: tuple[BatchStatistics, ...] = ()  # by batch size, ascending
    response_cache: bool = False  # the version's responses go through the server's response cache


@dataclass(frozen=True, slots=True)
class SharedMemoryRegionStatus:
    """A registered system shared memory region, as the status call reports it."""

    name: str
    key: str
    offset: int
    byte_size: int
