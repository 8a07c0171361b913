"""Seawall's `triton_python_backend_utils`: the Python model API of Triton's python backend (stub side).

Imported by user `model.py` files inside a stub process only (its directory is put on the stub's sys.path).
Imports numpy and the stub's wire helpers. Written from the documented API surface; GPU, BLS of decoupled
models and custom metrics raise TritonModelException("... not supported ..."); so does a response sender in
a model that is not decoupled.
"""

from __future__ import annotations

import json
import sys
import threading

import numpy as np

from seawall.backends.python import ipc

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2
TRITONSERVER_MEMORY_CPU = 0
TRITONSERVER_MEMORY_CPU_PINNED = 1
TRITONSERVER_MEMORY_GPU = 2

# TRITONSERVER_DataType values, as returned by Tensor.triton_dtype()
TRITONSERVER_TYPE_INVALID = 0
TRITONSERVER_TYPE_BOOL = 1
TRITONSERVER_TYPE_UINT8 = 2
TRITONSERVER_TYPE_UINT16 = 3
TRITONSERVER_TYPE_UINT32 = 4
TRITONSERVER_TYPE_UINT64 = 5
TRITONSERVER_TYPE_INT8 = 6
TRITONSERVER_TYPE_INT16 = 7
TRITONSERVER_TYPE_INT32 = 8
TRITONSERVER_TYPE_INT64 = 9
TRITONSERVER_TYPE_FP16 = 10
TRITONSERVER_TYPE_FP32 = 11
TRITONSERVER_TYPE_FP64 = 12
TRITONSERVER_TYPE_BYTES = 13
TRITONSERVER_TYPE_BF16 = 14

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
        return TRITONSERVER_TYPE_BYTES
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
    return np.asarray(ipc.serialize_bytes(input_tensor), dtype=np.object_)


def deserialize_bytes_tensor(encoded_tensor):
    """Parse Triton's length-prefixed format into a 1-D object array of bytes."""
    return ipc.deserialize_bytes(bytes(encoded_tensor))


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


class PreferredMemory:
    def __init__(self, preferred_memory_type=TRITONSERVER_MEMORY_CPU, preferred_device_id=0):
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


class InferenceTrace:
    def get_context(self, mode="opentelemetry"):
        return None


class InferenceResponseSender:
    """The response sender of one request of a decoupled model (`request.get_response_sender()`).

    Made by the backend, never by models: `deliver(response, final)` hands a response over (from any thread,
    during or after execute), `cancelled()` says whether the client went away, `abandon()` is called if the
    sender is dropped before its final response (the client then gets an error instead of waiting forever).
    """

    def __init__(self, deliver, cancelled, abandon=None):
        self._deliver = deliver
        self._cancelled = cancelled
        self._abandon = abandon
        self._lock = threading.Lock()
        self._closed = False

    def send(self, response=None, flags=0):
        if flags != TRITONSERVER_RESPONSE_COMPLETE_FINAL and flags != 0:
            raise TritonModelException("Unable to send response. Unsupported flag provided.")
        if flags == 0 and response is None:
            raise TritonModelException(
                "Inference Response object must be provided when the response flags is set to zero."
            )
        if response is not None and not isinstance(response, InferenceResponse):
            raise TritonModelException(f"Expected an InferenceResponse, got {type(response).__name__}")
        final = flags == TRITONSERVER_RESPONSE_COMPLETE_FINAL
        with self._lock:
            if self._closed:
                raise TritonModelException("Unable to send response. Response sender has been closed.")
            if final:
                self._closed = True
            self._deliver(response, final)

    def is_cancelled(self):
        return bool(self._cancelled())

    def _close(self):
        """The backend closed the stream (execute raised): later sends fail, nothing is abandoned."""
        self._closed = True

    def __del__(self):
        if not self._closed and self._abandon is not None:
            self._closed = True
            try:
                self._abandon()
            except Exception:
                pass  # the channel is gone (the stub is exiting)


