"""One fuzz target per parser of client or repository input: each takes arbitrary bytes and must either decode them
or refuse them with a `SeawallError`. Anything else escaping (a KeyError, an OverflowError, numpy's MemoryError, a
protobuf DecodeError that was not translated) is a crash: the frontend would answer 500 INTERNAL for the client's
input, or a model would fail to load without a reason.

Used by the hypothesis properties (tests/fuzz/test_properties.py) and the atheris runner (tests/fuzz/atheris_run.py).
"""

from __future__ import annotations

import atexit
import os
import shutil
import struct
import tempfile
from collections.abc import Callable

from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

from seawall.core import config_features, model_config, raw
from seawall.core.types import ELEMENT_SIZES, NUMPY_DTYPES, RawInputSpec, TensorMetadata
from seawall.errors import InvalidArgumentError, SeawallError
from seawall.frontends.grpc import codec as grpc_codec
from seawall.frontends.grpc import wire
from seawall.frontends.http import codec as http_codec
from seawall.frontends.http import generate
from seawall.options import Limits
from tests.fuzz import http2_target

#: small limits, so that a fuzzer reaches them, and their checks, with small inputs
LIMITS = Limits(
    max_request_bytes=1 << 16,
    max_json_depth=16,
    max_inputs=8,
    max_outputs=8,
    max_tensor_elements=4096,
    max_tensor_bytes=1 << 15,
    max_bytes_elements=512,
)
DATATYPES = tuple(sorted(NUMPY_DTYPES))
MODEL = "fuzz"


def refused(target: Callable[[bytes], object], data: bytes) -> bool:
    """Run `target`; True when it refused the input with a SeawallError, False when it decoded it."""
    try:
        target(data)
    except SeawallError:
        return True
    return False


def http_infer_json(data: bytes) -> object:
    """An infer body without a binary part (`Inference-Header-Content-Length` absent)."""
    return http_codec.decode_infer_request(data, None, MODEL, "", LIMITS)


def http_infer_binary(data: bytes) -> object:
    """A JSON + binary infer body: the first two bytes choose the header length (then the header value as a client
    sends it, so the header check is fuzzed too)."""
    if len(data) < 2:
        return None
    body = data[2:]
    header = str(struct.unpack_from("<H", data)[0] % (len(body) + 2))
    length = http_codec.parse_header_length(header, len(body))
    assert length is not None
    if length == 0:
        spec = RawInputSpec("INPUT0", DATATYPES[data[0] % len(DATATYPES)], (-1,), data[1] % 2 * 8, 1)
        return http_codec.decode_raw_request(body, MODEL, "", spec, LIMITS)
    return http_codec.decode_infer_request(body, length, MODEL, "", LIMITS)


def http_generate(data: bytes) -> object:
    """A generate body for a model with a BYTES, an FP32 and an INT64 input."""
    inputs = {
        "text_input": TensorMetadata("text_input", "BYTES", (-1,)),
        "scores": TensorMetadata("scores", "FP32", (-1, 2)),
        "seed": TensorMetadata("seed", "INT64", (1,)),
    }
    return generate.decode_generate_request(data, inputs, MODEL, "", LIMITS)


def raw_tensor(data: bytes) -> object:
    """Raw tensor bytes (HTTP binary data, gRPC raw contents, shared memory): byte 0 picks the datatype, byte 1 the
    rank, then one byte per dimension; the rest is the data."""
    if len(data) < 2:
        return None
    datatype = DATATYPES[data[0] % len(DATATYPES)]
    rank = data[1] % 4
    dims = list(data[2 : 2 + rank])
    shape, count = raw.checked_shape(dims, datatype, "INPUT0", MODEL, LIMITS)
    array = raw.decode(memoryview(data[2 + rank :]), datatype, shape, count, "INPUT0", MODEL)
    assert array.shape == shape
    if datatype != "BYTES":
        assert array.nbytes == count * ELEMENT_SIZES[datatype]
    return array


