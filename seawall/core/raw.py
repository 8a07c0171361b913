"""Triton's raw tensor byte format, shared by HTTP binary data, gRPC raw contents, shared memory and the
Python backend: little-endian, row-major, no padding; BYTES elements as (uint32 LE length, bytes) pairs.

Imports numpy, `core.types`, `errors`. Sizes are checked with exact integer arithmetic before anything
is allocated.
"""

from __future__ import annotations

import struct
from typing import ClassVar, NoReturn

import numpy as np

from seawall.core.types import ELEMENT_SIZES, NUMPY_DTYPES, Tensor
from seawall.errors import InvalidArgumentError
from seawall.options import Limits

_LENGTH = struct.Struct("<I")


#: numpy's smallest rank limit (numpy 1.x); a deeper shape is refused before numpy sees it
MAX_DIMS = 32
#: the largest dimension the protocols can carry (int64; gRPC's field type)
MAX_DIM = 2**63 - 1


def checked_shape(
    dims: object, datatype: str, name: str, model: str, limits: Limits, where: str = "", bytes_before: int = 0
) -> tuple[tuple[int, ...], int]:
    """The one shape check of every codec: `dims` as a shape tuple and its element count.

    Every dimension must be an integer (never a bool or a float) in [0, 2**63 - 1]; the rank is bounded; the
    product of the non-zero dimensions is bounded too (numpy refuses a shape whose product overflows, even with
    a 0 dimension), and so are the bytes and, for BYTES, the elements of the whole request (`bytes_before` are
    the BYTES elements of its earlier inputs). All of it costs nothing for a hostile shape.
    `where` prefixes messages that name the request or model (e.g. gRPC's "[request id: ...] ").

    Raises:
        InvalidArgumentError: anything above, with a message naming the input and, for limits, the flag.
    """
    if not isinstance(dims, (list, tuple)) or len(dims) > MAX_DIMS:
        _refuse_dims(dims, name, model, where)
    product = 1
    for dim in dims:  # one pass on the path every request takes; messages are built only for a refusal
        if type(dim) is not int or dim < 0 or dim > MAX_DIM:
            _refuse_dims(dims, name, model, where)
        if dim:
            product *= dim
    shape: tuple[int, ...] = tuple(dims)
    input_ = f"input '{name}' for model '{model}'"
    if product > limits.max_tensor_elements:
        raise InvalidArgumentError(
            f"{where}{input_} has more than {limits.max_tensor_elements} elements (--max-tensor-elements)"
        )
    count = 0 if 0 in shape else product
    if count * ELEMENT_SIZES.get(datatype, 1) > limits.max_tensor_bytes:
        raise InvalidArgumentError(
            f"{where}{input_} is larger than {limits.max_tensor_bytes} bytes (--max-tensor-bytes)"
        )
    if datatype == "BYTES" and bytes_before + count > limits.max_bytes_elements:
        raise InvalidArgumentError(
            f"{where}{input_} brings the request to {bytes_before + count} BYTES elements, more than "
            f"{limits.max_bytes_elements} (--max-bytes-elements)"
        )
    return shape, count


def _refuse_dims(dims: object, name: str, model: str, where: str) -> NoReturn:
    """The refusal of a shape that is not a list of at most MAX_DIMS integers in [0, MAX_DIM], by the first rule
    it breaks in this order: integers, rank, >= 0, <= MAX_DIM."""
    if not isinstance(dims, (list, tuple)) or not all(type(d) is int for d in dims):
        raise InvalidArgumentError(f"{where}Unable to parse 'shape' of input '{name}': expected an array of integers")
    input_ = f"input '{name}' for model '{model}'"
    if len(dims) > MAX_DIMS:
        raise InvalidArgumentError(f"{where}{input_} has {len(dims)} dimensions, more than {MAX_DIMS}")
    text = ",".join(str(d) for d in dims)
    if any(d < 0 for d in dims):
        raise InvalidArgumentError(f"{where}invalid shape [{text}] for {input_}, dimensions must be >= 0")
    raise InvalidArgumentError(f"{where}invalid shape [{text}] for {input_}, dimensions must be <= {MAX_DIM}")


