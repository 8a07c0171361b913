"""KServe v2 infer JSON and Triton's binary tensor extension ↔ core InferRequest / InferResponse.

Imports orjson, `core.types`, `errors` and `tensors`; pure functions, no IO. Every size and count
from the client is checked against `Limits` before numpy allocates anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

import seawall.core.offload as offload
from seawall.core.raw import checked_shape
from seawall.core.raw import decode as decode_raw
from seawall.core.raw import encode as encode_raw
from seawall.core.types import (
    ELEMENT_SIZES,
    NUMPY_DTYPES,
    InferRequest,
    InferResponse,
    ParamValue,
    RawInputSpec,
    RequestedOutput,
    Tensor,
    element_count,
)
from seawall.errors import InvalidArgumentError
from seawall.frontends.http import tensors as http_tensors
from seawall.frontends.http.json_body import load_json
from seawall.options import Limits
from seawall.security.parameters import check_parameter_count

MAX_UINT64 = 2**64 - 1
SHM_REGION, SHM_OFFSET, SHM_BYTE_SIZE = "shared_memory_region", "shared_memory_offset", "shared_memory_byte_size"
_SCALARS = (str, int, float, bool)
#: an empty infer body: Triton takes it for a raw binary request of 0 bytes (200 with empty outputs); Seawall refuses
EMPTY_BODY = (
    "the request body is empty: an inference request needs a JSON body, or raw tensor bytes with "
    "'Inference-Header-Content-Length: 0'"
)


@dataclass(slots=True)
class DecodedInfer:
    """A decoded request plus how its outputs must be encoded (binary or JSON)."""

    request: InferRequest
    binary_default: bool = False
    binary_outputs: dict[str, bool] = field(default_factory=dict)

    def __init__(
        self, request: InferRequest, binary_default: bool = False, binary_outputs: dict[str, bool] | None = None
    ) -> None:  # written out: compiled, where the dataclass's own is interpreted code
        self.request = request
        self.binary_default = binary_default
        self.binary_outputs = {} if binary_outputs is None else binary_outputs


def parse_header_length(value: str | None, body_length: int) -> int | None:
    """The `Inference-Header-Content-Length` value; None when absent.

    Raises:
        InvalidArgumentError: not a decimal integer, or larger than the body (Triton's message).
    """
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or not text.isascii() or int(text) > body_length:
        raise InvalidArgumentError(f"inference header size should be in range (0, {body_length}), got: {text[:32]}")
    return int(text)


def decode_infer_request(
    body: bytes, header_length: int | None, model: str, version: str, limits: Limits
) -> DecodedInfer:
    """Decode a JSON (optionally JSON + binary) infer request body.

    Raises:
        InvalidArgumentError: malformed JSON, wrong value types, sizes or counts; shared memory together
            with classification or binary data on one output.
    """
    document, binary = _split_body(body, header_length, limits)
    return decode_document(document, binary, model, version, limits)


def _split_body(body: bytes, header_length: int | None, limits: Limits) -> tuple[Any, memoryview]:
    """A body's parsed JSON document and its binary part (a view of `body`)."""
    if header_length is None:
        return load_json(body, limits.max_json_depth), memoryview(b"")
    view = memoryview(body)
    return load_json(view[:header_length], limits.max_json_depth), view[header_length:]


def decode_document(document: Any, binary: memoryview, model: str, version: str, limits: Limits) -> DecodedInfer:
    """`decode_infer_request` of a parsed document and the body's binary part."""
    if not isinstance(document, dict):
        raise InvalidArgumentError("Unable to parse the request: expected a JSON object")
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidArgumentError("Unable to parse 'id': expected a string")
    parameters = decode_request_parameters(document.get("parameters"), limits)
    binary_default = parameters.pop("binary_data_output", False)
    inputs = _decode_inputs(document, binary, model, limits)
    outputs, binary_outputs = _decode_outputs(document.get("outputs"), limits)
    request = InferRequest(model, inputs, version, request_id, outputs, parameters)
    return DecodedInfer(request, bool(binary_default), binary_outputs)


async def decode_large(
    json_gate: asyncio.Lock, body: bytes, header_length: int | None, model: str, version: str, limits: Limits
) -> DecodedInfer:
    """`decode_infer_request` of a body larger than `offload.HEAVY_BODY_BYTES`: in a worker thread under
    `json_gate` when its JSON document is that large too (`BodyBudget.json_gate`); else the JSON header is parsed
    here, and the tensors are decoded in a worker thread only when a BYTES input may hold many elements.

    Raises:
        InvalidArgumentError: as `decode_infer_request`.
    """
    if (len(body) if header_length is None else header_length) > offload.HEAVY_BODY_BYTES:
        return await offload.run_alone(json_gate, decode_infer_request, body, header_length, model, version, limits)
    document, binary = _split_body(body, header_length, limits)  # a small JSON header: parsed here
    # fixed-size binary tensors become views of the body: only BYTES elements (objects) are worth a thread hop
    heavy = len(binary) > offload.HEAVY_BODY_BYTES and _has_strings(document)
    return await offload.run(heavy, decode_document, document, binary, model, version, limits)


def _has_strings(document: Any) -> bool:
    """Whether a request document has a BYTES input (a malformed one answers False: decoding it fails fast)."""
    inputs = document.get("inputs") if isinstance(document, dict) else None
    return isinstance(inputs, list) and any(isinstance(i, dict) and i.get("datatype") == "BYTES" for i in inputs)


def decode_request_parameters(raw: Any, limits: Limits) -> dict[str, ParamValue]:
    """Request-level parameters, with the types Triton requires for the keys it interprets.

    Raises:
        InvalidArgumentError: more than `limits.max_parameters`, reserved `triton_` keys, non-scalar values,
            wrongly typed special keys.
    """
    params = _scalar_parameters(raw, limits)
    for key, value in params.items():
        if key.startswith("triton_"):
            raise InvalidArgumentError(
                "parameter keys starting with 'triton_' are reserved for Triton usage and should not be specified."
            )
        if key in ("sequence_start", "sequence_end", "binary_data_output") and type(value) is not bool:
            raise InvalidArgumentError(f"Unable to parse '{key}': expected a boolean")
        if key in ("priority", "timeout") and not _is_uint(value):
            raise InvalidArgumentError(f"Unable to parse '{key}': expected a non-negative integer")
        if key == "sequence_id" and not (_is_uint(value) or isinstance(value, str)):
            raise InvalidArgumentError("Unable to parse 'sequence_id': expected a non-negative integer or a string")
    return params


def _scalar_parameters(raw: Any, limits: Limits, tensor: str = "", kind: str = "") -> dict[str, ParamValue]:
    """The parameters object of the request (`tensor` empty) or of one input or output, counted before its
    entries are looked at."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidArgumentError("Unable to parse 'parameters': expected a JSON object")
    check_parameter_count(len(raw), limits, tensor, kind)
    for key, value in raw.items():
        if "\x00" in key:
            raise InvalidArgumentError("parameter name contains a NUL character")
        if not isinstance(value, _SCALARS):
            raise InvalidArgumentError(
                f"parameter '{key}' has invalid type. It should be either 'int', 'bool', or 'string'."
            )
    return raw


def _is_uint(value: Any) -> bool:
    return type(value) is int and value >= 0


def _checked_name(entry: dict[str, Any], what: str) -> str:
    name = entry.get("name")
    if not isinstance(name, str):
        raise InvalidArgumentError(f"Unable to parse '{what}': each {what[:-1]} needs a string 'name'")
    if "\x00" in name:
        raise InvalidArgumentError(f"{what[:-1]} name contains a NUL character")
    return name


def _decode_inputs(document: dict[str, Any], binary: memoryview, model: str, limits: Limits) -> list[Tensor]:
    entries = document.get("inputs")
    if entries is None:
        raise InvalidArgumentError("Unable to parse 'inputs': attempt to access non-existing object member 'inputs'")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InvalidArgumentError("Unable to parse 'inputs': expected an array of objects")
    if len(entries) > limits.max_inputs:
        raise InvalidArgumentError(f"request has {len(entries)} inputs, more than the limit of {limits.max_inputs}")
    inputs, offset, strings = [], 0, 0
    for entry in entries:
        tensor, offset = _decode_input(entry, binary, offset, model, limits, strings)
        inputs.append(tensor)
        if tensor.datatype == "BYTES":
            strings += element_count(tensor.shape)
    if offset != len(binary):
        raise InvalidArgumentError(f"unexpected additional input data for model '{model}'")
    return inputs


def _decode_input(
    entry: dict[str, Any], binary: memoryview, offset: int, model: str, limits: Limits, strings: int
) -> tuple[Tensor, int]:
    name = _checked_name(entry, "inputs")
    datatype = entry.get("datatype")
    if not isinstance(datatype, str) or datatype not in NUMPY_DTYPES:
        raise InvalidArgumentError(f"invalid datatype for input {name}")
    shape, count = checked_shape(entry.get("shape"), datatype, name, model, limits, bytes_before=strings)
    params = dict(_scalar_parameters(entry.get("parameters"), limits, name, "input"))
    in_json, in_binary, in_shm = "data" in entry, "binary_data_size" in params, SHM_REGION in params
    if in_json + in_binary + in_shm != 1:  # (no list of sources on every input: it is made for the message)
        given = (("data", in_json), ("binary_data_size", in_binary), (SHM_REGION, in_shm))
        sources = [key for key, is_set in given if is_set]
        found = "set " + " ".join(f"'{s}'" for s in sources) if sources else "no field is set"
        raise InvalidArgumentError(
            "Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', "
            f"'shared_memory_region' in 'parameters'. But {found}"
        )
    if in_shm:
        # a placeholder: the core reads the region (bounds-checked there) once it knows the model
        _check_shm_parameters(params, f"input '{name}'")
        return Tensor(name, datatype, shape, np.empty(0, NUMPY_DTYPES[datatype]), params), offset
    if in_json:
        return Tensor(
            name,
            datatype,
            shape,
            http_tensors.decode_json_data(entry["data"], datatype, shape, count, name),
            params,
        ), offset
    size = params.pop("binary_data_size")
    if type(size) is not int or size < 0:
        raise InvalidArgumentError(
            f"Unable to parse 'binary_data_size' of input '{name}': expected an unsigned integer"
        )
    if size > len(binary) - offset:
        raise InvalidArgumentError(
            f"unexpected size for input '{name}', expecting {size} additional bytes for model '{model}'"
        )
    data = decode_raw(binary[offset : offset + size], datatype, shape, count, name, model)
    return Tensor(name, datatype, shape, data, params), offset + size


def _check_shm_parameters(params: Mapping[str, ParamValue], what: str) -> None:
    """Types of the shared memory parameters of one tensor; ranges are checked against the region later."""
    if not isinstance(params[SHM_REGION], str):
        raise InvalidArgumentError(f"Unable to parse '{SHM_REGION}' of {what}: expected a string")
    for key in (SHM_OFFSET, SHM_BYTE_SIZE):
        if key in params and not (_is_uint(params[key]) and int(params[key]) <= MAX_UINT64):
            raise InvalidArgumentError(f"Unable to parse '{key}' of {what}: expected an unsigned integer")


def _decode_outputs(raw: Any, limits: Limits) -> tuple[list[RequestedOutput], dict[str, bool]]:
    if raw is None:
        return [], {}
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        raise InvalidArgumentError("Unable to parse 'outputs': expected an array of objects")
    if len(raw) > limits.max_outputs:
        raise InvalidArgumentError(f"request has {len(raw)} outputs, more than the limit of {limits.max_outputs}")
    outputs: list[RequestedOutput] = []
    binary: dict[str, bool] = {}
    for entry in raw:
        name = _checked_name(entry, "outputs")
        if any(o.name == name for o in outputs):
            raise InvalidArgumentError(f"output '{name}' is requested more than once")
        params = dict(_scalar_parameters(entry.get("parameters"), limits, name, "output"))
        if "binary_data" in params:
            flag = params.pop("binary_data")
            if type(flag) is not bool:
                raise InvalidArgumentError(f"Unable to parse 'binary_data' of output '{name}': expected a boolean")
            binary[name] = flag
        if "classification" in params and not _is_uint(params["classification"]):
            raise InvalidArgumentError(
                f"Unable to parse 'classification' of output '{name}': expected an unsigned integer"
            )
        if SHM_REGION in params:
            for other in ("classification", "binary_data"):
                if other in params or (other == "binary_data" and binary.get(name)):
                    raise InvalidArgumentError(f"Output can't set both '{SHM_REGION}' and '{other}'")
            _check_shm_parameters(params, f"output '{name}'")
        outputs.append(RequestedOutput(name, params))
    return outputs, binary


def decode_raw_request(body: bytes, model: str, version: str, spec: RawInputSpec, limits: Limits) -> DecodedInfer:
    """A raw binary request: the whole body is the model's only input; every output is returned binary.

    Raises:
        InvalidArgumentError: an empty body, the model has several inputs, or the shape cannot be deduced from the
            size.
    """
    if spec.input_count != 1:
        raise InvalidArgumentError(
            f"Raw request must only have 1 input (found 1) to be deduced but got {spec.input_count} inputs "
            f"in '{model}' model configuration"
        )
    if not body:  # after Triton's own refusal, which wins where Triton refuses too
        raise InvalidArgumentError(EMPTY_BODY)
    shape, count = checked_shape(_deduce_raw_shape(len(body), spec, model), spec.datatype, spec.name, model, limits)
    data = decode_raw(memoryview(body), spec.datatype, shape, count, spec.name, model)
    request = InferRequest(model, [Tensor(spec.name, spec.datatype, shape, data)], version)
    return DecodedInfer(request, binary_default=True)


def _deduce_raw_shape(size: int, spec: RawInputSpec, model: str) -> tuple[int, ...]:
    batch = (1,) if spec.max_batch_size > 0 else ()
    if spec.datatype == "BYTES":
        return (*batch, 1)
    variable = [i for i, d in enumerate(spec.dims) if d < 0]
    fixed = 1
    for dim in spec.dims:
        fixed *= max(dim, 1) if dim < 0 else dim
    element = ELEMENT_SIZES[spec.datatype]
    dims = list(spec.dims)
    if len(variable) > 1 or (variable and fixed == 0):
        raise InvalidArgumentError(f"Raw request cannot deduce the shape of input '{spec.name}' for model '{model}'")
    if variable:
        unit = fixed * element
        if size % unit:
            raise InvalidArgumentError(
                f"input byte size mismatch for input '{spec.name}' for model '{model}': "
                f"{size} bytes is not a multiple of {unit}"
            )
        dims[variable[0]] = size // unit
    return (*batch, *dims)


async def encode_infer_reply(
    response: InferResponse, decoded: DecodedInfer
) -> tuple[list[bytes | memoryview], int | None]:
    """`encode_reply`, in a worker thread when the outputs hold many BYTES elements (see `core.offload`)."""
    return await offload.run(offload.is_heavy(response.outputs), encode_reply, response, decoded)


def encode_reply(response: InferResponse, decoded: DecodedInfer) -> tuple[list[bytes | memoryview], int | None]:
    """`encode_infer_response` for the request `decoded` came from."""
    return encode_infer_response(response, decoded.request.id, decoded.binary_default, decoded.binary_outputs)


def encode_infer_response(
    response: InferResponse, request_id: str, binary_default: bool, binary_outputs: Mapping[str, bool]
) -> tuple[list[bytes | memoryview], int | None]:
    """The response body parts and, when some output is binary, the JSON header length.

    Raises:
        InvalidArgumentError: an output JSON cannot carry (non-finite floats, non-UTF-8 bytes, FP16/BF16).
    """
    header: dict[str, Any] = {}
    if response.id or request_id:
        header["id"] = response.id or request_id
    header["model_name"] = response.model_name
    header["model_version"] = response.model_version
    if response.parameters:
        header["parameters"] = response.parameters
    entries, blobs = [], []
    for tensor in response.outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        params: dict[str, Any] = dict(tensor.parameters)
        if SHM_REGION in params:  # written to the client's region by the core: no data, no parameters
            entries.append(entry)
            continue
        if binary_outputs.get(tensor.name, binary_default):
            blob = encode_raw(tensor)
            params["binary_data_size"] = len(blob)
            entry["parameters"] = params
            blobs.append(blob)
        else:
            if params:
                entry["parameters"] = params
            entry["data"] = http_tensors.json_data(tensor)
        entries.append(entry)
    header["outputs"] = entries
    encoded = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return [encoded], None
    return [encoded, *blobs], len(encoded)
