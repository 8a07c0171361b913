"""Request bodies and JSON replies of Triton's HTTP protocol extensions: model repository, shared memory,
trace settings and log settings.

Imports `core.types`, `errors`, `options` and `codec`; pure functions, no IO. Client mistakes are 400
(Triton answers several of them with 500; docs/differences.md lists each), oversized file overrides 413.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from seawall.core.types import ModelIndexEntry, SharedMemoryRegionStatus
from seawall.errors import InvalidArgumentError, ResourceExhaustedError
from seawall.frontends.http.json_body import load_json
from seawall.options import Limits

#: Triton's messages for JSON values of the wrong type (its JSON layer's wording, answered with 500 there).
NOT_A_STRING = "attempt to access JSON non-string as string"
NOT_A_BOOLEAN = "attempt to access JSON non-boolean as boolean"
NOT_AN_UNSIGNED = "attempt to access JSON non-unsigned-integer as unsigned-integer"
_FILE_PREFIX = "file:"
_MAX_UINT64 = 2**64 - 1


@dataclass(frozen=True, slots=True)
class LoadRequest:
    """What a load request asks for: an optional JSON config and optional override files."""

    config: str | None = None
    files: dict[str, bytes] | None = None


@dataclass(frozen=True, slots=True)
class ShmRegistration:
    """The body of a system shared memory register request."""

    key: str
    offset: int
    byte_size: int


def _object(body: bytes, limits: Limits, *, required: bool) -> dict[str, Any]:
    """The body as a JSON object; an empty body is `{}` unless `required`.

    Raises:
        InvalidArgumentError: malformed JSON, too deep, empty when required, or not an object.
    """
    if not body and not required:
        return {}
    document = load_json(body, limits.max_json_depth)
    if not isinstance(document, dict):
        raise InvalidArgumentError("failed to parse the request JSON buffer: expected a JSON object")
    return document


def _is_uint(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _MAX_UINT64


def _parameters(document: dict[str, Any]) -> dict[str, Any]:
    parameters = document.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidArgumentError("Unable to parse 'parameters': expected a JSON object")
    return parameters


# ------------------------------------------------------------------------------------------ repository


def index_ready(body: bytes, limits: Limits) -> bool:
    """The `ready` flag of an index request (absent = every model).

    Raises: InvalidArgumentError (malformed body, `ready` not a boolean).
    """
    ready = _object(body, limits, required=False).get("ready", False)
    if type(ready) is not bool:
        raise InvalidArgumentError(NOT_A_BOOLEAN)
    return ready


def index_json(entries: Sequence[ModelIndexEntry]) -> list[dict[str, str]]:
    """Index rows with only their non-empty fields, as Triton prints them (`{"name": "x"}` when never loaded)."""
    rows = []
    for entry in entries:
        row = {"name": entry.name}
        for key in ("version", "state", "reason"):
            value = getattr(entry, key)
            if value:
                row[key] = value
        rows.append(row)
    return rows


def load_request(body: bytes, limits: Limits) -> LoadRequest:
    """The config and `file:` overrides of a load request; base64 is decoded strictly, after a size check.

    Raises:
        InvalidArgumentError: unknown parameter, non-string value, invalid base64.
        ResourceExhaustedError: the encoded overrides are larger than `max_request_bytes`.
    """
    parameters = _parameters(_object(body, limits, required=False))
    config: str | None = None
    encoded: dict[str, str] = {}
    for key, value in parameters.items():
        if key != "config" and not key.startswith(_FILE_PREFIX):
            raise InvalidArgumentError(f"unrecognized load parameter '{key[:128]}'.")
        if not isinstance(value, str):
            raise InvalidArgumentError(f"invalid value type for load parameter '{key[:128]}': {NOT_A_STRING}")
        if key == "config":
            config = value
        else:
            encoded[key[len(_FILE_PREFIX) :]] = value
    total = sum(len(v) for v in encoded.values())
    if total > limits.max_request_bytes:
        raise ResourceExhaustedError(
            f"load parameter 'file:' overrides are larger than the limit of {limits.max_request_bytes} bytes"
        )
    files = {path: _decode_base64(path, text) for path, text in encoded.items()}
    return LoadRequest(config, files or None)


def _decode_base64(path: str, text: str) -> bytes:
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise InvalidArgumentError(
            f"load parameter '{_FILE_PREFIX}{path[:128]}' is not valid base64 (RFC 4648, no whitespace)"
        ) from None


def unload_dependents(body: bytes, limits: Limits) -> bool:
    """The `unload_dependents` parameter of an unload request (default false).

    Raises: InvalidArgumentError (malformed body, a value that is not a boolean).
    """
    value = _parameters(_object(body, limits, required=False)).get("unload_dependents", False)
    if type(value) is not bool:
        raise InvalidArgumentError(f"invalid value type for unload parameter 'unload_dependents': {NOT_A_BOOLEAN}")
    return value


# --------------------------------------------------------------------------------------- shared memory


def shm_registration(body: bytes, limits: Limits) -> ShmRegistration:
    """The key, offset and byte size of a system shared memory register request.

    Raises: InvalidArgumentError (malformed body, a missing field, or a field of the wrong type).
    """
    document = _object(body, limits, required=True)
    if "key" not in document:
        raise InvalidArgumentError("Shared memory register request has no 'key' field")
    if "byte_size" not in document:
        raise InvalidArgumentError("Shared memory register request has no 'byte_size' field")
    key, offset, byte_size = document["key"], document.get("offset", 0), document["byte_size"]
    if not isinstance(key, str):
        raise InvalidArgumentError(f"Unable to parse 'key': {NOT_A_STRING}")
    for name, value in (("offset", offset), ("byte_size", byte_size)):
        if not _is_uint(value):
            raise InvalidArgumentError(f"Unable to parse '{name}': {NOT_AN_UNSIGNED}")
    return ShmRegistration(key, offset, byte_size)


def shm_status_json(regions: Sequence[SharedMemoryRegionStatus]) -> list[dict[str, Any]]:
    return [{"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size} for r in regions]


# ------------------------------------------------------------------------------------ trace and logging


def trace_json(settings: Mapping[str, list[str]]) -> dict[str, Any]:
    """Trace settings as HTTP shows them: `trace_level` a list, every other setting one string."""
    return {k: list(v) if k == "trace_level" else (v[0] if v else "") for k, v in settings.items()}


def trace_changes(body: bytes, limits: Limits) -> dict[str, list[str] | None]:
    """A trace settings update: strings become one-element lists, arrays of strings stay, null clears.

    Raises: InvalidArgumentError (empty or malformed body, a value that is neither string, array of strings
    nor null).
    """
    changes: dict[str, list[str] | None] = {}
    for key, value in _object(body, limits, required=True).items():
        if value is None:
            changes[key] = None
        elif isinstance(value, str):
            changes[key] = [value]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            changes[key] = value
        else:
            raise InvalidArgumentError(f"Unable to parse '{key[:64]}': {NOT_A_STRING}")
    return changes


def log_changes(body: bytes, limits: Limits) -> dict[str, Any]:
    """A log settings update as JSON values; the core checks each type (null is skipped there).

    Raises: InvalidArgumentError (empty or malformed body, not an object).
    """
    return _object(body, limits, required=True)
