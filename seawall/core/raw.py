"""Triton's raw tensor byte format, shared by HTTP binary data, gRPC raw contents, shared memory and the
Python backend: little-endian, row-major, no padding; BYTES elements as (uint32 LE length, bytes) pairs.

Imports numpy, `core.types`, `errors`. Sizes are checked with exact integer arithmetic before anything
is allocated.
"""

from __future__ import annotations

import struct

import numpy as np

from seawall.core.types import ELEMENT_SIZES, NUMPY_DTYPES, Tensor
from seawall.errors import InvalidArgumentError, ResourceExhaustedError

_LENGTH = struct.Struct("<I")


def checked_element_count(shape: tuple[int, ...], datatype: str, name: str, max_elements: int, max_bytes: int) -> int:
    """The element count of `shape`, refusing negative dims and tensors over the limits.

    The product is bounded as it grows, so a hostile shape costs nothing to refuse.

    Raises:
        InvalidArgumentError: a negative dimension.
        ResourceExhaustedError: more elements than `max_elements`, or more bytes than `max_bytes`.
    """
    count = 1
    for dim in shape:
        if dim < 0:
            raise InvalidArgumentError(f"input '{name}' has a negative dimension in shape {list(shape)}")
        count *= dim or 1
        if count > max_elements:
            raise ResourceExhaustedError(f"input '{name}' has more than {max_elements} elements")
    if 0 in shape:
        return 0
    if count * ELEMENT_SIZES.get(datatype, 1) > max_bytes:
        raise ResourceExhaustedError(f"input '{name}' is larger than {max_bytes} bytes")
    return count


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
    return np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape)


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
    items: list[bytes] = []
    position = 0
    unpack = _LENGTH.unpack_from
    for _ in range(count):
        if position + 4 > end:
            raise InvalidArgumentError(f"input '{name}': BYTES element length prefix is truncated")
        (length,) = unpack(buffer, position)
        position += 4
        if length > end - position:
            raise InvalidArgumentError(f"input '{name}': BYTES element is longer than the remaining data")
        items.append(bytes(buffer[position : position + length]))
        position += length
    if position != end:
        raise InvalidArgumentError(f"input '{name}': unexpected data after the last BYTES element")
    array = np.empty(count, dtype=np.object_)
    array[:] = items
    return array.reshape(shape)


def encode_bytes(data: np.ndarray) -> bytes:
    """BYTES elements as concatenated (uint32 LE length, bytes) pairs; str elements as UTF-8."""
    parts: list[bytes] = []
    pack = _LENGTH.pack
    for item in data.reshape(-1):
        if not isinstance(item, bytes):
            item = item.encode() if isinstance(item, str) else str(item).encode()
        parts.append(pack(len(item)))
        parts.append(item)
    return b"".join(parts)


def encode(tensor: Tensor) -> bytes | memoryview:
    """The raw bytes of a tensor; a view of its array when it is already little-endian and contiguous."""
    if tensor.datatype == "BYTES":
        return encode_bytes(tensor.data)
    array = np.ascontiguousarray(tensor.data, dtype=NUMPY_DTYPES[tensor.datatype].newbyteorder("<"))
    return memoryview(array.reshape(-1).view(np.uint8).data)
