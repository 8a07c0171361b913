"""Model configuration: parse `config.pbtxt` into Triton's ModelConfig, fill defaults, validate, compile.

Imports protobuf, `core.types` and `errors`. A `ModelSpec` is the compiled, read-only view the request
validator uses on the hot path; the ModelConfig message itself is what `/config` returns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from seawall.core.config_features import backend_of, is_pinned, refuse_unsupported
from seawall.core.config_proto import ModelConfig, model_config_pb2
from seawall.errors import InvalidArgumentError

#: Backend name → its default model file name.
DEFAULT_MODEL_FILENAMES: Mapping[str, str] = {
    "python": "model.py",
    "onnxruntime": "model.onnx",
    "pytorch": "model.pt",
}
MAX_CONFIG_BYTES = 1 << 20


def api_datatype(data_type: int) -> str:
    """A config data type's protocol name: `TYPE_FP32` → `FP32`; `TYPE_STRING` → `BYTES`; TYPE_INVALID → ''."""
    name = str(model_config_pb2.DataType.Name(data_type))
    if name == "TYPE_STRING":
        return "BYTES"
    return "" if name == "TYPE_INVALID" else name[len("TYPE_") :]


@dataclass(frozen=True, slots=True)
class IOSpec:
    name: str
    datatype: str  # API name: FP32, BYTES, ...
    dims: tuple[int, ...]  # config dims, without the batch dimension
    optional: bool = False
    reshape: tuple[int, ...] | None = None  # the shape the model sees (`reshape`), without the batch dimension


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What request validation needs to know about a model, precomputed once per load."""

    name: str
    platform: str
    max_batch_size: int
    inputs: Mapping[str, IOSpec]
    outputs: Mapping[str, IOSpec]
    required_inputs: frozenset[str]
    input_order: tuple[str, ...]
    output_order: tuple[str, ...]
    decoupled: bool
    reshaped: bool = False  # an input or output has a `reshape` (core/reshape.py applies them)


def read_config(model_dir: str, config_name: str = "") -> ModelConfig | None:
    """Parse the model's configuration file; None when the model has none.

    `config_name` picks `<model>/configs/<name>.pbtxt` when that file exists.

    Raises:
        InvalidArgumentError: the file is not a valid ModelConfig text protobuf or is too large.
    """
    candidates = []
    if config_name:
        candidates.append(os.path.join(model_dir, "configs", f"{config_name}.pbtxt"))
    candidates.append(os.path.join(model_dir, "config.pbtxt"))
    for path in candidates:
        if not os.path.isfile(path):
            continue
        if os.path.getsize(path) > MAX_CONFIG_BYTES:
            raise InvalidArgumentError(f"model configuration '{os.path.basename(path)}' is too large")
        with open(path, "rb") as file:
            data = file.read()
        try:
            return text_format.Parse(data.decode("utf-8"), ModelConfig())
        except UnicodeDecodeError as exc:  # found by fuzzing (tests/fuzz): it escaped as a 500 / a reasonless load
            raise InvalidArgumentError(
                f"failed to parse model configuration: not UTF-8 text (byte {exc.start})"
            ) from None
        except text_format.ParseError as exc:
            raise InvalidArgumentError(f"failed to parse model configuration: {exc}") from None
    return None


def checksum_pins(config: ModelConfig) -> list[dict[str, str]]:
    """The SHA-256 pins of each `checksum` repository agent of `config`: relative path (normalized) → hex digest.

    An empty list means the model is not pinned. Backends verify the bytes they execute against these
    pins again when they read them, so a file changed after the agent ran is still refused.

    Raises:
        InvalidArgumentError: a pin with another algorithm, or a path outside the model directory.
    """
    sets: list[dict[str, str]] = []
    for agent in config.model_repository_agents.agents:
        if agent.name != "checksum":
            continue
        pins: dict[str, str] = {}
        for key, digest in agent.parameters.items():
            algorithm, _, relative = key.partition(":")
            if algorithm.upper() != "SHA256":
                raise InvalidArgumentError(
                    f"checksum agent: unsupported algorithm '{algorithm[:16]}' in '{key[:128]}' (use SHA256:<path>)"
                )
            if not relative or os.path.isabs(relative) or ".." in relative.replace("\\", "/").split("/"):
                raise InvalidArgumentError(
                    f"checksum agent: '{relative[:128]}' must be a path inside the model directory"
                )
            pins[os.path.normpath(relative)] = digest.lower()
        sets.append(pins)
    return sets


def complete_defaults(config: ModelConfig, name: str) -> None:
    """Fill the fields Triton's core fills whatever the backend (instance groups, policy, file name)."""
    if not config.name:
        config.name = name
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1
    if config.platform == "ensemble" or config.HasField("ensemble_scheduling"):
        return  # an ensemble has no backend, instances or file: Triton completes nothing more
    backend = backend_of(config)
    if not config.default_model_filename and backend in DEFAULT_MODEL_FILENAMES:
        config.default_model_filename = DEFAULT_MODEL_FILENAMES[backend]
    if not config.instance_group:
        group = config.instance_group.add()
        group.name = name
        group.count = 1
    for index, group in enumerate(config.instance_group):
        if not group.name:
            group.name = f"{name}_{index}"
        if group.kind == model_config_pb2.ModelInstanceGroup.KIND_AUTO:
            group.kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
        if group.count == 0:
            group.count = 1
    config.optimization.input_pinned_memory.enable = True
    config.optimization.output_pinned_memory.enable = True
    if config.HasField("dynamic_batching") and config.max_batch_size > 0:
        if not config.dynamic_batching.preferred_batch_size:
            config.dynamic_batching.preferred_batch_size.append(config.max_batch_size)


