"""What every python-backend instance shares, however its model runs (stub process, worker thread, inline) and
for auto-complete: the instance's spec, start-up within the stub timeout, error mapping with paths hidden,
the output checks, and the request header the model's requests are built from.

Imports `ipc` (its descriptor type), `messages`, `core.types` and `errors`; runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from seawall.backends.python import ipc
from seawall.backends.python.messages import RequestHeader
from seawall.core.types import InferRequest, InferResponse, ParamValue, Tensor
from seawall.errors import Code, InternalError, SeawallError, UnavailableError, error_for_code

logger = logging.getLogger(__name__)

#: pb_utils.TritonError codes (TRITONSERVER_Error_Code order) → Seawall codes.
_TRITON_ERROR_CODES = (
    Code.UNKNOWN,
    Code.INTERNAL,
    Code.NOT_FOUND,
    Code.INVALID_ARG,
    Code.UNAVAILABLE,
    Code.UNSUPPORTED,
    Code.ALREADY_EXISTS,
    Code.CANCELLED,
)
#: Request parameters the server consumes; the model sees them as correlation id / flags, not parameters().
_RESERVED_PARAMETERS = frozenset(
    {"sequence_id", "sequence_start", "sequence_end", "priority", "timeout", "binary_data_output"}
)

_T = TypeVar("_T")


def hidden_prefix(model_dir: str) -> str:
    """ "<repository>/": what texts from model code lose before they reach a client (no server paths)."""
    return os.path.dirname(os.path.realpath(model_dir)) + os.sep


def hide(text: str, prefix: str) -> str:
    return text.replace(prefix, "") if prefix else text


async def within(awaitable: Awaitable[_T], timeout_s: float, late: str) -> _T:
    """`awaitable`'s result within `timeout_s` (stub-timeout-seconds).

    Raises:
        UnavailableError: `late`, when the time is up.
    """
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except TimeoutError as exc:
        raise UnavailableError(late) from exc


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """What one instance needs to know about its model, and how its model's failures reach a client."""

    model_name: str
    model_version: str
    instance_name: str
    model_file: str
    version_dir: str
    args: Mapping[str, str]  # initialize(args)
    output_types: Mapping[str, str]  # configured output name → API datatype (empty: not checked)
    hidden_prefix: str  # "<repository>/": removed from texts sent to clients
    dynamic_batching: bool = False
    model_dir: str = ""  # the model directory: code is imported only from inside it, pins are relative to it
    pins: tuple[Mapping[str, str], ...] = ()  # SHA-256 pin sets of the model's checksum agents (empty: unpinned)
    decoupled: bool = False  # model_transaction_policy { decoupled: true }
    # a Seawall backend the stub runs instead of model.py (a key of stub.BACKEND_WORKERS; "": the model's own code)
    worker: str = ""
    model_region: Callable[[], int] | None = None  # a new fd of that backend's sealed model bytes, at each start

    def hide(self, text: str) -> str:
        return hide(text, self.hidden_prefix)

    async def initialize(self, awaitable: Awaitable[_T], timeout_s: float) -> _T:
        """Start-up (loading model.py and initialize) within the stub timeout.

        Raises:
            UnavailableError: it did not finish in time.
        """
        return await within(awaitable, timeout_s, f"model instance '{self.instance_name}' did not initialize in time")

    def initialize_failed(self, error: str, trace: str) -> SeawallError:
        """Loading model.py or initialize() failed with `error` ("<type>: <text>"); `trace` goes to the log."""
        logger.error("model instance '%s': initialization failed:\n%s", self.instance_name, trace)
        return InternalError(f"Failed to initialize model instance '{self.instance_name}': {self.hide(error)}")

    def batch_failed(self, error: str, trace: str) -> InternalError:
        """execute() raised (`trace`: logged) or returned something unusable (`trace` empty)."""
        if trace:
            logger.error("model instance '%s': execute failed:\n%s", self.instance_name, trace)
        return InternalError(
            f"Failed to process the request(s) for model '{self.instance_name}', message: {self.hide(error)}"
        )

    def response_error(self, code: object, text: str) -> SeawallError:
        """The error a model returned in one response (pb_utils.TritonError code and message)."""
        if isinstance(code, int) and type(code) is not bool and 0 <= code < len(_TRITON_ERROR_CODES):
            return error_for_code(_TRITON_ERROR_CODES[code], self.hide(text))
        return error_for_code(Code.INTERNAL, self.hide(text))

    def response(
        self,
        request: InferRequest,
        outputs: Iterable[tuple[str, str, np.ndarray]],
        parameters: object = None,
    ) -> InferResponse | SeawallError:
        """The response to `request` from the model's (owned) outputs and parameters (from model code: checked
        here), or the first that breaks the config."""
        tensors: list[Tensor] = []
        failure: SeawallError | None = None
        for name, datatype, array in outputs:
            datatype, failure = self._check_output(name, datatype, failure)
            tensors.append(Tensor(name, datatype, array.shape, array))
        if failure is not None:
            return failure
        if parameters:
            checked = _response_parameters(parameters, self.model_name)
            if isinstance(checked, SeawallError):
                return checked
            return InferResponse(self.model_name, self.model_version, tensors, id=request.id, parameters=checked)
        return InferResponse(self.model_name, self.model_version, tensors, id=request.id)

    def _check_output(self, name: str, datatype: str, failure: SeawallError | None) -> tuple[str, SeawallError | None]:
        """The datatype to report (UINT16 bits are BF16 when configured so) and the first output the config
        does not declare. A datatype other than the config's is reported as it is (Triton checks none: NVIDIA's
        bls_decoupled example answers INT64 for an INT32 output)."""
        if not self.output_types or failure is not None:
            return datatype, failure
        expected = self.output_types.get(name)
        if expected is None:
            return datatype, InternalError(f"unexpected inference output '{name}' for model '{self.model_name}'")
        if expected == "BF16" and datatype == "UINT16":
            return "BF16", None
        return datatype, None  # another datatype than the config's goes out as the model made it, as in Triton


