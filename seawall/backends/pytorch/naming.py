"""How a TorchScript model's config maps onto `forward()`: Triton's naming conventions, datatypes and parameters.

Imports `core.backend` (ModelConfig), `core.config_proto` and `errors`; never torch (`runtime.py` reads the
`forward` schema and hands it here as (argument name, kind) pairs). Messages are Triton pytorch backend's.

Inputs: a single `Dict[str, Tensor]` argument gets every input under its config name; otherwise config names that
are all `forward()` argument names map by name, names of the form `<name>__<index>` map by index, and anything else
maps in config order. Outputs: `<name>__<index>` picks that element of the returned tuple, otherwise config order.
TYPE_STRING inputs and outputs are `List[str]` (`STRING_ARGUMENT`); Seawall refuses at load a string input bound to
a Tensor argument (and the reverse), which Triton only reports at each inference.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from seawall.backends.model_files import triton_bool
from seawall.core.backend import ModelConfig
from seawall.core.config_proto import model_config_pb2
from seawall.errors import InternalError, InvalidArgumentError

logger = logging.getLogger(__name__)

#: config datatypes a TorchScript tensor can have (Triton's ModelConfigDataTypeToTorchType)
TORCH_TYPES = ("BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "BF16", "FP32", "FP64")
#: TYPE_STRING tensors are not tensors in TorchScript: `forward()` takes and returns them as List[str] (one flat list
#: of the tensor's elements, 1 dimension only, as Triton's pytorch backend)
STRING_ARGUMENT = "List[str]"
#: Triton's parameters this backend applies; CPU no-ops are parsed and accepted as Triton accepts them
BOOL_PARAMETERS = ("DISABLE_OPTIMIZED_EXECUTION", "INFERENCE_MODE", "ENABLE_CACHE_CLEANING", "DISABLE_CUDNN")
INT_PARAMETERS = ("INTRA_OP_THREAD_COUNT", "INTER_OP_THREAD_COUNT")
#: Seawall's own parameter: "true" runs the model on threads of the server instead of worker processes (isolated.py)
IN_PROCESS = "SEAWALL_IN_PROCESS"


@dataclass(frozen=True, slots=True)
class TorchSettings:
    optimized_execution: bool = True
    inference_mode: bool = True
    intra_op_threads: int = 0  # 0: torch's default
    inter_op_threads: int = 0


@dataclass(frozen=True, slots=True)
class Binding:
    """Where each config input goes (`dict_input`: by name into one dict; else the argument position) and which
    element of the result each config output is."""

    dict_input: bool
    inputs: tuple[tuple[str, int], ...]  # (config name, forward() position); positions 0..n-1
    outputs: tuple[tuple[str, int], ...]  # (config name, index into the returned tuple)


def parse_settings(config: ModelConfig) -> TorchSettings:
    """Raises: InvalidArgumentError for an unknown parameter (named) or a value Triton refuses."""
    params = {key: value.string_value for key, value in config.parameters.items()}
    for key in sorted(params):
        if key not in BOOL_PARAMETERS and key not in INT_PARAMETERS and key != IN_PROCESS:
            raise InvalidArgumentError(
                f"parameter '{key[:128]}' of model '{config.name}' is not supported by the pytorch backend "
                f"(supported: {', '.join((*BOOL_PARAMETERS, *INT_PARAMETERS))})"
            )
    flags = {key: triton_bool(params[key]) for key in BOOL_PARAMETERS if key in params}
    counts = {key: _int(params[key]) for key in INT_PARAMETERS if key in params}
    return TorchSettings(
        optimized_execution=not flags.get("DISABLE_OPTIMIZED_EXECUTION", False),
        inference_mode=flags.get("INFERENCE_MODE", True),
        intra_op_threads=max(counts.get("INTRA_OP_THREAD_COUNT", 0), 0),
        inter_op_threads=max(counts.get("INTER_OP_THREAD_COUNT", 0), 0),
    )


def bind(config: ModelConfig, arguments: Sequence[tuple[str, str]]) -> Binding:
    """Match the config to `forward()`'s arguments (name, kind: TensorType, DictType, ...; a list argument's kind is
    its whole type, e.g. "List[str]"; `self` excluded) as Triton does.

    Raises:
        InvalidArgumentError / InternalError: with Triton's message (and code).
    """
    name = config.name
    dict_input = len(arguments) == 1 and arguments[0][1] == "DictType"
    allowed: list[str] = []
    if not dict_input:
        if any(kind == "DictType" for _, kind in arguments):
            raise InternalError(
                "Multiple inputs of kind DictType were detected. Only a single input of type Dict(str, Tensor) is "
                "supported."
            )
        for argument, kind in arguments:
            if kind != "TensorType" and not kind.startswith("List["):
                raise InternalError(
                    f"An input of type '{kind}' was detected in the model. Only a single input of type "
                    "Dict(str, Tensor) or input(s) of type Tensor are supported."
                )
            allowed.append(argument)
        if len(arguments) != len(config.input):
            raise InvalidArgumentError(
                f"unable to load model '{name}', configuration expects {len(config.input)} inputs, model provides "
                f"{len(arguments)}"
            )
    if not config.input:
        raise InternalError("model configuration must contain at least one input, none were specified.")
    if not config.output:
        raise InternalError("model configuration must contain at least one output, none were specified.")
    for kind, tensors in (("input", config.input), ("output", config.output)):
        for tensor in tensors:
            _check_datatype(config, tensor, kind)
    input_names = [tensor.name for tensor in config.input]
    if dict_input:
        inputs = [(n, i) for i, n in enumerate(input_names)]
    elif all(n in allowed for n in input_names):
        inputs = [(n, allowed.index(n)) for n in input_names]
    elif _named_index(input_names):
        inputs = [(n, _index(n)) for n in input_names]
    else:
        logger.warning(
            "inputs of model '%s' are neither arguments of forward() nor follow the <name>__<index> naming "
            "convention: their order in the model configuration is the order of forward()'s arguments",
            name,
        )
        inputs = [(n, i) for i, n in enumerate(input_names)]
    if not dict_input and sorted(i for _, i in inputs) != list(range(len(inputs))):
        raise InvalidArgumentError(
            f"unable to load model '{name}': the inputs' <name>__<index> indices must be 0 to {len(inputs) - 1}"
        )
    _check_string_arguments(config, dict_input, inputs, arguments)
    output_names = [tensor.name for tensor in config.output]
    if _named_index(output_names):
        outputs = [(n, _index(n)) for n in output_names]
    else:
        outputs = [(n, i) for i, n in enumerate(output_names)]
    return Binding(dict_input, tuple(inputs), tuple(outputs))


def _check_datatype(config: ModelConfig, tensor: object, kind: str) -> None:
    """Triton's datatype check, and its 1-dimension rule for TYPE_STRING (a List[str] is flat).

    Raises:
        InternalError: with Triton's message.
    """
    type_name = model_config_pb2.DataType.Name(tensor.data_type)  # type: ignore[attr-defined]
    io_name = tensor.name  # type: ignore[attr-defined]
    if type_name == "TYPE_STRING":
        reshaped = tensor.HasField("reshape")  # type: ignore[attr-defined]
        dims = tensor.reshape.shape if reshaped else tensor.dims  # type: ignore[attr-defined]
        if len(dims) + (1 if config.max_batch_size > 0 else 0) > 1:
            raise InternalError(
                f"Triton only supports 1 dimensional List of String as {kind} for '{io_name}' for model '{config.name}'"
            )
    elif type_name[len("TYPE_") :] not in TORCH_TYPES:
        raise InternalError(f"unsupported datatype {type_name} for {kind} '{io_name}' for model '{config.name}'")


def _check_string_arguments(
    config: ModelConfig, dict_input: bool, inputs: Sequence[tuple[str, int]], arguments: Sequence[tuple[str, str]]
) -> None:
    """A TYPE_STRING input goes to a List[str] argument and nothing else does (Triton finds out at each inference,
    "PyTorch execute failure: forward() Expected a value of type ...": Seawall refuses the load instead).

    Raises:
        InvalidArgumentError: the first input whose datatype and argument disagree.
    """
    is_string = {t.name: t.data_type == model_config_pb2.TYPE_STRING for t in config.input}
    for io_name, position in inputs:
        if dict_input:
            if is_string[io_name]:
                raise InvalidArgumentError(
                    f"input '{io_name}' of model '{config.name}' is TYPE_STRING, but forward() takes its inputs as "
                    "one Dict(str, Tensor): a TYPE_STRING input needs an argument of type List[str]"
                )
            continue
        argument, kind = arguments[position]
        if is_string[io_name] and kind != STRING_ARGUMENT:
            raise InvalidArgumentError(
                f"input '{io_name}' of model '{config.name}' is TYPE_STRING, but forward() takes argument "
                f"'{argument}' as {kind}: a TYPE_STRING input needs an argument of type List[str]"
            )
        if not is_string[io_name] and kind != "TensorType":
            raise InvalidArgumentError(
                f"input '{io_name}' of model '{config.name}' is "
                f"{model_config_pb2.DataType.Name(_datatype(config, io_name))}, but forward() takes argument "
                f"'{argument}' as {kind}: only TYPE_STRING inputs are passed as List[str]"
            )


def _datatype(config: ModelConfig, io_name: str) -> int:
    data_type: int = next(t.data_type for t in config.input if t.name == io_name)
    return data_type


def _named_index(names: Sequence[str]) -> bool:
    """Triton's check: every name has `__` and only digits after its first `__`."""
    return all("__" in n and all(c.isdigit() for c in n.split("__", 1)[1]) for n in names)


def _index(name: str) -> int:
    digits = name.split("__", 1)[1]
    return int(digits) if digits else 0


def _int(value: str) -> int:
    text = value.strip()
    sign = text[:1] if text[:1] in "+-" else ""
    digits = text[len(sign) :]
    end = len(digits) - len(digits.lstrip("0123456789"))
    if end == 0:
        raise InvalidArgumentError(f"failed to convert '{value[:64]}' to integral number")
    number = int(sign + digits[:end])
    if not -(2**31) <= number < 2**31:
        raise InvalidArgumentError(f"failed to convert '{value[:64]}' to integral number")
    return number
