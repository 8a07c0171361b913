"""Triton 2.51 and Seawall side by side on the generate extension: the exact bytes of `generate_stream` replies (head
fields and the chunked body, event by event), `generate` bodies, and error bodies must agree; the deliberate
differences (docs/differences.md, "Generate extension") are asserted as differences. The decoupled cases run once
Seawall serves decoupled models (issue 11, item 1)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_http_generate import NOT_ONE, SSE, copy_models, dechunk, exchange, split_reply
from tests.harness import EXAMPLES, TEST_MODELS, TRITON, ServerProcess, start_seawall, start_triton

MODELS = (EXAMPLES / "add_sub", EXAMPLES / "string_identity") + tuple(
    TEST_MODELS / name for name in ("generate_echo", "error_response", "generate_decoupled")
)


@dataclass
class Pair:
    triton: ServerProcess
    seawall: ServerProcess
    decoupled: bool  # Seawall serves generate_decoupled


def _start_seawall(root: Path) -> tuple[ServerProcess, bool]:
    try:
        return start_seawall(repository=root), True
    except RuntimeError as exc:
        if "decoupled model 'generate_decoupled' is not supported" not in str(exc):
            raise
    shutil.rmtree(root / "generate_decoupled")  # not served yet: compare the rest
    return start_seawall(repository=root), False


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    if not TRITON.exists():
        pytest.skip(f"the reference Triton is not available at {TRITON}")
    triton_root = copy_models(tmp_path_factory.mktemp("generate_triton"), *MODELS)
    triton = start_triton(triton_root)
    try:
        seawall, decoupled = _start_seawall(copy_models(tmp_path_factory.mktemp("generate_seawall"), *MODELS))
    except BaseException:
        triton.stop()
        raise
    yield Pair(triton, seawall, decoupled)
    seawall.stop()
    triton.stop()


def _both(pair: Pair, path: str, body: bytes) -> tuple[tuple[int, dict[str, str], bytes], ...]:
    if "generate_decoupled" in path and not pair.decoupled:
        pytest.skip("Seawall does not serve decoupled models yet (issue 11, item 1)")
    return tuple(split_reply(exchange(server.http, path, body)) for server in (pair.triton, pair.seawall))


def _body(document: Any) -> bytes:
    return document if isinstance(document, bytes) else json.dumps(document).encode()


STREAMS = [
    ("add_sub", {"INPUT0": [1, 2, 3, 4], "INPUT1": [1, 1, 1, 1]}),
    ("add_sub", {"INPUT0": [0.1, -2, 3.5, 4], "INPUT1": [1, 1, 1, 1], "id": "r-1"}),
    (
        "generate_echo",
        {
            "text_input": "hi",
            "values": [1, 2.5, 3],
            "flag": True,
            "id": "42",
            "parameters": {"temperature": 0.5, "stream": False, "pair": [1, 2], "n": 3, "s": "x"},
        },
    ),
    ("generate_echo", {"text_input": ["a", "b"]}),
    ("generate_echo", {"parameters": {"text_input": "\u00e9\u0000 \\ \"'"}, "values": []}),
    ("string_identity", {"INPUT0": ["x", "yz"]}),
    ("generate_decoupled", {"text_input": "ab", "repeat": 3}),
    ("generate_decoupled", {"text_input": "ab", "repeat": 2, "id": "q7", "parameters": {"sleep_ms": 1}}),
    ("generate_decoupled", {"text_input": "ab", "repeat": 0}),  # no response: an empty stream
    ("generate_decoupled", {"text_input": "ab", "repeat": -1}),  # a response, then an error event
]


@pytest.mark.parametrize(("model", "document"), STREAMS)
def test_stream_bytes(pair: Pair, model: str, document: Any) -> None:
    triton, seawall = _both(pair, f"/v2/models/{model}/generate_stream", _body(document))
    assert seawall[0] == triton[0] == 200
    for header in ("content-type", "transfer-encoding"):
        assert seawall[1][header] == triton[1][header], header
    assert seawall[1]["content-type"] == SSE
    assert seawall[2] == triton[2]  # every chunk, byte for byte
    dechunk(seawall[2])


@pytest.mark.parametrize(
    ("model", "document"),
    [case for case in STREAMS if case[0] != "generate_decoupled"]
    + [("generate_decoupled", {"text_input": "ab", "repeat": 1})],
)
def test_generate_body(pair: Pair, model: str, document: Any) -> None:
    """Same status, type and body; Triton chunks it, Seawall sends a Content-Length (docs/differences.md)."""
    triton, seawall = _both(pair, f"/v2/models/{model}/generate", _body(document))
    assert seawall[0] == triton[0] == 200
    assert seawall[1]["content-type"] == triton[1]["content-type"] == "application/json"
    assert seawall[2] == b"".join(dechunk(triton[2]))
    assert seawall[1]["content-length"] == str(len(seawall[2]))


ERRORS = [
    ("/v2/models/nope/generate_stream", {"text_input": "a"}),
    ("/v2/models/generate_echo/versions/7/generate_stream", {"text_input": "a"}),
    ("/v2/models/generate_echo/generate_stream", {"text_input": "a", "pair": [1, 2, 3]}),
    ("/v2/models/generate_echo/generate", {"text_input": "a", "pair": 1}),
    ("/v2/models/generate_echo/generate_stream", {"text_input": "a", "other": {"x": 1}}),
    ("/v2/models/generate_echo/generate", {"text_input": "a", "other": [1]}),
    ("/v2/models/generate_echo/generate_stream", {"text_input": "a", "parameters": {"parameters": {}}}),
    ("/v2/models/generate_echo/generate", {"text_input": "a", "parameters": {"text_input": "b"}}),
    ("/v2/models/generate_echo/generate_stream", {}),
    ("/v2/models/add_sub/generate", {"INPUT0": [1, 2, 3, 4]}),
]


@pytest.mark.parametrize(("path", "document"), ERRORS)
def test_error_bodies(pair: Pair, path: str, document: Any) -> None:
    """Errors before the first response: the same status and `{"error": ...}` body, as a JSON reply."""
    triton, seawall = _both(pair, path, _body(document))
    assert seawall[0] == triton[0] != 200
    assert seawall[1]["content-type"] == triton[1]["content-type"] == "application/json"
    assert seawall[2] == triton[2], (triton[2], seawall[2])


_NOT_BOOLEAN = "attempt to access JSON non-boolean as boolean"


@pytest.mark.parametrize(
    ("document", "triton_error", "seawall_error"),
    [
        (b"not json", "failed to parse the request JSON buffer: Invalid value. at 1", ""),
        (b"[1]", "attempt to get members for non-object", "failed to parse the request JSON buffer: "),
        (b'{"text_input": 5}', "Unable to parse JSON bytes array: attempt to access JSON non-string as string", ""),
        (b'{"text_input": "a", "flag": 1}', "Unable to parse 'data': " + _NOT_BOOLEAN, ""),
        (b'{"text_input": "a", "id": 5}', "Unable to parse 'id': attempt to access JSON non-string as string", ""),
        (
            b'{"text_input": "a", "parameters": 5}',
            "Expected JSON object for keyword: 'parameters': attempt to access JSON non-object as object",
            "Expected JSON object for keyword: 'parameters': attempt to access JSON non-object as object",
        ),
    ],
)  # fmt: skip
def test_client_mistakes_are_400(pair: Pair, document: bytes, triton_error: str, seawall_error: str) -> None:
    """Difference: Triton answers these with 500; Seawall with 400 (a client's mistake, not a server fault)."""
    triton, seawall = _both(pair, "/v2/models/generate_echo/generate_stream", document)
    assert (triton[0], json.loads(triton[2])) == (500, {"error": triton_error})
    assert seawall[0] == 400 and seawall[1]["content-type"] == "application/json"
    assert json.loads(seawall[2])["error"].startswith(seawall_error)


@pytest.mark.parametrize("route", ["generate", "generate_stream"])
def test_model_error_status(pair: Pair, route: str) -> None:
    """Difference: the error of a model that is not decoupled. Triton answers 400 whatever the error's code (it
    reads the code of an error it has freed) with the error as an event on generate_stream; Seawall answers the
    error's own status (NOT_FOUND: 404) with a JSON error reply, as it does for errors before inference."""
    triton, seawall = _both(pair, f"/v2/models/error_response/{route}", b'{"INPUT0": [-1]}')
    error = b'{"error":"no such thing"}'
    assert triton[0] == 400 and b"".join(dechunk(triton[2])) == (b"data: " + error + b"\n\n" if "_" in route else error)
    assert (seawall[0], seawall[1]["content-type"], seawall[2]) == (404, "application/json", error)


@pytest.mark.parametrize("repeat", [0, 3, -1])
def test_generate_of_a_stream_is_400(pair: Pair, repeat: int) -> None:
    """Difference: `/generate` of a model that sends no response or several. Triton sends 200 and an error body;
    Seawall the same body with 400 (the status tells the client it got no result)."""
    triton, seawall = _both(
        pair, "/v2/models/generate_decoupled/generate", _body({"text_input": "ab", "repeat": repeat})
    )
    assert triton[0] == 200 and json.loads(b"".join(dechunk(triton[2]))) == {"error": NOT_ONE}
    assert (seawall[0], json.loads(seawall[2])) == (400, {"error": NOT_ONE})
