"""Seawall's `triton_python_backend_utils`: the Python model API of Triton's python backend (stub side).

Imported by user `model.py` files inside a stub process only (its directory is put on the stub's sys.path).
Imports numpy and the stub's wire helpers. Written from the documented API surface; GPU, BLS of decoupled
models and custom metrics raise TritonModelException("... not supported ..."); so does a response sender in
a model that is not decoupled.
"""

import collections as _collections
import enum as _enum
import itertools as _itertools
import json
import sys as _sys
import threading as _threading
import weakref as _weakref

import numpy as np

from seawall.backends.python import ipc as _ipc

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2
TRITONSERVER_MEMORY_CPU = 0
_TRITONSERVER_MEMORY_CPU_PINNED = 1
TRITONSERVER_MEMORY_GPU = 2

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


class PreferredMemory:
    def __init__(self, preferred_memory_type=TRITONSERVER_MEMORY_CPU, preferred_device_id=0):
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


class _InferenceTrace:
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
        self._lock = _threading.Lock()
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
            self._trace = _InferenceTrace()
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
    def __init__(self, output_tensors=None, error=None, parameters=None):
        self._outputs = list(output_tensors or [])
        if error is not None and not isinstance(error, TritonError):
            error = TritonError(str(error))
        self._error = error
        self._parameters = _response_parameters(parameters) if parameters else None

    def parameters(self):
        """The response's parameters as a JSON object string (sent to the client beside the outputs)."""
        return json.dumps(self._parameters or {})

    def output_tensors(self):
        return self._outputs

    def has_error(self):
        return self._error is not None

    def error(self):
        return self._error


def _response_parameters(parameters):
    if not isinstance(parameters, dict):
        raise TritonModelException("InferenceResponse parameters must be a dict")
    for key, value in parameters.items():
        if not isinstance(key, str) or not isinstance(value, bool | int | float | str):
            raise TritonModelException(
                "InferenceResponse parameters: keys must be strings and values bool, int, float or str"
            )
    return dict(parameters)


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


# -- custom metrics ------------------------------------------------------------------------------------------------
# The server keeps the values; the sink (set by the stub, or by the server for in-process models) carries each
# call there: family/metric/value wait for the server's answer, apply/delete do not. Objects the model drops are
# deleted on its next metric call (a __del__ must not write to the channel: it may run in the middle of a send).


class _MetricKind(_enum.IntEnum):
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


_MetricKind.__name__ = _MetricKind.__qualname__ = "MetricKind"
_metric_ids = _itertools.count(1)
_dropped_metrics = _collections.deque()  # (sink, kind 0 family / 1 metric, id) of objects the model dropped


def _no_metrics_sink():
    raise TritonModelException("custom metrics are not available here")


_metrics_sink = [_no_metrics_sink]  # returns the sink of the calling model (the stub has one; in process: per model)


def _set_metrics_sink(sink):
    _metrics_sink[0] = sink


def _flush_dropped_metrics():
    while _dropped_metrics:
        sink, kind, id_ = _dropped_metrics.popleft()
        try:
            sink.delete(kind, id_)
        except Exception:
            pass  # the server has gone, or the model unloaded: nothing left to delete


class MetricFamily:
    """A family of metrics of one kind, shown on the server's /metrics beside Triton's own families."""

    COUNTER = _MetricKind.COUNTER
    GAUGE = _MetricKind.GAUGE
    HISTOGRAM = _MetricKind.HISTOGRAM

    def __init__(self, name, description, kind):
        if not isinstance(name, str) or not isinstance(description, str) or not isinstance(kind, _MetricKind):
            raise TypeError(
                "MetricFamily(name: str, description: str, kind: MetricFamily.COUNTER, GAUGE or HISTOGRAM): "
                f"invoked with name={name!r}, description={description!r}, kind={kind!r}"
            )
        _flush_dropped_metrics()
        self._sink = _metrics_sink[0]()
        self._id = next(_metric_ids)
        self._kind = kind
        self._metrics = []  # weak references: the metrics cleared when this family goes
        try:
            self._sink.family(self._id, name, description, int(kind))
        except Exception as exc:
            self._sink = None
            raise TritonModelException(f"Error when creating MetricFamily: {exc}") from None

    def Metric(self, labels=None, buckets=None):
        """A metric of this family with `labels` (str → str); histograms need `buckets` (a list)."""
        if labels is not None and not isinstance(labels, dict):
            raise TritonModelException("Failed to create metric. Labels must be a dictionary.")
        if buckets is not None:
            if not isinstance(buckets, list):
                raise TritonModelException("Failed to create metric. Buckets must be a list.")
            if self._kind != _MetricKind.HISTOGRAM:
                raise TritonModelException("Failed to create metric. Unexpected buckets found.")
            buckets = [_metric_number(bound) for bound in buckets]
        elif self._kind == _MetricKind.HISTOGRAM:
            raise TritonModelException("Failed to create metric. Missing required buckets.")
        labels = dict(labels or {})
        for key, value in labels.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TritonModelException("Error when creating Metric: label names and values must be strings")
        _flush_dropped_metrics()
        if self._sink is None:
            raise TritonModelException("Error when creating Metric: the MetricFamily has been deleted")
        metric = _Metric._new(self._sink, next(_metric_ids), self._kind)
        try:
            self._sink.metric(metric._id, self._id, labels, buckets)
        except Exception as exc:
            metric._cleared = True
            raise TritonModelException(f"Error when creating Metric: {exc}") from None
        self._metrics.append(_weakref.ref(metric))
        return metric

    def __del__(self):
        sink, self._sink = getattr(self, "_sink", None), None
        if sink is None:
            return
        for ref in self._metrics:
            metric = ref()
            if metric is not None:
                metric._cleared = True  # the server deletes them with the family
        _dropped_metrics.append((sink, 0, self._id))


