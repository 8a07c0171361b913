"""Tensor data of the HTTP protocol: JSON `data` arrays and binary-extension bytes ↔ numpy arrays.

Imports numpy, `core.types` and `errors`; pure functions. Callers check element counts against the limits
before calling, so nothing here allocates more than the request itself carries.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from seawall.core.types import ELEMENT_SIZES, NUMPY_DTYPES, Tensor
from seawall.errors import InvalidArgumentError

_INT_TYPES = frozenset({"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"})
_JSON_ONLY_BINARY = frozenset({"FP16", "BF16"})
_LENGTH = struct.Struct("<I")


def decode_binary_data(
    view: memoryview, datatype: str, shape: tuple[int, ...], count: int, name: str, model: str
) -> np.ndarray:
    """A tensor over `view` (no copy for fixed-size types).

    Raises:
        InvalidArgumentError: the byte size does not match the shape, or malformed BYTES elements.
    """
    if datatype == "BYTES":
        return _decode_bytes_elements(view, shape, count, name)
    expected = count * ELEMENT_SIZES[datatype]
    if len(view) != expected:
        raise InvalidArgumentError(
            f"input byte size mismatch for input '{name}' for model '{model}'. Expected {expected}, got {len(view)}"
        )
    dtype = NUMPY_DTYPES[datatype].newbyteorder("<")
    if count == 0:
        return np.empty(shape, dtype=dtype)
    return np.frombuffer(view, dtype=dtype, count=count).reshape(shape)


def _decode_bytes_elements(view: memoryview, shape: tuple[int, ...], count: int, name: str) -> np.ndarray:
    if count * _LENGTH.size > len(view):
        raise InvalidArgumentError(f"input '{name}': {len(view)} bytes cannot hold {count} BYTES elements")
    items: list[bytes] = []
    position, end = 0, len(view)
    for _ in range(count):
        if position + _LENGTH.size > end:
            raise InvalidArgumentError(f"input '{name}': BYTES element length prefix is truncated")
        (length,) = _LENGTH.unpack_from(view, position)
        position += _LENGTH.size
        if length > end - position:
            raise InvalidArgumentError(f"input '{name}': BYTES element is longer than the remaining data")
        items.append(bytes(view[position : position + length]))
        position += length
    if position != end:
        raise InvalidArgumentError(f"input '{name}': unexpected data after the last BYTES element")
    return _object_array(items, shape)


def _object_array(items: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


def decode_json_data(data: Any, datatype: str, shape: tuple[int, ...], count: int, name: str) -> np.ndarray:
    """A tensor from a JSON `data` array (flat or nested, row-major), type- and range-checked.

    Raises:
        InvalidArgumentError: element count, element types or integer ranges do not fit the datatype.
    """
    if datatype in _JSON_ONLY_BINARY:
        raise InvalidArgumentError(
            f"datatype {datatype} of input '{name}' cannot be sent as JSON; use the binary data extension"
        )
    flat = _flatten(data, name)
    if len(flat) != count:
        raise InvalidArgumentError("Unable to parse 'data': Shape does not match true shape of 'data' field")
    kinds = set(map(type, flat))
    if datatype == "BYTES":
        if not kinds <= {str}:
            raise InvalidArgumentError(f"Unable to parse 'data' of input '{name}': BYTES elements must be strings")
        return _object_array([s.encode() for s in flat], shape)
    if datatype == "BOOL":
        if not kinds <= {bool}:
            raise InvalidArgumentError(f"Unable to parse 'data' of input '{name}': BOOL elements must be true or false")
    elif datatype in _INT_TYPES:
        _check_integers(flat, kinds, datatype, name)
    elif not kinds <= {int, float}:
        raise InvalidArgumentError(f"Unable to parse 'data' of input '{name}': {datatype} elements must be numbers")
    with np.errstate(over="ignore"):  # FP32 overflow becomes inf, as in Triton
        return np.array(flat, dtype=NUMPY_DTYPES[datatype]).reshape(shape)


def _check_integers(flat: list[Any], kinds: set[type], datatype: str, name: str) -> None:
    if not kinds <= {int}:
        raise InvalidArgumentError(f"Unable to parse 'data' of input '{name}': {datatype} elements must be integers")
    if not flat:
        return
    info = np.iinfo(NUMPY_DTYPES[datatype])
    low, high = min(flat), max(flat)
    if low < info.min or high > info.max:
        bad = low if low < info.min else high
        raise InvalidArgumentError(
            f"Unable to parse 'data' of input '{name}': value {bad} is out of range for datatype {datatype}"
        )


def _flatten(data: Any, name: str) -> list[Any]:
    if not isinstance(data, list):
        raise InvalidArgumentError(f"Unable to parse 'data' of input '{name}': expected an array")
    if not any(type(item) is list for item in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if type(item) is list:
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def tensor_bytes(tensor: Tensor) -> bytes | memoryview:
    """The binary-extension bytes of a tensor: little-endian row-major, BYTES with 4-byte length prefixes."""
    if tensor.datatype == "BYTES":
        parts: list[bytes] = []
        for item in tensor.data.reshape(-1):
            raw = item if isinstance(item, bytes) else str(item).encode()
            parts.append(_LENGTH.pack(len(raw)))
            parts.append(raw)
        return b"".join(parts)
    array = np.ascontiguousarray(tensor.data, dtype=NUMPY_DTYPES[tensor.datatype].newbyteorder("<"))
    return memoryview(array.reshape(-1).view(np.uint8).data)


def json_data(tensor: Tensor) -> Any:
    """The flat JSON `data` of a tensor (FP32 widened to double, as Triton prints it)."""
    name, datatype = tensor.name, tensor.datatype
    if datatype in _JSON_ONLY_BINARY:
        raise InvalidArgumentError(f"output '{name}' of datatype {datatype} can only be returned as binary data")
    flat = tensor.data.reshape(-1)
    if datatype == "BYTES":
        try:
            return [item.decode() if isinstance(item, bytes) else str(item) for item in flat]
        except UnicodeDecodeError:
            raise InvalidArgumentError(
                f"output '{name}' is not valid UTF-8 and cannot be returned as JSON; request it as binary data"
            ) from None
    array = np.ascontiguousarray(flat, dtype=NUMPY_DTYPES[datatype])
    if datatype in ("FP32", "FP64"):
        array = array.astype(np.float64)
        if not np.isfinite(array).all():
            raise InvalidArgumentError(
                f"output '{name}' contains NaN or Infinity, which JSON cannot represent; request it as binary data"
            )
    return array
