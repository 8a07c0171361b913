"""Tensors and errors of Seawall's `triton_python_backend_utils` (a private helper of that module, which re-exports
its public names): TRITONSERVER_DataType codes, numpy conversions, `Tensor`, `TritonError`, `TritonModelException`.

Imports numpy and the stub's wire helpers (`ipc`) only; no state.
"""

import numpy as np

from seawall.backends.python import ipc as _ipc

# TRITONSERVER_DataType values, as returned by Tensor.triton_dtype()
_TRITONSERVER_TYPE_INVALID = 0
_TRITONSERVER_TYPE_BOOL = 1
_TRITONSERVER_TYPE_UINT8 = 2
_TRITONSERVER_TYPE_UINT16 = 3
_TRITONSERVER_TYPE_UINT32 = 4
_TRITONSERVER_TYPE_UINT64 = 5
_TRITONSERVER_TYPE_INT8 = 6
_TRITONSERVER_TYPE_INT16 = 7
_TRITONSERVER_TYPE_INT32 = 8
_TRITONSERVER_TYPE_INT64 = 9
_TRITONSERVER_TYPE_FP16 = 10
_TRITONSERVER_TYPE_FP32 = 11
_TRITONSERVER_TYPE_FP64 = 12
_TRITONSERVER_TYPE_BYTES = 13
_TRITONSERVER_TYPE_BF16 = 14

_NAME_TO_CODE = {
    "BOOL": 1, "UINT8": 2, "UINT16": 3, "UINT32": 4, "UINT64": 5, "INT8": 6, "INT16": 7, "INT32": 8,
    "INT64": 9, "FP16": 10, "FP32": 11, "FP64": 12, "BYTES": 13, "BF16": 14,
}  # fmt: skip
_CODE_TO_NAME = {code: name for name, code in _NAME_TO_CODE.items()}
_CODE_TO_NUMPY = {
    1: np.bool_, 2: np.uint8, 3: np.uint16, 4: np.uint32, 5: np.uint64, 6: np.int8, 7: np.int16,
    8: np.int32, 9: np.int64, 10: np.float16, 11: np.float32, 12: np.float64, 13: np.object_,
}  # fmt: skip

#: numpy dtype → TRITONSERVER_DataType of the fixed-size types (one lookup per output tensor)
_DTYPE_TO_CODE = {np.dtype(np_type): code for code, np_type in _CODE_TO_NUMPY.items() if code != 13}

TRITON_STRING_TO_NUMPY = {
    "TYPE_" + ("STRING" if name == "BYTES" else name): _CODE_TO_NUMPY[code]
    for name, code in _NAME_TO_CODE.items()
    if code in _CODE_TO_NUMPY
}


class TritonModelException(Exception):
    """Raise from initialize/execute/finalize to fail with a message."""


def _unsupported(what):
    return TritonModelException(f"{what} is not supported by Seawall's python backend yet")


def triton_to_numpy_type(data_type):
    """numpy type of a TRITONSERVER_DataType value (None if it has none)."""
    return _CODE_TO_NUMPY.get(data_type)


def numpy_to_triton_type(data_type):
    """TRITONSERVER_DataType value of a numpy type (None if it has none)."""
    dtype = data_type if isinstance(data_type, np.dtype) else np.dtype(data_type)
    code = _DTYPE_TO_CODE.get(dtype)
    if code is not None:
        return code
    if dtype.kind in ("O", "S", "U"):
        return _TRITONSERVER_TYPE_BYTES
    for np_dtype, code in _DTYPE_TO_CODE.items():  # same type, other spelling (byte order marks)
        if np_dtype == dtype:
            return code
    return None


def triton_string_to_numpy(triton_type_string):
    """numpy type of a config datatype such as "TYPE_FP32"."""
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def serialize_byte_tensor(input_tensor):
    """Serialize an array of bytes/str into Triton's length-prefixed format (0-d object array holding it)."""
    if input_tensor.size == 0:
        return np.empty([0], dtype=np.object_)
    if input_tensor.dtype.kind not in ("O", "S", "U"):
        raise TritonModelException("cannot serialize bytes tensor: invalid datatype")
    return np.asarray(_ipc.serialize_bytes(input_tensor), dtype=np.object_)


def deserialize_bytes_tensor(encoded_tensor):
    """Parse Triton's length-prefixed format into a 1-D object array of bytes."""
    return _ipc.deserialize_bytes(bytes(encoded_tensor))


class Tensor:
    """A named tensor held in host memory (numpy)."""

    def __init__(self, name, data, dtype=None):
        if not isinstance(data, np.ndarray):
            raise TritonModelException(f"tensor '{name}': data must be a numpy array")
        if dtype is None:
            code = numpy_to_triton_type(data.dtype)
            if code is None:
                raise TritonModelException(f"tensor '{name}': unsupported numpy dtype '{data.dtype}'")
            dtype = _CODE_TO_NAME[code]
        elif isinstance(dtype, int):
            dtype = _CODE_TO_NAME[dtype]
        if dtype == "BYTES" and data.dtype.kind != "O":
            flat = [x.encode() if isinstance(x, str) else bytes(x) for x in data.reshape(-1)]
            converted = np.empty(len(flat), dtype=np.object_)
            converted[:] = flat
            data = converted.reshape(data.shape)
        self._name = name
        self._data = data
        self._datatype = dtype

    def name(self):
        return self._name

    def as_numpy(self):
        """The array; BF16 tensors come as uint16 bit patterns (numpy has no bfloat16)."""
        return self._data

    def shape(self):
        return list(self._data.shape)

    def triton_dtype(self):
        return _NAME_TO_CODE[self._datatype]

    def is_cpu(self):
        return True

    def to_dlpack(self):
        return self._data.__dlpack__()

    def __dlpack__(self, **kwargs):
        return self._data.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._data.__dlpack_device__()

    @staticmethod
    def from_dlpack(name, capsule):
        if not hasattr(capsule, "__dlpack__"):
            raise _unsupported("Tensor.from_dlpack with a raw capsule")
        return Tensor(name, np.from_dlpack(capsule))

    def __repr__(self):
        return f"Tensor(name={self._name!r}, datatype={self._datatype}, shape={self.shape()})"


def _raw(tensor):
    """(datatype name, array) of a Tensor, BF16 included; used by the stub to write outputs."""
    if not isinstance(tensor, Tensor):
        raise TritonModelException(f"output tensors must be pb_utils.Tensor, got {type(tensor).__name__}")
    return tensor._datatype, tensor._data


class TritonError(Exception):
    """An error a model returns in an InferenceResponse; `code` is one of the class constants."""

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message, code=INTERNAL):
        super().__init__(message)
        self._message = str(message)
        self._code = int(code)

    def message(self):
        return self._message

    def code(self):
        return self._code