def _metric_number(value):
    if isinstance(value, str | bytes) or value is None:
        raise TypeError(f"a metric value must be a number, not {type(value).__name__}")
    return float(value)


_KIND_NAMES = tuple(f"TRITONSERVER_METRIC_KIND_{kind}" for kind in ("COUNTER", "GAUGE", "HISTOGRAM"))
_ALLOWED_OPS = {0: (0,), 1: (0, 1), 2: (2,)}  # kind → ops: 0 increment, 1 set, 2 observe
_OP_TEXT = (("increment", "Increment"), ("set", "Set"), ("observe", "Observe"))


class _Metric:
    """One series of a MetricFamily (made by `MetricFamily.Metric`)."""

    def __init__(self, *args, **kwargs):
        raise TypeError("Metric objects are made by MetricFamily.Metric(labels=..., buckets=...)")

    @classmethod
    def _new(cls, sink, id_, kind):
        metric = object.__new__(cls)
        metric._sink = sink
        metric._id = id_
        metric._kind = int(kind)
        metric._cleared = False
        return metric

    def _check(self, verb):
        if self._cleared:
            raise TritonModelException(
                f"Failed to {verb} metric value: Invalid metric operation as the corresponding 'MetricFamily' has "
                "been deleted. The 'MetricFamily' object should be deleted AFTER its corresponding 'Metric' "
                "objects have been deleted."
            )

    def _apply(self, op, value):
        if _dropped_metrics:
            _flush_dropped_metrics()
        verb, name = _OP_TEXT[op]
        value = _metric_number(value)
        self._check(verb)
        kind = self._kind
        if op not in _ALLOWED_OPS[kind]:
            raise TritonModelException(f"Failed to {verb} metric value: {_KIND_NAMES[kind]} does not support {name}")
        if kind == 0 and not value >= 0:
            raise TritonModelException(
                f"Failed to increment metric value: {_KIND_NAMES[0]} can only be incremented monotonically by "
                "non-negative values."
            )
        if op == 2 and value != value:
            raise TritonModelException("Failed to observe metric value: a histogram cannot observe NaN")
        self._sink.apply(self._id, op, value)

    def increment(self, value):
        """Add `value` (counters: not negative; gauges: any)."""
        self._apply(0, value)

    def set(self, value):
        """Set a gauge."""
        self._apply(1, value)

    def observe(self, value):
        """Count `value` into a histogram."""
        self._apply(2, value)

    def value(self):
        """The value of a counter or gauge, as the server holds it."""
        _flush_dropped_metrics()
        self._check("get")
        if self._kind == 2:
            raise TritonModelException(f"Failed to get metric value: {_KIND_NAMES[2]} does not support Value")
        try:
            return self._sink.value(self._id)
        except Exception as exc:
            raise TritonModelException(f"Failed to get metric value: {exc}") from None

    def __del__(self):
        if not getattr(self, "_cleared", True):
            self._cleared = True
            _dropped_metrics.append((self._sink, 1, self._id))


_Metric.__name__ = _Metric.__qualname__ = "Metric"


class _LogLevel(_enum.IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2
    VERBOSE = 3


_LogLevel.__name__ = _LogLevel.__qualname__ = "LogLevel"


def _stderr_sink(level, message, filename, line):
    _sys.stderr.write(f"{message}\n")


_sink = [_stderr_sink]  # replaced by the stub: sends log lines to the server over the control channel


def _set_log_sink(sink):
    _sink[0] = sink


def _log(message, level, depth):
    """Send one line with the file and line of the model code that logged it (Triton's log shows them)."""
    frame = _sys._getframe(depth + 1)
    _sink[0](int(level), str(message), frame.f_code.co_filename, frame.f_lineno)


class Logger:
    """Writes to the server log as Triton does: `I1204 18:30:13.829096 <pid> model.py:18] message` (the server
    escapes every line). Usage: `logger = pb_utils.Logger; logger.log_info(msg)`,
    `logger.log(msg, pb_utils.Logger.WARNING)`; VERBOSE lines appear with --log-verbose > 0."""

    LogLevel = _LogLevel
    INFO = _LogLevel.INFO
    WARNING = _LogLevel.WARNING
    ERROR = _LogLevel.ERROR
    VERBOSE = _LogLevel.VERBOSE

    @staticmethod
    def log(message, level=_LogLevel.INFO):
        _log(message, level, 1)

    @staticmethod
    def log_info(message):
        _log(message, _LogLevel.INFO, 1)

    @staticmethod
    def log_warn(message):
        _log(message, _LogLevel.WARNING, 1)

    @staticmethod
    def log_error(message):
        _log(message, _LogLevel.ERROR, 1)

    @staticmethod
    def log_verbose(message):
        _log(message, _LogLevel.VERBOSE, 1)


def get_model_dir():
    """The directory of the model's file (its version directory), as Triton's stub gives it."""
    return _model_dir[0]()


def _no_model_dir():
    raise TritonModelException("get_model_dir() is available to a loaded model only")


_model_dir = [_no_model_dir]  # set by the stub (its model's directory) or, in process, per calling instance


def _set_model_dir(getter):
    _model_dir[0] = getter


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
