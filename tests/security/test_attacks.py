"""The attack suite: one test per attack pattern of Triton's advisories (spec/security_facts.md), against a real
Seawall process. Each asserts the refusal and its status, that nothing outside the repository changed, and that
the server still answers ready afterwards.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.harness import EXAMPLES, TEST_MODELS, ServerProcess, start_seawall

KEY = {"admin-key": "k"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("attacks")
    for model in ("add_sub", "identity"):
        shutil.copytree(EXAMPLES / model, root / "models" / model)
    shutil.copytree(TEST_MODELS / "classifier", root / "models" / "classifier")
    (root / "secret.txt").write_text("SECRET-LINE-1\nSECRET-LINE-2\n")
    return root


@pytest.fixture(scope="module")
def server(sandbox: Path) -> Iterator[ServerProcess]:
    process = start_seawall(
        "--model-control-mode=explicit",
        "--load-model=*",
        "--allow-client-shm=true",
        "--http-restricted-api=model-repository:admin-key=k",
        "--grpc-restricted-protocol=model-repository:admin-key=k",
        repository=sandbox / "models",
        env={"TMPDIR": str(sandbox / "tmp")},
    )
    (sandbox / "tmp").mkdir(exist_ok=True)
    yield process
    process.stop()


def _call(
    server: ServerProcess, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    host, port = server.http.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def _error(status_and_body: tuple[int, bytes]) -> tuple[int, str]:
    status, body = status_and_body
    return status, json.loads(body)["error"] if body else ""


def _healthy(server: ServerProcess) -> None:
    assert _call(server, "GET", "/v2/health/ready")[0] == 200
    assert server.process.poll() is None


def _files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if "__pycache__" not in p.parts}


def _load(server: ServerProcess, name: str, parameters: dict[str, str]) -> tuple[int, str]:
    body = json.dumps({"parameters": parameters}).encode()
    return _error(_call(server, "POST", f"/v2/repository/models/{name}/load", body, KEY))


CONFIG = json.dumps({"backend": "python"})
CODE = base64.b64encode(b"open('/tmp/PWNED-seawall', 'w')\n").decode()


# --- model repository, file writes, code execution ------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["../../tmp/HACKED", "/etc/HACKED", "1/../../HACKED", "1/./model.py", "1//model.py", "..\\x"]
)
def test_cve_2023_31036_override_paths_cannot_escape(server: ServerProcess, sandbox: Path, path: str) -> None:
    before = _files_under(sandbox)
    status, message = _load(server, "planted", {"config": CONFIG, f"file:{path}": CODE})
    assert status == 400 and "must be a relative path inside the model directory" in message
    assert _files_under(sandbox) == before and not Path("/tmp/PWNED-seawall").exists()
    _healthy(server)


def test_cve_2025_23316_model_names_never_reach_a_shell(server: ServerProcess, sandbox: Path) -> None:
    client = grpcclient.InferenceServerClient(server.grpc)
    with pytest.raises(InferenceServerException) as info:
        client.load_model(
            "inj$(touch${IFS}PWNED)",
            config=CONFIG,
            files={"file:1/model.py": b"x"},
            headers={"triton-grpc-protocol-admin-key": "k"},
        )
    client.close()
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "invalid model name" in info.value.message()
    assert not list(Path(".").glob("PWNED")) and not list(sandbox.rglob("PWNED"))
    _healthy(server)


@pytest.mark.parametrize("name", ["..", "%2E%2E", "a%2Fb"])
def test_cve_2026_24208_dot_dot_model_names_are_refused(server: ServerProcess, name: str) -> None:
    status, message = _load(server, name, {})
    assert status in (400, 404)
    assert message.startswith(("invalid model name", "Not Found"))
    _healthy(server)


def test_cve_2026_24147_label_files_cannot_leave_the_model(server: ServerProcess, sandbox: Path) -> None:
    config = json.loads(_call(server, "GET", "/v2/models/classifier/config")[1])
    config["output"][0]["label_filename"] = "../../secret.txt"
    status, message = _load(server, "classifier", {"config": json.dumps(config)})
    assert status == 400 and "relative path inside the model directory" in message
    assert "SECRET" not in message
    assert _call(server, "GET", "/v2/models/classifier/ready")[0] == 200  # the old version keeps serving
    _healthy(server)


# --- logging and tracing file sinks -----------------------------------------------------------------------------


def test_cve_2024_0087_log_file_cannot_be_set_at_run_time(server: ServerProcess, sandbox: Path) -> None:
    target = sandbox / "bashrc"
    body = json.dumps({"log_file": str(target)}).encode()
    assert _error(_call(server, "POST", "/v2/logging", body)) == (
        501,
        "log file location can not be updated through network protocol",
    )
    assert not target.exists()
    _healthy(server)


@pytest.mark.parametrize("path", ["/v2/trace/setting", "/v2/models/add_sub/trace/setting"])
def test_cve_2024_0100_trace_file_cannot_be_set_at_run_time(server: ServerProcess, sandbox: Path, path: str) -> None:
    target = sandbox / "trace.json"
    body = json.dumps({"trace_file": str(target), "trace_level": ["TIMESTAMPS"]}).encode()
    assert _error(_call(server, "POST", path, body)) == (
        501,
        "trace file location can not be updated through network protocol",
    )
    assert not target.exists()
    _healthy(server)


def test_cve_2024_0095_client_text_cannot_forge_log_lines(server: ServerProcess) -> None:
    marker = uuid.uuid4().hex
    forged = f"x\nE1125 00:00:00.000000 1 server.cc:1] FORGED-{marker}\r\x1b[2J"
    body = json.dumps({"id": forged, "inputs": []}).encode()
    _call(server, "POST", f"/v2/models/nope{marker}%0AFORGED/infer", body)
    _call(server, "POST", "/v2/models/add_sub/infer", body)
    assert not any(line.startswith("E1125 00:00:00") for line in server.lines)
    assert all("\x1b" not in line for line in server.lines)
    _healthy(server)


# --- shared memory -------------------------------------------------------------------------------------------------


@pytest.fixture
def region(server: ServerProcess) -> Iterator[str]:
    key = f"sw-attack-{uuid.uuid4().hex}"
    with open(f"/dev/shm/{key}", "wb") as file:
        file.write(bytes(8192))
    yield key
    _call(server, "POST", "/v2/systemsharedmemory/unregister")
    os.unlink(f"/dev/shm/{key}")


def _register(server: ServerProcess, name: str, key: str, offset: int, size: int) -> tuple[int, str]:
    body = json.dumps({"key": key, "offset": offset, "byte_size": size}).encode()
    return _error(_call(server, "POST", f"/v2/systemsharedmemory/region/{name}/register", body))


def _infer_from_region(server: ServerProcess, region: str, offset: int, size: int) -> tuple[int, str]:
    tensor = {"shared_memory_region": region, "shared_memory_offset": offset, "shared_memory_byte_size": size}
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "parameters": tensor}]}
    status, reply = _call(server, "POST", "/v2/models/identity/infer", json.dumps(body).encode())
    return status, reply.decode()


@pytest.mark.parametrize(
    ("offset", "size", "message"),
    [
        (17, 16, "Invalid offset + byte size for shared memory region: 'in'"),
        (33, 0, "Invalid offset for shared memory region: 'in'"),
        (2**64 - 1, 2, "Invalid offset for shared memory region: 'in'"),
    ],
)
def test_cve_2024_0088_shared_memory_offsets_are_bounds_checked(
    server: ServerProcess, region: str, offset: int, size: int, message: str
) -> None:
    assert _register(server, "in", region, 0, 32) == (200, "")
    status, reply = _infer_from_region(server, "in", offset, size)
    assert status == 400 and json.loads(reply)["error"] == message
    _healthy(server)


@pytest.mark.parametrize("key", ["triton_python_backend_shm_region_1", "///triton_python_backend_shm_region_x"])
def test_cve_2025_23329_internal_regions_cannot_be_registered(server: ServerProcess, key: str) -> None:
    assert _register(server, "steal", key, 0, 16) == (
        400,
        "failed to register shared memory region 'steal': invalid key",
    )
    _healthy(server)


def test_registered_offset_is_applied_once(server: ServerProcess, region: str) -> None:
    """Triton 2.51 added a region's offset twice and read an adjacent mapping."""
    with open(f"/dev/shm/{region}", "r+b") as file:
        file.seek(4096)
        file.write(bytes.fromhex("0000803f000000400000404000008040"))  # 1, 2, 3, 4 as FP32
    assert _register(server, "high", region, 4096, 16) == (200, "")
    status, reply = _infer_from_region(server, "high", 0, 16)
    assert status == 200 and json.loads(reply)["outputs"][0]["data"] == [1.0, 2.0, 3.0, 4.0]
    _healthy(server)