def bytes_elements(data: bytes) -> object:
    """Serialized BYTES elements, split into as many elements as byte 0 says."""
    if not data:
        return None
    try:
        return raw.split_bytes(data[1:], data[0] % 16, data[0] // 16)
    except raw.BytesFormatError as exc:
        raise SeawallError(str(exc)) from None  # the codecs word it; a clean refusal here


def grpc_infer(data: bytes) -> object:
    """A serialized ModelInferRequest, through the same path as the gRPC frontend's ModelInfer: `wire` splits it
    (or parses it whole when small), then the codec decodes the message."""
    message, contents = wire.parse_infer_request(data, LIMITS)
    return grpc_codec.infer_request_from_proto(message, LIMITS, contents)


def grpc_infer_split(data: bytes) -> object:
    """`wire.split_raw_inputs`, the parser of large requests, on small inputs too; its result must parse as the
    message would."""
    header, contents = wire.split_raw_inputs(data, LIMITS)
    try:
        message = service_pb2.ModelInferRequest.FromString(header)
    except DecodeError:
        raise InvalidArgumentError("not a ModelInferRequest") from None  # as `wire.parse_infer_request` words it
    return grpc_codec.infer_request_from_proto(message, LIMITS, contents)


_CONFIG_DIR = tempfile.mkdtemp(prefix="seawall-fuzz-")
atexit.register(shutil.rmtree, _CONFIG_DIR, True)


def config_pbtxt(data: bytes) -> object:
    """A model's config.pbtxt through everything a load does with it before a backend sees it: read, refuse the
    unsupported, complete the defaults, validate, compile the spec."""
    with open(os.path.join(_CONFIG_DIR, "config.pbtxt"), "wb") as file:
        file.write(data)
    config = model_config.read_config(_CONFIG_DIR)
    if config is None:
        return None
    config_features.refuse_unsupported(config)
    model_config.complete_defaults(config, MODEL)
    model_config.validate(config, MODEL)
    return model_config.compile_spec(config)


#: every target, by the name `make fuzz` and the atheris runner use
TARGETS: dict[str, Callable[[bytes], object]] = {
    "http_infer_json": http_infer_json,
    "http_infer_binary": http_infer_binary,
    "http_generate": http_generate,
    "raw_tensor": raw_tensor,
    "bytes_elements": bytes_elements,
    "grpc_infer": grpc_infer,
    "grpc_infer_split": grpc_infer_split,
    "config_pbtxt": config_pbtxt,
    "http2_frames": http2_target.http2_frames,
}


def seeds() -> dict[str, list[bytes]]:
    """Valid inputs of every target, so that a coverage-guided fuzzer starts from the accepted paths."""
    infer = (
        b'{"id":"1","parameters":{"binary_data_output":true},"inputs":[{"name":"I","datatype":"FP32","shape":[2],'
        b'"data":[1,2]},{"name":"S","datatype":"BYTES","shape":[1],"data":["a"]}],"outputs":[{"name":"O",'
        b'"parameters":{"binary_data":false,"classification":2}}]}'
    )
    header = b'{"inputs":[{"name":"I","datatype":"INT32","shape":[1,2],"parameters":{"binary_data_size":8}}]}'
    request = service_pb2.ModelInferRequest(model_name=MODEL, id="r")
    request.inputs.add(name="I", datatype="FP32", shape=[1, 2])
    request.inputs.add(
        name="S", datatype="BYTES", shape=[1], contents=service_pb2.InferTensorContents(bytes_contents=[b"a"])
    )
    request.raw_input_contents.append(bytes(8))
    typed = service_pb2.ModelInferRequest(model_name=MODEL)
    typed.inputs.add(
        name="I", datatype="INT8", shape=[2], contents=service_pb2.InferTensorContents(int_contents=[1, 2])
    )
    typed.outputs.add(name="O").parameters["classification"].int64_param = 1
    config = (
        b'name: "fuzz"\nbackend: "python"\nmax_batch_size: 8\ninput [{ name: "I" data_type: TYPE_FP32 dims: [-1, 2] '
        b'reshape { shape: [2, -1] } }]\noutput [{ name: "O" data_type: TYPE_STRING dims: [1] }]\n'
        b"dynamic_batching { preferred_batch_size: [2, 4] max_queue_delay_microseconds: 100 }\n"
        b'instance_group [{ count: 2 kind: KIND_CPU }]\nparameters { key: "k" value: { string_value: "v" } }\n'
    )
    return {
        "http_infer_json": [infer],
        "http_infer_binary": [struct.pack("<H", len(header)) + header + bytes(8), b"\0\0" + bytes(12)],
        "http_generate": [b'{"text_input":"hi","scores":[1,2,3,4],"seed":7,"parameters":{"stream":false,"t":1}}'],
        "raw_tensor": [bytes([DATATYPES.index("FP32"), 2, 1, 2]) + bytes(8), bytes([0, 1, 2]) + b"\1\0\0\0a\0\0\0\0"],
        "bytes_elements": [b"\x02\x01\0\0\0a\x02\0\0\0bc"],
        "grpc_infer": [request.SerializeToString(), typed.SerializeToString()],
        "grpc_infer_split": [request.SerializeToString()],
        "config_pbtxt": [config],
        "http2_frames": http2_target.seeds(),
    }