class InferenceRequest:
    """A request passed to `execute`; constructing one for BLS is allowed, executing it is not (yet)."""

    def __init__(
        self,
        model_name="",
        inputs=None,
        requested_output_names=None,
        request_id="",
        correlation_id=0,
        model_version=-1,
        flags=0,
        timeout=0,
        preferred_memory=None,
        trace=None,
        parameters=None,
    ):
        self._model_name = model_name
        self._inputs = list(inputs or [])
        self._requested = list(requested_output_names or [])
        if None in self._inputs:
            raise TritonModelException(
                f"Input tensor for request with id '{request_id}' and model name '{model_name}' should not be empty."
            )
        if "" in self._requested:
            raise TritonModelException(
                f"Requested output name for request with id '{request_id}' and model name '{model_name}' should "
                "not be empty."
            )
        if type(correlation_id) is not int and not isinstance(correlation_id, (int, str)):
            raise TritonModelException("Correlation ID must be integer or string")
        self._request_id = request_id
        self._correlation_id = correlation_id
        self._model_version = model_version
        self._flags = flags
        self._timeout = timeout
        self._preferred_memory = preferred_memory  # default made on first use: most models never ask
        self._trace = trace
        if isinstance(parameters, str):
            parameters = json.loads(parameters)
        self._parameters = dict(parameters) if parameters else {}
        self._release_flags = TRITONSERVER_REQUEST_RELEASE_ALL
        self._sender = None  # decoupled models: set by the backend
        self._cancel_state = None  # set by the backend: `is_cancelled(self._seq, self._item)` says if the client left
        self._seq = self._item = 0

    def inputs(self):
        return self._inputs

    def request_id(self):
        return self._request_id

    def correlation_id(self):
        return self._correlation_id

    def model_name(self):
        return self._model_name

    def model_version(self):
        return self._model_version

    def flags(self):
        return self._flags

    def set_flags(self, flags):
        self._flags = flags

    def timeout(self):
        return self._timeout

    def parameters(self):
        return json.dumps(self._parameters)

    def trace(self):
        if self._trace is None:
            self._trace = InferenceTrace()
        return self._trace

    def requested_output_names(self):
        return list(self._requested)

    def get_response_sender(self):
        if self._sender is None:
            raise _unsupported("get_response_sender in a model that is not decoupled")
        return self._sender

    def is_cancelled(self):
        state = self._cancel_state
        return state is not None and bool(state.is_cancelled(self._seq, self._item))

    def set_release_flags(self, flags):
        if flags != TRITONSERVER_REQUEST_RELEASE_ALL:
            raise _unsupported("request rescheduling")
        self._release_flags = flags

    def exec(self, decoupled=False):
        """Run this request on the server (BLS); returns its InferenceResponse (has_error() when it failed)."""
        return _call_handler().exec(self, decoupled)

    def async_exec(self, decoupled=False):
        """`exec` as an awaitable of the running event loop."""
        return _call_handler().async_exec(self, decoupled)


class InferenceResponse:
    def __init__(self, output_tensors=None, error=None):
        self._outputs = list(output_tensors or [])
        if error is not None and not isinstance(error, TritonError):
            error = TritonError(str(error))
        self._error = error

    def output_tensors(self):
        return self._outputs

    def has_error(self):
        return self._error is not None

    def error(self):
        return self._error


def get_input_tensor_by_name(inference_request, name):
    for tensor in inference_request.inputs():
        if tensor.name() == name:
            return tensor
    return None


def get_output_tensor_by_name(inference_response, name):
    for tensor in inference_response.output_tensors():
        if tensor.name() == name:
            return tensor
    return None


def _config_entry(model_config, section, name):
    for entry in model_config.get(section, []):
        if entry.get("name") == name:
            return entry
    return None


def get_input_config_by_name(model_config, name):
    return _config_entry(model_config, "input", name)


def get_output_config_by_name(model_config, name):
    return _config_entry(model_config, "output", name)


def using_decoupled_model_transaction_policy(model_config):
    return bool(model_config.get("model_transaction_policy", {}).get("decoupled", False))


_calls = [None]  # set by the stub (or the server, in process): runs BLS and model-control calls


def _set_call_handler(handler):
    _calls[0] = handler


def _call_handler():
    handler = _calls[0]
    if handler is None:
        raise TritonModelException("BLS is only supported during the 'execute' function.")
    return handler


def load_model(model_name, config="", files=None):
    """Load or reload `model_name` (explicit model control mode only), with a JSON `config` and `files`."""
    from seawall.backends.python.call_client import checked_files

    checked = checked_files(files, model_name, TritonModelException)
    _call_handler().control("load", str(model_name), str(config), False, checked)


def unload_model(model_name, unload_dependents=False):
    """Unload `model_name` (explicit model control mode only)."""
    _call_handler().control("unload", str(model_name), "", bool(unload_dependents), {})


def is_model_ready(model_name, model_version=""):
    """Whether version `model_version` ("": any) of `model_name` is ready on the server."""
    return _call_handler().control("ready", str(model_name), str(model_version), False, {})


