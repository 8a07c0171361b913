"""InferParameter maps of ModelInfer as plain values, checked the way Triton checks the keys it gives a meaning to
(request parameters, tensor parameters incl. the shared-memory keys, classification), and back.

Imports `core.types` and `errors`; pure functions, no IO, no grpc.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from seawall.core.types import ParamValue
from seawall.errors import InvalidArgumentError

_EMPTY_FINAL = "triton_enable_empty_final_response"
#: the tensor parameters of the shared-memory extension (the names the core reads) and their InferParameter kinds
SHM_REGION = "shared_memory_region"
SHM_OFFSET = "shared_memory_offset"
SHM_BYTE_SIZE = "shared_memory_byte_size"
_SHM_KINDS = {SHM_REGION: "string_param", SHM_OFFSET: "int64_param", SHM_BYTE_SIZE: "int64_param"}
_UINT64_MASK = 2**64 - 1


def param_value(name: str, param: Any) -> ParamValue:
    """The plain value of an InferParameter (bool, int64, string or double; uint64 only where allowed).

    Raises:
        InvalidArgumentError: the oneof is unset or holds uint64 for a custom key.
    """
    kind = param.WhichOneof("parameter_choice")
    if kind in ("bool_param", "int64_param", "string_param", "double_param"):
        value: ParamValue = getattr(param, kind)
        return value
    raise InvalidArgumentError(
        f"invalid value type for '{name}' parameter, expected int64_param, bool_param, or string_param."
    )


def _typed_param(name: str, param: Any, kinds: tuple[str, ...], end: str = ".") -> ParamValue:
    kind = param.WhichOneof("parameter_choice")
    if kind not in kinds:
        expected = " or ".join(kinds)
        raise InvalidArgumentError(f"invalid value type for '{name}' parameter, expected {expected}{end}")
    value: ParamValue = getattr(param, kind)
    return value


def request_parameters(params: Mapping[str, Any]) -> dict[str, ParamValue]:
    """Request-level parameters, checked the way Triton checks the keys it gives a meaning to.

    Raises:
        InvalidArgumentError: a reserved `triton_*` key, or a value of the wrong type for its key.
    """
    converted: dict[str, ParamValue] = {}
    for name, param in params.items():
        if name == "sequence_id":
            converted[name] = _typed_param(name, param, ("int64_param", "string_param"))
        elif name in ("sequence_start", "sequence_end", _EMPTY_FINAL):
            converted[name] = _typed_param(name, param, ("bool_param",))
        elif name == "priority":
            value = _typed_param(name, param, ("int64_param", "uint64_param"))
            if isinstance(value, int) and value < 0:
                raise InvalidArgumentError("invalid value for 'priority', expected value >= 0.")
            converted[name] = value
        elif name == "timeout":
            converted[name] = _typed_param(name, param, ("int64_param",))
        elif name.startswith("triton_"):
            raise InvalidArgumentError(
                "parameter keys starting with 'triton_' are reserved for Triton usage. Only the following "
                f"keys starting with 'triton_' are allowed: {_EMPTY_FINAL}"
            )
        else:
            converted[name] = param_value(name, param)
    return converted


def _shm_parameter(key: str, tensor: str, param: Any, kind: str) -> ParamValue:
    if param.WhichOneof("parameter_choice") != kind:
        raise InvalidArgumentError(f"invalid value type for '{key}' parameter for tensor '{tensor}', expected {kind}.")
    value: ParamValue = getattr(param, kind)
    if isinstance(value, int):
        # Triton reads the int64 as an unsigned size: a negative offset is a huge one, refused by the bounds check
        value &= _UINT64_MASK
    return value


def tensor_parameters(name: str, params: Mapping[str, Any]) -> dict[str, ParamValue]:
    """Tensor parameters; the shared-memory keys are type-checked and must come together as Triton requires.

    Raises:
        InvalidArgumentError: a shared-memory key of the wrong type, or one without the others it needs.
    """
    converted: dict[str, ParamValue] = {}
    for key, param in params.items():
        kind = _SHM_KINDS.get(key)
        converted[key] = param_value(key, param) if kind is None else _shm_parameter(key, name, param, kind)
    if SHM_REGION in converted:
        if SHM_BYTE_SIZE not in converted:
            raise InvalidArgumentError(
                f"'{SHM_BYTE_SIZE}' must be specified along with '{SHM_REGION}' parameter for tensor '{name}'"
            )
    else:
        for key in (SHM_OFFSET, SHM_BYTE_SIZE):
            if key in converted:
                raise InvalidArgumentError(
                    f"'{key}' can not be specified without '{SHM_REGION}' parameter for tensor '{name}'"
                )
    return converted


def output_parameters(name: str, params: Mapping[str, Any]) -> dict[str, ParamValue]:
    if "classification" in params:
        # Triton's text says ">= 0" but it refuses 0 as well
        value = _typed_param("classification", params["classification"], ("int64_param",), end="")
        if isinstance(value, int) and value <= 0:
            raise InvalidArgumentError("invalid value for 'classification' parameter, expected >= 0")
    return tensor_parameters(name, params)


def set_parameters(target: Any, params: Mapping[str, ParamValue]) -> None:
    """Fill a protobuf map<string, InferParameter> from plain values (bool before int: bool is an int)."""
    for key, value in params.items():
        param = target[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            if value > 0x7FFFFFFFFFFFFFFF:
                param.uint64_param = value
            else:
                param.int64_param = value
        elif isinstance(value, float):
            param.double_param = value
        else:
            param.string_param = str(value)
