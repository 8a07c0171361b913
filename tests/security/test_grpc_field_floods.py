"""A ModelInfer message flooded with top-level fields (millions of inputs, outputs, raw contents or unknown fields,
two bytes each) against a real Seawall: it is refused with its exact error after a bounded walk, before any
message object is built, so the server's peak memory barely moves (it used to parse them all: 8M empty inputs
cost 33 s and 2.3 GB), over ModelInfer and ModelStreamInfer, and the server stays healthy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from tests.harness import ServerProcess, http_request, start_seawall

_CHANNEL_OPTIONS = [("grpc.max_send_message_length", 1 << 26), ("grpc.max_receive_message_length", 1 << 26)]
FLOOD = 4_000_000  # fields: an 8 MB message
#: the server's peak RSS may grow by the message and its copies in the HTTP/2 and gRPC layers, not by objects
PEAK_GROWTH_BYTES = 160 * 1024 * 1024
_TOO_MANY = "[request id: flood] too many inputs or outputs for model 'add_sub'"
CASES = {
    "inputs": (5, grpc.StatusCode.RESOURCE_EXHAUSTED, _TOO_MANY),
    "outputs": (6, grpc.StatusCode.RESOURCE_EXHAUSTED, _TOO_MANY),
    "raw_input_contents": (
        7,
        grpc.StatusCode.INVALID_ARGUMENT,
        "request has more than 1024 raw input contents (--max-inputs)",
    ),
    "unknown_field": (
        15,
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unable to parse request: more fields than a request within the server's limits holds",
    ),
}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = start_seawall()
    yield process
    process.stop()


def _peak_rss(server: ServerProcess) -> int:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _flood(field: int, count: int) -> bytes:
    """add_sub's request head, then `count` empty length-delimited fields numbered `field`."""
    head = pb.ModelInferRequest(model_name="add_sub", id="flood").SerializeToString()
    return head + bytes((field << 3 | 2, 0)) * count


def _call(server: ServerProcess, data: bytes, stream: bool) -> tuple[grpc.StatusCode, str]:
    with grpc.insecure_channel(server.grpc, options=_CHANNEL_OPTIONS) as channel:
        try:
            if stream:
                call = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
                for reply in call(iter([data]), timeout=120):
                    # a stream answers a refused request in-band: ModelStreamInferResponse.error_message (field 1)
                    return grpc.StatusCode.OK, pb.ModelStreamInferResponse.FromString(reply).error_message
                return grpc.StatusCode.OK, ""
            channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(data, timeout=120)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize("case", CASES)
def test_a_field_flood_is_refused_without_building_its_fields(server: ServerProcess, case: str) -> None:
    field, code, message = CASES[case]
    before = _peak_rss(server)
    assert _call(server, _flood(field, FLOOD), stream=False) == (code, message)
    assert _peak_rss(server) - before < PEAK_GROWTH_BYTES
    assert http_request(server, "GET", "/v2/health/ready")[0] == 200


@pytest.mark.parametrize("case", ["inputs", "unknown_field"])
def test_a_field_flood_on_a_stream_is_refused_in_band(server: ServerProcess, case: str) -> None:
    field, _, message = CASES[case]
    assert _call(server, _flood(field, FLOOD), stream=True) == (grpc.StatusCode.OK, message)
    assert http_request(server, "GET", "/v2/health/ready")[0] == 200


def test_a_large_request_within_the_walks_bounds_is_served(server: ServerProcess) -> None:
    # over 32 KiB a request is walked field by field (its raw contents split out as views); a long id makes it so,
    # and 1000 unknown fields stay within the walk's total (3 + parameters + 2 x inputs + outputs at their limits)
    request = pb.ModelInferRequest(model_name="add_sub", id="x" * 40_000)
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="FP32", shape=[4])
        request.raw_input_contents.append(np.arange(4, dtype="<f4").tobytes())
    data = request.SerializeToString() + bytes((15 << 3 | 2, 0)) * 1000
    with grpc.insecure_channel(server.grpc, options=_CHANNEL_OPTIONS) as channel:
        reply = pb.ModelInferResponse.FromString(
            channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(data, timeout=60)
        )
    outputs = dict(zip((tensor.name for tensor in reply.outputs), reply.raw_output_contents, strict=True))
    assert np.frombuffer(outputs["OUTPUT0"], "<f4").tolist() == [0.0, 2.0, 4.0, 6.0]  # INPUT0 + INPUT1