class MetricFamily:
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2

    def __init__(self, name, description, kind):
        raise _unsupported("custom metrics (MetricFamily)")


class LogLevel:
    INFO = 0
    WARNING = 1
    ERROR = 2
    VERBOSE = 3


def _stderr_sink(level, message):
    sys.stderr.write(f"{message}\n")


_sink = [_stderr_sink]  # replaced by the stub: sends log lines to the server over the control channel


def _set_log_sink(sink):
    _sink[0] = sink


class Logger:
    """Writes to the server log (the server escapes every line)."""

    @staticmethod
    def log(msg, level=LogLevel.INFO):
        _sink[0](int(level), str(msg))

    @staticmethod
    def log_info(msg):
        Logger.log(msg, LogLevel.INFO)

    @staticmethod
    def log_warn(msg):
        Logger.log(msg, LogLevel.WARNING)

    @staticmethod
    def log_error(msg):
        Logger.log(msg, LogLevel.ERROR)

    @staticmethod
    def log_verbose(msg):
        Logger.log(msg, LogLevel.VERBOSE)


_INPUT_KEYS = {"name", "data_type", "dims", "optional", "format", "reshape", "is_shape_tensor",
               "allow_ragged_batch", "is_non_linear_format_io"}  # fmt: skip
_OUTPUT_KEYS = {"name", "data_type", "dims", "reshape", "label_filename", "is_shape_tensor",
                "is_non_linear_format_io"}  # fmt: skip


class ModelConfig:
    """The configuration handed to `auto_complete_config`; changes are merged back by the server."""

    def __init__(self, model_config):
        if isinstance(model_config, str):
            model_config = json.loads(model_config)
        self._model_config = model_config

    def as_dict(self):
        return self._model_config

    def set_max_batch_size(self, max_batch_size):
        current = int(self._model_config.get("max_batch_size", 0))
        if current > max_batch_size:
            raise ValueError(
                f"configuration specified max_batch_size {current}, but in auto-complete-config "
                f"function for model '{self._model_config.get('name', '')}' specified max_batch_size "
                f"{max_batch_size}"
            )
        self._model_config["max_batch_size"] = int(max_batch_size)

    def set_dynamic_batching(self):
        for other in ("sequence_batching", "ensemble_scheduling"):
            if other in self._model_config:
                raise ValueError(
                    f"configuration specified {other}, but auto-complete-config function for model "
                    f"'{self._model_config.get('name', '')}' tries to set dynamic_batching"
                )
        self._model_config.setdefault("dynamic_batching", {})

    def _add(self, section, entry, allowed):
        if not isinstance(entry, dict):
            raise ValueError(f"model {section} must be a dict, got {type(entry).__name__}")
        for key in ("name", "data_type", "dims"):
            if key not in entry:
                raise ValueError(f"model {section} '{entry.get('name', '')}' is missing the '{key}' property")
        unknown = set(entry) - allowed
        if unknown:
            raise ValueError(f"model {section} '{entry['name']}' has unknown properties {sorted(unknown)}")
        for existing in self._model_config.setdefault(section, []):
            if existing.get("name") != entry["name"]:
                continue
            if existing.get("data_type", "TYPE_INVALID") not in ("TYPE_INVALID", entry["data_type"]):
                raise ValueError(
                    f"model {section} '{entry['name']}' has data_type {existing['data_type']} in the "
                    f"configuration, auto-complete-config specified {entry['data_type']}"
                )
            dims = [int(d) for d in existing.get("dims", [])]
            if dims and dims != [int(d) for d in entry["dims"]]:
                raise ValueError(
                    f"model {section} '{entry['name']}' has dims {dims} in the configuration, "
                    f"auto-complete-config specified {list(entry['dims'])}"
                )
            existing.update({k: v for k, v in entry.items() if k not in existing or not existing[k]})
            return
        self._model_config[section].append(dict(entry))

    def add_input(self, input):
        self._add("input", input, _INPUT_KEYS)

    def add_output(self, output):
        self._add("output", output, _OUTPUT_KEYS)

    def set_model_transaction_policy(self, transaction_policy_dict):
        if not isinstance(transaction_policy_dict, dict) or set(transaction_policy_dict) - {"decoupled"}:
            raise ValueError("model transaction policy accepts only the 'decoupled' property")
        self._model_config["model_transaction_policy"] = dict(transaction_policy_dict)