#: Bounds of a response's parameters set by model code (pb_utils.InferenceResponse(parameters=...)).
MAX_RESPONSE_PARAMETERS = 64
MAX_RESPONSE_PARAMETER_CHARS = 4096


def _response_parameters(parameters: object, model_name: str) -> dict[str, ParamValue] | SeawallError:
    """A response's parameters as the model set them, or why they cannot be sent (an untrusted stub's too)."""
    bad = InternalError(
        f"model '{model_name}' set response parameters that are not {MAX_RESPONSE_PARAMETERS} or fewer string keys "
        f"with bool, int, float or string values of at most {MAX_RESPONSE_PARAMETER_CHARS} characters"
    )
    if not isinstance(parameters, dict) or len(parameters) > MAX_RESPONSE_PARAMETERS:
        return bad
    checked: dict[str, ParamValue] = {}
    for key, value in parameters.items():
        if type(key) is not str or not key or len(key) > MAX_RESPONSE_PARAMETER_CHARS:
            return bad
        if type(value) is str and len(value) <= MAX_RESPONSE_PARAMETER_CHARS:
            checked[key] = value
        elif type(value) is bool or type(value) is int or (type(value) is float and math.isfinite(value)):
            checked[key] = value
        else:
            return bad
    return checked


def request_header(request: InferRequest, inputs: list[ipc.Descriptor]) -> RequestHeader:
    """Everything of a request but its tensor bytes (`inputs`: where they lie, or [] in process)."""
    parameters = request.parameters
    outputs = [output.name for output in request.outputs] if request.outputs else []
    if not parameters:  # most requests: no sequence, no custom parameters (a fresh dict: the model may change it)
        return tuple.__new__(RequestHeader, (request.id, inputs, outputs, 0, 0, {}))  # no Python-level __new__
    flags = (1 if parameters.get("sequence_start") else 0) | (2 if parameters.get("sequence_end") else 0)
    correlation_id = parameters.get("sequence_id", 0)
    custom: dict[str, object] = {k: v for k, v in parameters.items() if k not in _RESERVED_PARAMETERS}
    return RequestHeader(
        request.id,
        inputs,
        outputs,
        correlation_id if type(correlation_id) is int or type(correlation_id) is str else 0,
        flags,
        custom,
    )
