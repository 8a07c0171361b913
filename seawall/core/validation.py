"""Checks an inference request against a model's compiled spec before it is queued.

Imports `core.model_config`, `core.types`, `errors`. Messages follow Triton 2.51 word for word,
since clients and tests match on them.
"""

from __future__ import annotations

from collections.abc import Iterable

from seawall.core.model_config import ModelSpec
from seawall.core.types import InferRequest
from seawall.errors import InvalidArgumentError

_BATCH_NOTE = (
    "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension to be prepended "
    "to each input shape. If you want to specify the full shape including the batch dim in your input dims "
    "config, try setting max_batch_size to zero. See the model configuration docs for more info on "
    "max_batch_size."
)


def _names(names: Iterable[str]) -> str:
    return "[" + ",".join(f"'{n}'" for n in names) + "]"


def _dims(dims: Iterable[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def check_request(request: InferRequest, spec: ModelSpec) -> int:
    """Validate inputs and requested outputs; return the request's batch size (1 for non-batching models).

    Raises:
        InvalidArgumentError: with Triton's message for the first problem found.
    """
    model = spec.name
    given = [t.name for t in request.inputs]
    seen: set[str] = set()
    for name in given:  # Triton refuses duplicates as it adds inputs, before any other check
        if name in seen:
            raise InvalidArgumentError(f"{_prefix(request)}input '{name}' already exists in request")
        seen.add(name)
    _check_count(request, model, spec, given)
    for name in given:
        if name not in spec.inputs:
            raise InvalidArgumentError(f"unexpected inference input '{name}' for model '{model}'")
    if not spec.required_inputs <= seen:
        _raise_count(request, model, spec, given)
    batch_size = _check_batch(spec, request)
    for tensor in request.inputs:
        io = spec.inputs[tensor.name]
        if tensor.datatype != io.datatype:
            raise InvalidArgumentError(
                f"{_prefix(request)}inference input '{tensor.name}' data-type is '{tensor.datatype}', "
                f"but model '{model}' expects '{io.datatype}'"
            )
        dims = tensor.shape[1:] if spec.max_batch_size > 0 else tensor.shape
        if dims != io.dims and (  # the same dims: the common case, no generator
            len(dims) != len(io.dims) or any(e != -1 and e != d for e, d in zip(io.dims, dims, strict=True))
        ):
            expected = ((-1,) if spec.max_batch_size > 0 else ()) + io.dims
            note = _BATCH_NOTE if spec.max_batch_size > 0 else ""  # Triton 2.51: whatever the rank
            raise InvalidArgumentError(
                f"{_prefix(request)}unexpected shape for input '{tensor.name}' for model '{model}'. "
                f"Expected {_dims(expected)}, got {_dims(tensor.shape)}. {note}"
            )
    for output in request.outputs:
        if output.name not in spec.outputs:
            raise InvalidArgumentError(f"unexpected inference output '{output.name}' for model '{model}'")
    return batch_size


def _prefix(request: InferRequest) -> str:
    """What Triton's messages about a request begin with (made only for an error)."""
    return f"[request id: {request.id or '<id_unknown>'}] "


def _check_count(request: InferRequest, model: str, spec: ModelSpec, given: list[str]) -> None:
    if len(spec.required_inputs) <= len(given) <= len(spec.inputs):
        return
    _raise_count(request, model, spec, given)


def _raise_count(request: InferRequest, model: str, spec: ModelSpec, given: list[str]) -> None:
    missing = [n for n in spec.input_order if n in spec.required_inputs and n not in given]
    if len(spec.required_inputs) == len(spec.inputs):
        expected = f"expected {len(spec.inputs)} inputs"
    else:
        expected = f"expected number of inputs between {len(spec.required_inputs)} and {len(spec.inputs)}"
    raise InvalidArgumentError(
        f"{_prefix(request)}{expected} but got {len(given)} inputs for model '{model}'. Got input(s) {_names(given)}, "
        f"but missing required input(s) {_names(missing)}. Please provide all required input(s)."
    )


def _check_batch(spec: ModelSpec, request: InferRequest) -> int:
    if spec.max_batch_size <= 0:
        return 1
    batch = -1
    for tensor in request.inputs:
        if not tensor.shape:
            raise InvalidArgumentError(
                f"{_prefix(request)}unexpected shape for input '{tensor.name}' for model '{spec.name}'. "
                f"Expected {_dims((-1,) + spec.inputs[tensor.name].dims)}, got []. {_BATCH_NOTE}"
            )
        if batch == -1:
            batch = tensor.shape[0]
        elif tensor.shape[0] != batch:
            raise InvalidArgumentError(
                f"{_prefix(request)}input '{tensor.name}' batch size does not match other inputs for '{spec.name}'"
            )
    if batch > spec.max_batch_size:
        raise InvalidArgumentError(
            f"{_prefix(request)}inference request batch-size must be <= {spec.max_batch_size} for '{spec.name}'"
        )
    return max(batch, 0)