# --- request parsing: memory safety and denial of service ------------------------------------------------------------


def test_cve_2025_23310_chunk_flood_is_refused(server: ServerProcess) -> None:
    host, port = server.http.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        # with the key: a request without it is refused on its head, before any chunk is read
        head = b"POST /v2/repository/index HTTP/1.1\r\nHost: x\r\nadmin-key: k\r\nTransfer-Encoding: chunked\r\n\r\n"
        sock.sendall(head)
        try:
            sock.sendall(b"1\r\n \r\n" * 70000)
        except OSError:
            pass  # the server may stop reading once it has refused
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")
    _healthy(server)


def test_cve_2025_23325_deep_json_is_refused(server: ServerProcess) -> None:
    body = b'{"ready":' + b"[" * 200000 + b"]" * 200000 + b"}"
    status, message = _error(_call(server, "POST", "/v2/repository/index", body, KEY))
    assert status == 400 and "depth" in message  # the parser's own depth limit answers first here
    _healthy(server)


@pytest.mark.parametrize("shape", [[1099511627776], [4294967296, 4294967296], [2147483648, 0], [2**63, 2]])
def test_cve_2025_23331_and_23323_huge_or_overflowing_shapes(server: ServerProcess, shape: list[int]) -> None:
    body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": shape, "data": [1]}]}).encode()
    status, _ = _call(server, "POST", "/v2/models/identity/infer", body)
    assert status in (400, 413)
    _healthy(server)


