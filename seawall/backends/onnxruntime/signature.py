"""An ONNX model's inputs and outputs, and what Triton does with them: auto-complete a config, or check one.

Imports `core.backend` (ModelConfig), `core.config_proto` and `errors`; never onnxruntime (`runtime.py` reads the
signature from a session; for auto-complete in a worker, which sends it as JSON: `describe` / `from_description`).
Messages are Triton onnxruntime backend's, word for word, so a config that disagrees with its model fails the same
way on both servers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from seawall.core.backend import ModelConfig
from seawall.core.config_proto import model_config_pb2
from seawall.errors import InternalError, InvalidArgumentError

logger = logging.getLogger(__name__)

#: onnxruntime's type strings → the config's data types (Triton's OnnxDataTypeToModelConfigDataType).
ONNX_TYPES = {
    "tensor(bool)": "TYPE_BOOL",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(uint16)": "TYPE_UINT16",
    "tensor(uint32)": "TYPE_UINT32",
    "tensor(uint64)": "TYPE_UINT64",
    "tensor(int8)": "TYPE_INT8",
    "tensor(int16)": "TYPE_INT16",
    "tensor(int32)": "TYPE_INT32",
    "tensor(int64)": "TYPE_INT64",
    "tensor(bfloat16)": "TYPE_BF16",
    "tensor(float16)": "TYPE_FP16",
    "tensor(float)": "TYPE_FP32",
    "tensor(double)": "TYPE_FP64",
    "tensor(string)": "TYPE_STRING",
}
_DESCRIBED_TYPES = frozenset((*ONNX_TYPES.values(), "TYPE_INVALID"))


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One input or output as the model declares it; dims -1 where variable (symbolic or unknown)."""

    name: str
    data_type: str  # TYPE_FP32, ...; TYPE_INVALID for what the config cannot express (sequences, maps)
    dims: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[TensorInfo, ...]  # the inputs a request must give
    initializers: tuple[TensorInfo, ...]  # overridable initializers: inputs a request may give
    outputs: tuple[TensorInfo, ...]


#: Bounds on a description a worker sends (`from_description`): far above any real model, far below harm.
MAX_DESCRIBED_TENSORS = 65536
MAX_DESCRIBED_DIMS = 64
MAX_NAME_CHARS = 4096
_KINDS = ("inputs", "initializers", "outputs")


def describe(signature: Signature) -> dict[str, object]:
    """`signature` as JSON-like data (a worker's answer to auto-complete)."""
    return {
        kind: [[info.name, info.data_type, list(info.dims)] for info in getattr(signature, kind)] for kind in _KINDS
    }


def from_description(description: object, model_name: str) -> Signature:
    """The Signature a worker described, checked field by field: the worker parsed an untrusted model, so its answer
    is untrusted too.

    Raises:
        InternalError: the description is not one `describe` writes (or exceeds the bounds above).
    """
    bad = InternalError(
        f"auto-complete of model '{model_name}' failed: the onnxruntime worker sent an invalid signature"
    )
    if type(description) is not dict or sorted(description) != sorted(_KINDS):
        raise bad
    kinds: list[tuple[TensorInfo, ...]] = []
    for kind in _KINDS:
        entries = description[kind]
        if type(entries) is not list or len(entries) > MAX_DESCRIBED_TENSORS:
            raise bad
        infos = []
        for entry in entries:
            if type(entry) is not list or len(entry) != 3:
                raise bad
            name, data_type, dims = entry
            if type(name) is not str or not 0 < len(name) <= MAX_NAME_CHARS or type(dims) is not list:
                raise bad
            if data_type not in _DESCRIBED_TYPES or len(dims) > MAX_DESCRIBED_DIMS:
                raise bad
            if any(type(dim) is not int or not -1 <= dim < 2**63 for dim in dims):
                raise bad
            infos.append(TensorInfo(name, data_type, tuple(dims)))
        kinds.append(tuple(infos))
    return Signature(*kinds)


def tensor_info(name: str, ort_type: str, shape: Sequence[object]) -> TensorInfo:
    dims = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in shape)
    return TensorInfo(name, ONNX_TYPES.get(ort_type, "TYPE_INVALID"), dims)


def _shape(dims: Sequence[int]) -> str:
    return "[" + ",".join(str(dim) for dim in dims) + "]"


def _runtime_type(data_type: str) -> str:
    """How Triton names a model's type in its messages (TRITONSERVER_DataTypeString: STRING is BYTES)."""
    return "TYPE_BYTES" if data_type == "TYPE_STRING" else data_type


def auto_complete(config: ModelConfig, signature: Signature, default_max_batch_size: int) -> ModelConfig:
    """Triton's AutoCompleteConfig: max_batch_size (and dynamic batching) from a variable first dimension of every
    input and output, then inputs or outputs the config does not list. A config that lists both is left as is.

    Raises:
        InvalidArgumentError: the model cannot batch but the config sets max_batch_size (Triton's message).
    """
    result = ModelConfig()
    result.CopyFrom(config)
    if not result.platform:  # Triton's backend fields: both names, whichever the config gave
        result.platform = "onnxruntime_onnx"
    if not result.backend:
        result.backend = "onnxruntime"
    if result.input and result.output:
        logger.info(
            "skipping model configuration auto-complete for '%s': inputs and outputs already specified", config.name
        )
        return result
    infos = (*signature.inputs, *signature.outputs)
    if all(info.dims and info.dims[0] == -1 for info in infos):
        if result.max_batch_size == 0:
            result.max_batch_size = max(default_max_batch_size, 0)
            logger.warning(
                "autofilled max_batch_size to %d for model '%s' since batching is supported but no max_batch_size "
                "is specified in model configuration. Must specify max_batch_size to utilize autofill with a "
                "larger max batch size",
                result.max_batch_size,
                config.name,
            )
        if result.max_batch_size > 1 and result.WhichOneof("scheduling_choice") is None:
            result.dynamic_batching.SetInParent()
    elif result.max_batch_size != 0:
        raise InvalidArgumentError(
            f"autofill failed for model '{config.name}': model does not support batching while non-zero "
            "max_batch_size is specified"
        )
    batching = result.max_batch_size > 0
    if not result.input:
        _fill(result.input, signature.inputs, batching)
    if not result.output:
        _fill(result.output, signature.outputs, batching)
    return result