def validate(config: ModelConfig, name: str) -> None:
    """Refuse configurations Triton refuses, and the ones that would be unsafe to serve.

    Raises:
        InvalidArgumentError: with the reason, naming the field.
    """
    if config.name != name:
        raise InvalidArgumentError(f"model name '{config.name}' in configuration does not match directory '{name}'")
    if config.max_batch_size < 0:
        raise InvalidArgumentError("'max_batch_size' must be non-negative value")
    if not backend_of(config):
        raise InvalidArgumentError(f"unexpected platform type '' for {name}")
    if config.response_cache.enable and config.model_transaction_policy.decoupled:
        raise InvalidArgumentError(
            f"Response Cache does not currently support model {name} with 'decoupled' transaction policy. "
            "Please disable the response cache."
        )
    if config.response_cache.enable and config.HasField("sequence_batching"):
        raise InvalidArgumentError(
            f"Response Cache does not currently support model {name} with sequence batching scheduler. "
            "Please disable the response cache."
        )
    if config.model_operations.op_library_filename:
        raise InvalidArgumentError("'model_operations' (custom operation libraries) are not supported")
    refuse_unsupported(config)
    is_pinned(config)  # a value other than true/false fails the load
    _check_priorities(config)
    for group in config.instance_group:  # Seawall runs on CPUs only: Triton's message on a machine without GPUs
        if group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU:
            raise InvalidArgumentError(
                f"instance group {group.name} of model {name} has kind KIND_GPU but no GPUs are available"
            )
    for kind, tensors in (("input", config.input), ("output", config.output)):
        seen: set[str] = set()
        for tensor in tensors:
            if not tensor.name:
                raise InvalidArgumentError(f"model {kind} must specify 'name'")
            if tensor.name in seen:
                raise InvalidArgumentError(f"model {kind} '{tensor.name}' is declared more than once")
            seen.add(tensor.name)
            if not api_datatype(tensor.data_type):
                raise InvalidArgumentError(f"model {kind} '{tensor.name}' must specify 'data_type'")
            if any(dim < -1 for dim in tensor.dims):
                raise InvalidArgumentError(f"model {kind} '{tensor.name}' dimension must be integer >= -1")
            if tensor.HasField("reshape"):
                _check_reshape(kind, tensor.name, tuple(tensor.dims), tuple(tensor.reshape.shape), name)
    for output in config.output:
        _check_relative_path(output.label_filename, f"label_filename of output '{output.name}'")
    _check_relative_path(config.default_model_filename, "default_model_filename")


def _check_priorities(config: ModelConfig) -> None:
    """Triton's rules for the dynamic batcher's priority levels.

    Raises:
        InvalidArgumentError: with Triton's message.
    """
    batching = config.dynamic_batching
    levels = batching.priority_levels
    if not levels:
        return
    if not 1 <= batching.default_priority_level <= levels:
        raise InvalidArgumentError(f"default priority level must be in range [1, {levels}] for {config.name}")
    for level in batching.priority_queue_policy:
        if not 1 <= level <= levels:
            raise InvalidArgumentError(
                f"priority queue policy must have priority level in range [1, {levels}] for {config.name}"
            )


