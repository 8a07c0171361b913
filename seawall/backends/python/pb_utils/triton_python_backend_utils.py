"""Seawall's `triton_python_backend_utils`: the Python model API of Triton's python backend (stub side).

Imported by user `model.py` files inside a stub process (its directory is put on the stub's sys.path) and, for
in-process models, by the server. Its public names are exactly Triton's; it holds requests, responses, the
response sender, BLS and model control, logging and the model directory, and re-exports the rest from private
helpers beside it: `_pb_tensors` (Tensor, TritonError, type conversions), `_pb_metrics` (MetricFamily) and
`_pb_model_config` (ModelConfig). Written from the documented API surface; GPU memory and request rescheduling
raise TritonModelException("... not supported ..."); so does a response sender in a model that is not decoupled.
"""

import enum as _enum
import json
import sys as _sys
import threading as _threading

import numpy as np  # noqa: F401 (Triton's module has `np` and `json` in its namespace)

from seawall.backends.python.pb_utils._pb_metrics import MetricFamily as MetricFamily
from seawall.backends.python.pb_utils._pb_metrics import _set_metrics_sink  # noqa: F401 (set by the stub)
from seawall.backends.python.pb_utils._pb_model_config import ModelConfig as ModelConfig
from seawall.backends.python.pb_utils._pb_tensors import TRITON_STRING_TO_NUMPY as TRITON_STRING_TO_NUMPY
from seawall.backends.python.pb_utils._pb_tensors import Tensor as Tensor
from seawall.backends.python.pb_utils._pb_tensors import TritonError as TritonError
from seawall.backends.python.pb_utils._pb_tensors import TritonModelException as TritonModelException
from seawall.backends.python.pb_utils._pb_tensors import (
    _raw,  # noqa: F401 (the stub reads outputs with it)
    _unsupported,
)
from seawall.backends.python.pb_utils._pb_tensors import deserialize_bytes_tensor as deserialize_bytes_tensor
from seawall.backends.python.pb_utils._pb_tensors import numpy_to_triton_type as numpy_to_triton_type
from seawall.backends.python.pb_utils._pb_tensors import serialize_byte_tensor as serialize_byte_tensor
from seawall.backends.python.pb_utils._pb_tensors import triton_string_to_numpy as triton_string_to_numpy
from seawall.backends.python.pb_utils._pb_tensors import triton_to_numpy_type as triton_to_numpy_type

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2
TRITONSERVER_MEMORY_CPU = 0
_TRITONSERVER_MEMORY_CPU_PINNED = 1
TRITONSERVER_MEMORY_GPU = 2


class PreferredMemory:
    def __init__(self, preferred_memory_type=TRITONSERVER_MEMORY_CPU, preferred_device_id=0):
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


class _InferenceTrace:
    def get_context(self, mode="opentelemetry"):
        return None


class _ResponseSender:
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
        self._model_name = model_name.decode() if isinstance(model_name, bytes) else model_name  # pybind11 does too
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
