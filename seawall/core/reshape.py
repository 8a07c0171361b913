"""The config's `reshape`: the model sees its inputs in the reshaped form, clients see outputs in the wire form.

Imports `core.model_config` and `core.types`. As in Triton, each variable-size (-1) dimension of one form takes
the value of the variable-size dimension at the same position among the other form's; the batch dimension, if
any, is kept. Only models whose spec says `reshaped` come here (validated at load: `model_config`).
"""

from __future__ import annotations

from collections.abc import Mapping

from seawall.core.model_config import IOSpec, ModelSpec
from seawall.core.types import InferRequest, Tensor


def model_request(request: InferRequest, spec: ModelSpec) -> InferRequest:
    """`request` (already validated against the wire dims) with its reshaped inputs in the model's shape."""
    inputs = [_converted(t, spec.inputs[t.name], spec.max_batch_size > 0, to_model=True) for t in request.inputs]
    return InferRequest(
        request.model_name, inputs, request.model_version, request.id, request.outputs, request.parameters
    )


def wire_outputs(outputs: list[Tensor], spec: ModelSpec) -> list[Tensor]:
    """The model's `outputs` with the reshaped ones in the wire shape (config dims)."""
    return [_output(t, spec.outputs, spec.max_batch_size > 0) for t in outputs]


def _output(tensor: Tensor, specs: Mapping[str, IOSpec], batching: bool) -> Tensor:
    io = specs.get(tensor.name)
    return tensor if io is None else _converted(tensor, io, batching, to_model=False)


def _converted(tensor: Tensor, io: IOSpec, batching: bool, *, to_model: bool) -> Tensor:
    """`tensor` from one form to the other; unchanged when it has no reshape or does not have the source form
    (a model's output of another shape is passed on as the model made it)."""
    if io.reshape is None:
        return tensor
    source, target = (io.dims, io.reshape) if to_model else (io.reshape, io.dims)
    shape = tensor.shape[1:] if batching else tensor.shape
    if batching and not tensor.shape or len(shape) != len(source):
        return tensor
    if any(s != -1 and s != d for s, d in zip(source, shape, strict=True)):
        return tensor
    variable = iter([d for s, d in zip(source, shape, strict=True) if s == -1])
    new = tuple(next(variable) if t == -1 else t for t in target)
    if batching:
        new = (tensor.shape[0], *new)
    return Tensor(tensor.name, tensor.datatype, new, tensor.data.reshape(new), tensor.parameters)
