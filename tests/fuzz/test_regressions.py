"""Regression tests for what fuzzing found (tests/fuzz): each input that escaped as a foreign exception, sent
again through the real process, with the exact refusal and the server healthy afterwards; each input the
`http2_frames` target crashed on, replayed through it (its checks are the assertions; the same cases over a real
server process are in tests/e2e/test_grpc_lean_cleanup.py)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from seawall.core import model_config
from seawall.errors import InvalidArgumentError
from tests.fuzz.http2_target import DATA, END_HEADERS, END_STREAM, HEADERS, RST_STREAM, encode, frame, http2_frames
from tests.fuzz.http2_target import request_block as block
from tests.harness import EXAMPLES, ServerProcess, http_call, start_seawall

#: a config.pbtxt that is not UTF-8 (found by tests/fuzz/targets.py::config_pbtxt): it escaped read_config as a
#: UnicodeDecodeError, not an InvalidArgumentError naming the problem
NOT_UTF8 = (
    b'name: "broken"\nbackend: "python"\nmax_batch_size: 0\ninput [{ name: "I\xab" data_type: TYPE_FP32 dims: [1] }]\n'
)
NOT_UTF8_MESSAGE = "failed to parse model configuration: not UTF-8 text (byte 68)"


def test_a_config_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.pbtxt").write_bytes(NOT_UTF8)
    with pytest.raises(InvalidArgumentError) as caught:
        model_config.read_config(str(tmp_path))
    assert caught.value.message == NOT_UTF8_MESSAGE


@pytest.fixture(scope="module")
def explicit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("regressions")
    shutil.copytree(EXAMPLES / "identity", root / "identity")
    (root / "broken" / "1").mkdir(parents=True)
    shutil.copy(EXAMPLES / "identity" / "1" / "model.py", root / "broken" / "1" / "model.py")
    (root / "broken" / "config.pbtxt").write_bytes(NOT_UTF8)
    server = start_seawall(
        "--model-control-mode=explicit",
        "--load-model=identity",
        "--allow-unrestricted-model-repository=true",
        repository=root,
    )
    try:
        yield server
    finally:
        server.stop()


def test_loading_a_config_that_is_not_utf8_is_400_with_the_reason(explicit: ServerProcess) -> None:
    status, _, body = http_call(explicit.http, "POST", "/v2/repository/models/broken/load", b"{}")
    assert status == 400, body
    assert NOT_UTF8_MESSAGE in json.loads(body)["error"]
    assert http_call(explicit.http, "GET", "/v2/health/live")[0] == 200  # ready is 400: strict readiness, as Triton
    assert http_call(explicit.http, "GET", "/v2/models/identity/ready")[0] == 200


_CANCEL = (8).to_bytes(4, "big")
_STREAM = frame(HEADERS, END_HEADERS, 1, block("ModelStreamInfer"))
#: client bytes after the preface that crashed `http2_frames`, reduced by hand to the frames that matter
HTTP2_CRASHES = {
    # the call's task was cancelled before its first step, so nothing released its stream: "1 stream(s) held,
    # at most 0 open: a slot leaked" (after max_concurrent_streams of these, every new stream was refused)
    "reset-in-the-same-read": frame(HEADERS, END_HEADERS, 1, block("ModelInfer"))
    + frame(DATA, END_STREAM, 1, bytes(5))
    + frame(RST_STREAM, 0, 1, _CANCEL),
    "streaming-reset-in-the-same-read": _STREAM + frame(RST_STREAM, 0, 1, _CANCEL),
    # a refused message in the frame that also ended the stream: the handler waited for the end of the requests
    # forever ("1 call task(s) still running after the client left")
    "streaming-compressed-with-end-stream": _STREAM + frame(DATA, END_STREAM, 1, b"\x01" + bytes(4)),
    "streaming-oversized-with-end-stream": _STREAM + frame(DATA, END_STREAM, 1, b"\x00" + (5000).to_bytes(4, "big")),
    # trailers after a unary request's END_STREAM started a second call on the stream: "DATA on stream 1 after
    # its end" (the second call's INTERNAL status went out first, then the first call's response)
    "headers-after-end-stream": frame(HEADERS, END_HEADERS, 1, block("ModelInfer"))
    + frame(DATA, END_STREAM, 1, bytes(5))
    + frame(HEADERS, END_HEADERS | END_STREAM, 1, encode(("x-trailer", "t"))),
}


@pytest.mark.parametrize("name", sorted(HTTP2_CRASHES))
def test_http2_input_that_crashed_the_fuzz_target(name: str) -> None:
    http2_frames(HTTP2_CRASHES[name])
