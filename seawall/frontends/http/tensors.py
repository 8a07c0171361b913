"""Tensor data of the HTTP protocol's JSON form: `data` arrays ↔ numpy arrays (binary data uses `core.raw`).

Imports numpy, `core.types` and `errors`; pure functions. Callers check element counts against the limits
before calling, so nothing here allocates more than the request itself carries.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from seawall.core.types import NUMPY_DTYPES, Tensor
from seawall.errors import InvalidArgumentError

#: the range of each integer datatype (np.iinfo costs ~1 µs a call: once here, not per request); BF16 is stored as
#: uint16 but is not one of them
_INTEGER_RANGES: dict[str, tuple[int, int]] = {
    datatype: (int(np.iinfo(NUMPY_DTYPES[datatype]).min), int(np.iinfo(NUMPY_DTYPES[datatype]).max))
    for datatype in ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64")
}
_JSON_ONLY_BINARY = frozenset({"FP16", "BF16"})
_LENGTH = struct.Struct("<I")
_FP32_MAX = float(np.finfo(np.float32).max)
_SCANNED = 256  # FP32 JSON data of up to this many numbers is range-scanned instead of cast under np.errstate


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
        strings = np.empty(len(flat), dtype=np.object_)
        strings[:] = [s.encode() for s in flat]
        return strings.reshape(shape)
    if datatype == "BOOL":
        if not kinds <= {bool}:
            raise InvalidArgumentError(f"Unable to parse 'data' of input '{name}': BOOL elements must be true or false")
    elif datatype in _INTEGER_RANGES:
        _check_integers(flat, kinds, datatype, name)
    elif not kinds <= {int, float}:
        raise InvalidArgumentError(f"Unable to parse 'data' of input '{name}': {datatype} elements must be numbers")
    if datatype == "FP32" and not _fits_fp32(flat):
        with np.errstate(over="ignore"):  # FP32 overflow becomes inf, as in Triton
            return np.array(flat, dtype=np.float32).reshape(shape)
    # no other datatype can overflow here (integers are range-checked, JSON numbers are doubles), and the
    # errstate context costs more than the conversion of a small tensor
    return np.array(flat, dtype=NUMPY_DTYPES[datatype]).reshape(shape)


def _fits_fp32(flat: list[Any]) -> bool:
    """Every number of a small `flat` is within FP32's range (no overflow when cast); False for large ones,
    which are not scanned (the errstate context is nothing beside their conversion)."""
    return not flat or (len(flat) <= _SCANNED and -_FP32_MAX <= min(flat) and max(flat) <= _FP32_MAX)


def _check_integers(flat: list[Any], kinds: set[type], datatype: str, name: str) -> None:
    if not kinds <= {int}:
        raise InvalidArgumentError(f"Unable to parse 'data' of input '{name}': {datatype} elements must be integers")
    if not flat:
        return
    smallest, largest = _INTEGER_RANGES[datatype]
    low, high = min(flat), max(flat)
    if low < smallest or high > largest:
        bad = low if low < smallest else high
        raise InvalidArgumentError(
            f"Unable to parse 'data' of input '{name}': value {bad} is out of range for datatype {datatype}"
        )


def _flatten(data: Any, name: str) -> list[Any]:
    if not isinstance(data, list):
        raise InvalidArgumentError(f"Unable to parse 'data' of input '{name}': expected an array")
    return flatten(data)


def flatten(data: list[Any]) -> list[Any]:
    """The elements of nested JSON arrays in row-major order (`data` itself when it is flat already)."""
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