def _fill(target: object, infos: Sequence[TensorInfo], batching: bool) -> None:
    for info in infos:
        tensor = target.add()  # type: ignore[attr-defined]
        tensor.name = info.name
        tensor.data_type = model_config_pb2.DataType.Value(info.data_type)
        dims = info.dims[1:] if batching else info.dims
        tensor.dims.extend(dims or (1,))
        if not dims and batching:  # a scalar of each batch element: the model sees shape [batch]
            tensor.reshape.SetInParent()


def check(config: ModelConfig, signature: Signature) -> None:
    """Triton's ValidateInputs / ValidateOutputs: the config must describe the model.

    Raises:
        InvalidArgumentError: with Triton's message.
    """
    name = config.name
    expected = sum(1 for tensor in config.input if not tensor.optional)
    if len(signature.inputs) != expected:
        raise InvalidArgumentError(
            f"unable to load model '{name}', configuration expects {expected} inputs, model provides "
            f"{len(signature.inputs)}"
        )
    inputs = {info.name: info for info in (*signature.inputs, *signature.initializers)}
    for tensor in config.input:
        if tensor.optional and config.max_batch_size != 0:
            raise InvalidArgumentError(
                f"unable to load model '{name}', optional input '{tensor.name}' is not supported for models that "
                "support batching"
            )
        if tensor.name not in inputs:
            raise InvalidArgumentError(
                f"unexpected inference input '{tensor.name}', allowed inputs are: {', '.join(sorted(inputs))}"
            )
        _check_tensor(config, tensor, inputs[tensor.name], "input", exact=False)
    outputs = {info.name: info for info in signature.outputs}
    for tensor in config.output:
        if tensor.name not in outputs:
            raise InvalidArgumentError(
                f"unexpected inference output '{tensor.name}', allowed outputs are: {', '.join(sorted(outputs))}"
            )
        _check_tensor(config, tensor, outputs[tensor.name], "output", exact=True)


def _check_tensor(config: ModelConfig, tensor: object, info: TensorInfo, kind: str, exact: bool) -> None:
    name = config.name
    io_name: str = tensor.name  # type: ignore[attr-defined]
    io_type = model_config_pb2.DataType.Name(tensor.data_type)  # type: ignore[attr-defined]
    if io_type != info.data_type:
        raise InvalidArgumentError(
            f"unable to load model '{name}', configuration expects datatype {io_type} for {kind} '{io_name}', "
            f"model provides {_runtime_type(info.data_type)}"
        )
    reshaped = tensor.HasField("reshape")  # type: ignore[attr-defined]
    dims = tuple(tensor.reshape.shape if reshaped else tensor.dims)  # type: ignore[attr-defined]
    if not info.dims:
        if any(dim != 1 for dim in dims):
            raise InvalidArgumentError(
                f"unable to load model '{name}', scalar tensor '{io_name}', should only provide 1 in the model "
                f"configuration when the model doesn't support batching. Model configuration provided: "
                f"{_shape(dims)}."
            )
        return
    _compare_dims(name, io_name, info.dims, dims, config.max_batch_size, exact)


def _compare_dims(
    name: str, io_name: str, model: tuple[int, ...], dims: tuple[int, ...], max_batch_size: int, exact: bool
) -> None:
    """Triton's CompareDimsSupported (onnxruntime backend)."""
    if max_batch_size > 0:
        if not model or model[0] != -1:
            raise InvalidArgumentError(
                f"model '{name}', tensor '{io_name}': for the model to support batching the shape should have at "
                "least 1 dimension and the first dimension must be -1; but shape expected by the model is "
                f"{_shape(model)}"
            )
        full = (-1, *dims)
        if not _dims_match(model, full, exact):
            raise InvalidArgumentError(
                f"model '{name}', tensor '{io_name}': the model expects {len(model)} dimensions (shape "
                f"{_shape(model)}) but the model configuration specifies {len(full)} dimensions (an initial batch "
                "dimension because max_batch_size > 0 followed by the explicit tensor shape, making complete shape "
                f"{_shape(full)})"
            )
    elif not _dims_match(model, dims, exact):
        raise InvalidArgumentError(
            f"model '{name}', tensor '{io_name}': the model expects {len(model)} dimensions (shape {_shape(model)}) "
            f"but the model configuration specifies {len(dims)} dimensions (shape {_shape(dims)})"
        )


def _dims_match(model: tuple[int, ...], dims: tuple[int, ...], exact: bool) -> bool:
    if len(model) != len(dims):
        return False
    return all(m == d for m, d in zip(model, dims, strict=True) if exact or m != -1)
