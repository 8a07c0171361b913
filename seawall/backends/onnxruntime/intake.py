"""Safe intake of an ONNX model: find the file, bound its size, check its pins, and inline its external data.

Imports the `onnx` protobuf classes, `core.model_config` and `errors`; never onnxruntime. onnxruntime is only ever
handed the bytes this module returns, so it never opens a file itself: every external-data `location` of every
tensor (initializers, node attributes, subgraphs, functions) is checked here first — relative, no '..', and inside
the model's version directory once symlinks are resolved (the onnx external-data traversal class, CVE-2024-27318 /
CVE-2024-5187) — then read by this module, checked against the checksum pins and copied into the tensor.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from google.protobuf.message import DecodeError, Message
from onnx import ModelProto, TensorProto

from seawall.backends.model_files import locate_model_file, read_bounded, verify_pins
from seawall.errors import InvalidArgumentError

#: What Triton looks for inside a `model.onnx/` directory.
DIRECTORY_MODEL = "model.onnx"
#: A serialized ModelProto cannot be larger (protobuf's limit); --max-model-size cannot raise it.
PROTOBUF_LIMIT = (1 << 31) - 1


@dataclass(frozen=True, slots=True)
class ModelBytes:
    """A model ready for onnxruntime: the serialized ModelProto with every external tensor inlined."""

    data: bytes
    relative_path: str  # the model file, relative to the model directory (for messages and logs)
    external_files: tuple[str, ...]  # external-data files read, relative to the model directory


def locate(model_dir: str, version_dir: str, filename: str, model_name: str) -> str:
    """The model file: `<version>/<filename>`, or `<version>/<filename>/model.onnx` when that is a directory.

    Raises:
        InvalidArgumentError: the name leaves the version directory (absolute, '..', a symlink out).
        UnavailableError-like InvalidArgumentError: the file does not exist (Triton's "unable to find").
    """
    path, relative = locate_model_file(model_dir, version_dir, filename, model_name, DIRECTORY_MODEL)
    _confined(path, os.path.realpath(version_dir), relative, model_name, "model file")  # and a regular file
    return path


def read_model(
    path: str, model_dir: str, version_dir: str, pins: Sequence[dict[str, str]], limit: int, model_name: str
) -> ModelBytes:
    """Read the model at `path` (from `locate`) and every external-data file it names, inlining them.

    `pins` are the model's checksum pin sets (`model_config.checksum_pins`): every file read must match each set
    that is given. `limit` bounds the model file and its external files together, in bytes.

    Raises:
        InvalidArgumentError: too large, not an ONNX model, a location outside the version directory, a missing
            or short external file, or a file that does not match its pin. Messages name files relative to the
            model directory, never a server path.
    """
    root = os.path.realpath(version_dir)
    relative = os.path.relpath(path, model_dir)
    budget = min(limit, PROTOBUF_LIMIT)
    data = read_bounded(os.path.realpath(path), budget, relative, model_name)
    verify_pins(data, relative, pins, model_name)
    model = ModelProto()
    invalid = InvalidArgumentError(f"model file '{relative}' of model '{model_name}' is not a valid ONNX model")
    try:
        model.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError):
        raise invalid from None
    if not model.HasField("graph"):
        raise invalid
    budget -= len(data)
    files: dict[str, bytes] = {}
    base = os.path.dirname(path)
    for tensor in _external_tensors(model):
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        target = _external_path(location, base, root, model_dir, model_name)
        key = os.path.relpath(target, model_dir)
        if key not in files:
            content = read_bounded(os.path.realpath(target), budget, key, model_name)
            verify_pins(content, key, pins, model_name)
            budget -= len(content)
            files[key] = content
        tensor.raw_data = _slice(files[key], entries, key, tensor.name, model_name)
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT
    if not files:
        return ModelBytes(data, relative, ())
    try:
        inlined = model.SerializeToString()
    except ValueError:
        raise InvalidArgumentError(f"model '{model_name}' is larger than {PROTOBUF_LIMIT} bytes") from None
    return ModelBytes(inlined, relative, tuple(sorted(files)))


def _external_tensors(message: Message) -> Iterator[TensorProto]:
    """Every TensorProto inside `message` whose data is external, wherever it sits (depth first)."""
    stack: list[Message] = [message]
    while stack:
        current = stack.pop()
        if isinstance(current, TensorProto):
            if current.data_location == TensorProto.EXTERNAL or current.external_data:
                yield current
            continue
        for field, value in current.ListFields():
            if field.message_type is None:
                continue
            if field.message_type.GetOptions().map_entry:
                continue
            if field.is_repeated:
                stack.extend(value)
            else:
                stack.append(value)


def _external_path(location: str, base: str, root: str, model_dir: str, model_name: str) -> str:
    """The resolved file of an external-data `location` (relative to the model file's directory).

    Raises:
        InvalidArgumentError: empty, absolute, with '..', a NUL, or resolving (through symlinks) outside `root`.
    """
    shown = location[:128]
    parts = PurePosixPath(location.replace("\\", "/")).parts
    if not location or "\x00" in location or os.path.isabs(location) or location.startswith("\\") or ".." in parts:
        raise InvalidArgumentError(
            f"external data location '{shown}' of model '{model_name}' must be a relative path inside the model's "
            "version directory"
        )
    if len(parts) and ":" in parts[0]:  # a Windows drive ('C:...') is absolute there
        raise InvalidArgumentError(
            f"external data location '{shown}' of model '{model_name}' must be a relative path inside the model's "
            "version directory"
        )
    path = os.path.join(base, location)
    if not os.path.lexists(path):
        raise InvalidArgumentError(f"external data file '{shown}' of model '{model_name}' not found")
    _confined(path, root, shown, model_name, "external data location")
    return os.path.realpath(path)


def _confined(path: str, root: str, shown: str, model_name: str, what: str) -> None:
    """Refuse `path` unless it resolves, through any symlinks, to a regular file inside `root`."""
    real = os.path.realpath(path)
    if os.path.commonpath([real, root]) != root or real == root:
        raise InvalidArgumentError(
            f"{what} '{shown}' of model '{model_name}' resolves outside the model's version directory"
        )
    if not os.path.isfile(real):
        raise InvalidArgumentError(f"{what} '{shown}' of model '{model_name}' is not a regular file")


def _slice(content: bytes, entries: dict[str, str], shown: str, tensor: str, model_name: str) -> bytes:
    """The bytes of one tensor: `length` bytes at `offset` of its external file (the rest when no length)."""
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries["length"]) if "length" in entries else len(content) - offset
    except ValueError:
        raise InvalidArgumentError(
            f"external data of tensor '{tensor[:128]}' of model '{model_name}' has an invalid offset or length"
        ) from None
    if offset < 0 or length < 0 or offset + length > len(content):
        raise InvalidArgumentError(
            f"external data of tensor '{tensor[:128]}' of model '{model_name}' lies outside file '{shown}'"
        )
    return content[offset : offset + length]