def byte_size(datatype: str, count: int) -> int:
    """Bytes of `count` fixed-size elements (BYTES has no fixed size: -1)."""
    size = ELEMENT_SIZES.get(datatype)
    return -1 if size is None else size * count


def decode(buffer: memoryview, datatype: str, shape: tuple[int, ...], count: int, name: str, model: str) -> np.ndarray:
    """A tensor over `buffer`: a zero-copy view for fixed-size types, an object array for BYTES.

    Raises:
        InvalidArgumentError: the byte size does not match the shape, or malformed BYTES elements.
    """
    if datatype == "BYTES":
        return decode_bytes(buffer, shape, count, name)
    check_byte_size(datatype, count, len(buffer), name, model)
    dtype = NUMPY_DTYPES[datatype].newbyteorder("<")
    if count == 0:
        return np.empty(shape, dtype=dtype)
    array = np.frombuffer(buffer, dtype=dtype, count=count)
    return array if len(shape) == 1 else array.reshape(shape)  # 1-D: frombuffer's shape is (count,) already


def check_byte_size(datatype: str, count: int, size: int, name: str, model: str) -> None:
    """Refuse `size` bytes for `count` elements of a fixed-size `datatype` unless they match exactly.

    Raises: InvalidArgumentError (a mismatch).
    """
    expected = byte_size(datatype, count)
    if size != expected:
        raise InvalidArgumentError(
            f"input byte size mismatch for input '{name}' for model '{model}'. Expected {expected}, got {size}"
        )


def decode_bytes(buffer: memoryview, shape: tuple[int, ...], count: int, name: str) -> np.ndarray:
    """Split length-prefixed BYTES elements; exactly `count` elements must fill `buffer`.

    Raises:
        InvalidArgumentError: a truncated prefix or element, or trailing data.
    """
    end = len(buffer)
    if count * _LENGTH.size > end:
        raise InvalidArgumentError(f"input '{name}': {end} bytes cannot hold {count} BYTES elements")
    try:
        items = split_bytes(bytes(buffer), count)
    except BytesFormatError as exc:
        if exc.found >= count and exc.kind != BytesFormatError.COUNT or exc.found > count:
            raise InvalidArgumentError(f"input '{name}': unexpected data after the last BYTES element") from None
        if exc.kind == BytesFormatError.TRUNCATED_LENGTH:
            raise InvalidArgumentError(f"input '{name}': BYTES element length prefix is truncated") from None
        if exc.kind == BytesFormatError.TRUNCATED_ELEMENT:
            raise InvalidArgumentError(f"input '{name}': BYTES element is longer than the remaining data") from None
        raise InvalidArgumentError(f"input '{name}': BYTES element length prefix is truncated") from None
    return object_array(items).reshape(shape)


class BytesFormatError(ValueError):
    """Serialized BYTES elements that do not split into the expected count; callers word the message."""

    TRUNCATED_LENGTH: ClassVar[str] = "truncated length"
    TRUNCATED_ELEMENT: ClassVar[str] = "truncated element"
    COUNT: ClassVar[str] = "count"

    def __init__(self, kind: str, found: int, length: int = 0, available: int = 0) -> None:
        super().__init__(kind)
        self.kind = kind
        self.found = found  # elements complete before the problem (for COUNT: all found, up to the cap)
        self.length = length
        self.available = available