def _check_reshape(kind: str, tensor: str, dims: tuple[int, ...], shape: tuple[int, ...], model: str) -> None:
    """Triton's rule: the element counts of dims and reshape agree between (and around) their variable-size
    dimensions, which must be as many in both.

    Raises:
        InvalidArgumentError: with Triton's message.
    """
    if any(dim == 0 or dim < -1 for dim in shape):
        raise InvalidArgumentError(
            f"model {kind} '{tensor}' reshape dimensions must be integer >= 1, or -1 to indicate a variable-size "
            f"dimension for {model}"
        )
    dims_chunks, shape_chunks = _chunk_counts(dims), _chunk_counts(shape)
    if (-1 in dims) != (-1 in shape):
        raise InvalidArgumentError(f"model {kind} '{tensor}' has different size for dims and reshape for {model}")
    if len(dims_chunks) != len(shape_chunks):
        raise InvalidArgumentError(
            f"model {kind} '{tensor}' has different number of variable-size dimensions for dims and reshape for {model}"
        )
    if dims_chunks != shape_chunks:
        raise InvalidArgumentError(f"model {kind} '{tensor}' has different size for dims and reshape for {model}")


def _chunk_counts(dims: tuple[int, ...]) -> list[int]:
    """The element counts of the runs of fixed dimensions around each variable-size (-1) one."""
    counts, current = [], 1
    for dim in dims:
        if dim == -1:
            counts.append(current)
            current = 1
        else:
            current *= dim
    counts.append(current)
    return counts


def _check_relative_path(path: str, what: str) -> None:
    """A path from a config must stay inside the model directory: relative, no `..`."""
    if not path:
        return
    parts = path.replace("\\", "/").split("/")
    if os.path.isabs(path) or ".." in parts or "\x00" in path:
        raise InvalidArgumentError(f"{what} must be a relative path inside the model directory")


def compile_spec(config: ModelConfig) -> ModelSpec:
    """Build the read-only request-validation view of a completed, valid config."""
    inputs = {
        t.name: IOSpec(t.name, api_datatype(t.data_type), tuple(t.dims), t.optional, _reshape_of(t))
        for t in config.input
    }
    outputs = {
        t.name: IOSpec(t.name, api_datatype(t.data_type), tuple(t.dims), reshape=_reshape_of(t)) for t in config.output
    }
    return ModelSpec(
        name=config.name,
        platform=config.platform or backend_of(config),
        max_batch_size=config.max_batch_size,
        inputs=inputs,
        outputs=outputs,
        required_inputs=frozenset(n for n, spec in inputs.items() if not spec.optional),
        input_order=tuple(inputs),
        output_order=tuple(outputs),
        decoupled=config.model_transaction_policy.decoupled,
        reshaped=any(s.reshape is not None for s in (*inputs.values(), *outputs.values())),
    )


def _reshape_of(tensor: Any) -> tuple[int, ...] | None:
    """The `reshape` of a config input or output, None without one (or one that changes nothing)."""
    if not tensor.HasField("reshape"):
        return None
    shape = tuple(tensor.reshape.shape)
    return None if shape == tuple(tensor.dims) else shape


def config_to_dict(config: Message) -> dict[str, Any]:
    """The config as Triton prints it in JSON: every field present, enums as names, 64-bit ints as numbers."""
    data = json_format.MessageToDict(
        config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _int64_as_numbers(config, data)


_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def _int64_as_numbers(message: Message, data: dict[str, Any]) -> dict[str, Any]:
    """Rebuild `data` in the .proto declaration order (Triton's key order), with 64-bit ints as numbers."""
    ordered: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        key = field.name
        if key not in data:
            continue
        value, item = getattr(message, key), data[key]
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            if entry.fields_by_name["value"].message_type is not None:
                # JSON keys are text; a map keyed by integers (priority_queue_policy) is read by number
                as_key = str if entry.fields_by_name["key"].type == FieldDescriptor.TYPE_STRING else int
                item = {k: _int64_as_numbers(value[as_key(k)], v) for k, v in item.items()}
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.is_repeated:
                item = [_int64_as_numbers(m, d) for m, d in zip(value, item, strict=True)]
            else:
                item = _int64_as_numbers(value, item)
        elif field.type in _INT64_TYPES:
            item = [int(v) for v in item] if field.is_repeated else int(item)
        ordered[key] = item
    return ordered