def test_cve_2024_53880_oversized_override_is_refused_before_decoding(server: ServerProcess) -> None:
    huge = "A" * (64 * 1024 * 1024 + 4)
    status, _ = _load(server, "planted", {"config": CONFIG, "file:1/model.py": huge})
    assert status == 413
    _healthy(server)


def test_cve_2026_24158_decompression_bomb_is_refused(server: ServerProcess) -> None:
    bomb = gzip.compress(b"\0" * (200 * 1024 * 1024), compresslevel=9)
    status, _ = _call(server, "POST", "/v2/models/add_sub/infer", bomb, {"Content-Encoding": "gzip"})
    assert status == 413
    _healthy(server)


def test_cve_2026_24146_duplicate_outputs_are_refused(server: ServerProcess) -> None:
    inputs = [{"name": n, "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]} for n in ("INPUT0", "INPUT1")]
    body = json.dumps({"inputs": inputs, "outputs": [{"name": "OUTPUT0"}] * 5000}).encode()
    status, _ = _call(server, "POST", "/v2/models/add_sub/infer", body)
    assert status in (400, 413)
    _healthy(server)


@pytest.mark.parametrize("value", ["99999999999999999999", "abc", "-1"])
def test_cve_2026_24173_malformed_header_length(server: ServerProcess, value: str) -> None:
    status, _ = _call(server, "POST", "/v2/models/add_sub/infer", b"{}", {"Inference-Header-Content-Length": value})
    assert status == 400
    _healthy(server)


def test_invalid_utf8_json_is_refused(server: ServerProcess) -> None:
    body = b'{"id": "\xff\xfe", "inputs": []}'
    status, message = _error(_call(server, "POST", "/v2/models/add_sub/infer", body))
    assert status == 400 and message.isprintable()
    _healthy(server)


def test_restricted_api_without_the_key_changes_nothing(server: ServerProcess) -> None:
    for path in ("/v2/repository/index", "/v2/repository/models/add_sub/unload"):
        assert _error(_call(server, "POST", path)) == (403, "This API is restricted, expecting header 'admin-key'")
    assert _call(server, "GET", "/v2/models/add_sub/ready")[0] == 200
    _healthy(server)