def split_bytes(data: bytes, count: int, extra: int = 0) -> list[bytes]:
    """The `count` elements of serialized BYTES `data` (u32 LE length, bytes; no gaps) as bytes objects.

    Elements of one length (the common case) are checked at once with numpy; others in one tight pass.
    Up to `extra` surplus elements are counted for the caller's message, never more (bounded work).

    Raises:
        BytesFormatError: a truncated length or element, or a number of elements other than `count`.
    """
    end = len(data)
    if count and end >= _LENGTH.size:
        (first,) = _LENGTH.unpack_from(data, 0)
        stride = _LENGTH.size + first
        if stride * count == end:
            prefixes = np.ndarray((count,), dtype="<u4", buffer=data, strides=(stride,))
            if bool((prefixes == first).all()):
                return [data[i : i + first] for i in range(_LENGTH.size, _LENGTH.size + end, stride)]
    items: list[bytes] = []
    append = items.append
    unpack = _LENGTH.unpack_from
    position = 0
    found = 0
    cap = count + extra + 1
    while position < end and found < cap:
        if end - position < _LENGTH.size:
            raise BytesFormatError(BytesFormatError.TRUNCATED_LENGTH, found, available=end - position)
        (length,) = unpack(data, position)
        position += _LENGTH.size
        if length > end - position:
            raise BytesFormatError(BytesFormatError.TRUNCATED_ELEMENT, found, length, end - position)
        if found < count:
            append(data[position : position + length])
        found += 1
        position += length
    if found != count or position != end:
        raise BytesFormatError(BytesFormatError.COUNT, found if position == end else cap)
    return items


def object_array(items: list[bytes]) -> np.ndarray:
    """A flat object array holding `items` (filled from the list in one C-level assignment)."""
    array = np.empty(len(items), dtype=np.object_)
    array[:] = items
    return array


def _element_bytes(flat: list[object]) -> list[bytes]:
    kinds = set(map(type, flat))
    if kinds <= {bytes}:
        return flat  # type: ignore[return-value]  # checked: every element is bytes
    return [
        item if type(item) is bytes else item.encode() if isinstance(item, str) else _as_bytes(item) for item in flat
    ]


def _as_bytes(item: object) -> bytes:
    if isinstance(item, (bytes, bytearray, memoryview, np.bytes_)):
        return bytes(item)
    return str(item).encode()


def encode_bytes(data: np.ndarray) -> bytes:
    """BYTES elements as concatenated (uint32 LE length, bytes) pairs; str elements as UTF-8.

    Vectorised: the lengths and the interleaving are numpy operations, the elements are joined once.

    Raises:
        InvalidArgumentError: an element longer than a u32 length can describe.
    """
    flat = _element_bytes(data.reshape(-1).tolist())
    count = len(flat)
    if not count:
        return b""
    lengths = np.fromiter(map(len, flat), dtype=np.int64, count=count)
    if int(lengths.max()) > 0xFFFFFFFF:
        raise InvalidArgumentError("a BYTES element is longer than 4294967295 bytes")
    joined = b"".join(flat)
    first = int(lengths[0])
    if bool((lengths == first).all()):
        if first == 0:
            return bytes(4 * count)
        pairs = np.empty(count, dtype=np.dtype([("n", "<u4"), ("d", f"V{first}")]))
        pairs["n"] = first
        pairs["d"] = np.frombuffer(joined, dtype=f"V{first}")
        return pairs.tobytes()
    out = np.empty(len(joined) + 4 * count, dtype=np.uint8)
    starts = np.cumsum(lengths + 4) - (lengths + 4)
    prefixes = lengths.astype("<u4").view(np.uint8).reshape(count, 4)
    payload = np.ones(len(out), dtype=np.bool_)
    for k in range(4):
        out[starts + k] = prefixes[:, k]
        payload[starts + k] = False
    out[payload] = np.frombuffer(joined, dtype=np.uint8)
    return out.tobytes()


def encode(tensor: Tensor) -> bytes | memoryview:
    """The raw bytes of a tensor; a view of its array when it is already little-endian and contiguous."""
    if tensor.datatype == "BYTES":
        return encode_bytes(tensor.data)
    array = np.ascontiguousarray(tensor.data, dtype=NUMPY_DTYPES[tensor.datatype].newbyteorder("<"))
    return memoryview(array.reshape(-1).view(np.uint8).data)
