"""`file:` overrides of the load API (issue 9, finding 13), over HTTP and gRPC against a real Seawall process.

Conflicting, over-long and malformed names, too many files and too many bytes are refused with 400 /
INVALID_ARGUMENT before anything is written; the private `seawall-model-*` directory never outlives its use
(refusals, failed loads, failed reloads, reloads, unloads); the writes do not stall the event loop.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.harness import ServerProcess, http_request, run_seawall, start_seawall

MODEL_PY = b"""import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy())])
            for r in requests
        ]
"""
FAILING_PY = b"""class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("this model does not start")
"""
MAX_BYTES = 100_000
PROTOCOLS = ("http", "grpc")
RELATIVE = "must be a relative path inside the model directory"


def _config(name: str) -> str:
    return json.dumps(
        {
            "name": name,
            "backend": "python",
            "max_batch_size": 0,
            "input": [{"name": "IN", "data_type": "TYPE_INT32", "dims": [1]}],
            "output": [{"name": "OUT", "data_type": "TYPE_INT32", "dims": [1]}],
        }
    )


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("overrides")
    (root / "repo").mkdir()
    (root / "tmp").mkdir()
    return root


@pytest.fixture(scope="module")
def server(sandbox: Path) -> Iterator[ServerProcess]:
    process = start_seawall(
        "--model-control-mode=explicit",
        "--allow-unrestricted-model-repository=true",
        "--strict-readiness=false",
        f"--max-override-bytes={MAX_BYTES}",
        repository=sandbox / "repo",
        env={"TMPDIR": str(sandbox / "tmp")},
    )
    yield process
    process.stop()


def _load(protocol: str, server: ServerProcess, name: str, files: dict[str, bytes]) -> str:
    """Load `name` with `files` (paths without the `file:` prefix) over `protocol`; "" on success, else the
    refusal, whose status is checked here (HTTP 400, gRPC INVALID_ARGUMENT)."""
    parameters = {f"file:{path}": content for path, content in files.items()}
    try:
        if protocol == "http":
            httpclient.InferenceServerClient(server.http, network_timeout=120).load_model(
                name, config=_config(name), files=parameters
            )
        else:
            grpcclient.InferenceServerClient(server.grpc).load_model(
                name, config=_config(name), files=parameters, client_timeout=120
            )
    except InferenceServerException as exc:
        assert exc.status() == ("400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT"), exc
        return str(exc.message())
    return ""


def _unload(protocol: str, server: ServerProcess, name: str) -> None:
    if protocol == "http":
        httpclient.InferenceServerClient(server.http).unload_model(name)
    else:
        grpcclient.InferenceServerClient(server.grpc).unload_model(name)


def _override_dirs(sandbox: Path) -> list[str]:
    return sorted(p.name for p in (sandbox / "tmp").iterdir() if p.name.startswith("seawall-model-"))


def _healthy(server: ServerProcess) -> None:
    assert http_request(server, "GET", "/v2/health/ready")[0] == 200
    assert server.process.poll() is None


REFUSALS = {
    "file_then_directory": (
        {"1": b"x", "1/model.py": MODEL_PY},
        "override file '1' conflicts with override file '1/model.py': a path cannot be both a file and a directory",
    ),
    "directory_then_file": (
        {"1/model.py": MODEL_PY, "1/data/x": b"x", "1/data": b"x"},
        "override file '1/data' conflicts with override file '1/data/x': a path cannot be both a file and a directory",
    ),
    "long_name": ({"1/" + "a" * 256: b"x"}, f"override file '1/{'a' * 126}' has a name longer than 255 bytes"),
    "long_multibyte_name": (
        {"1/" + "\u00e9" * 128: b"x"},
        f"override file '1/{chr(0xE9) * 126}' has a name longer than 255 bytes",
    ),
    "long_path": (
        {"1/" + "/".join(["b" * 200] * 6): b"x"},
        f"override file '1/{'b' * 126}' is longer than 1024 bytes",
    ),
    "empty_component": ({"1//model.py": MODEL_PY}, f"override file '1//model.py' {RELATIVE}"),
    "trailing_slash": ({"1/": MODEL_PY}, f"override file '1/' {RELATIVE}"),
    "dot": ({"1/./model.py": MODEL_PY}, f"override file '1/./model.py' {RELATIVE}"),
    "dot_dot": ({"1/../../x": b"x"}, f"override file '1/../../x' {RELATIVE}"),
    "absolute": ({"/tmp/x": b"x"}, f"override file '/tmp/x' {RELATIVE}"),
    "backslash": ({"1\\model.py": MODEL_PY}, f"override file '1\\model.py' {RELATIVE}"),
    "nul": ({"1/model.py\x00x": MODEL_PY}, f"override file '1/model.py\x00x' {RELATIVE}"),
    "newline": ({"1/model\n.py": MODEL_PY}, f"override file '1/model\n.py' {RELATIVE}"),
    "too_many_files": (
        {"1/model.py": MODEL_PY, **{f"1/data/{i}": b"" for i in range(1000)}},
        "load request has 1001 'file:' overrides, more than the limit of 1000 (--max-override-files)",
    ),
    "too_many_bytes": (
        {"1/model.py": MODEL_PY, "1/big": b"\0" * (MAX_BYTES - len(MODEL_PY) + 1)},
        f"load request 'file:' overrides hold {MAX_BYTES + 1} bytes, more than the limit of {MAX_BYTES} "
        "(--max-override-bytes)",
    ),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_bad_override_sets_are_refused_before_anything_is_written(
    server: ServerProcess, sandbox: Path, protocol: str, case: str
) -> None:
    files, message = REFUSALS[case]
    assert _load(protocol, server, f"bad_{case}", files) == message
    assert _override_dirs(sandbox) == []
    _healthy(server)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_override_directory_lives_only_as_long_as_the_model_uses_it(
    server: ServerProcess, sandbox: Path, protocol: str
) -> None:
    name = f"uploaded_{protocol}"
    assert _load(protocol, server, name, {"1/model.py": FAILING_PY}).startswith(f"load failed for model '{name}': ")
    assert _override_dirs(sandbox) == []  # a failed first load
    assert _load(protocol, server, name, {"1/model.py": MODEL_PY}) == ""
    first = _override_dirs(sandbox)
    assert len(first) == 1
    assert _load(protocol, server, name, {"1/model.py": FAILING_PY}).startswith(f"load failed for model '{name}': ")
    assert _override_dirs(sandbox) == first  # a failed reload: the old model serves from the old files
    assert _load(protocol, server, name, {"1/model.py": MODEL_PY, "1/extra.txt": b"x"}) == ""
    second = _override_dirs(sandbox)
    assert len(second) == 1 and second != first  # a reload: the old files go
    _unload(protocol, server, name)
    assert _override_dirs(sandbox) == []  # an unload
    _healthy(server)


def test_writing_many_override_files_does_not_stall_the_event_loop(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "tmp").mkdir()
    count = 20_000
    server = start_seawall(
        "--model-control-mode=explicit",
        "--allow-unrestricted-model-repository=true",
        "--strict-readiness=false",
        f"--max-override-files={count + 1}",
        repository=tmp_path / "repo",
        env={"TMPDIR": str(tmp_path / "tmp")},
    )
    try:
        files = {"1/model.py": MODEL_PY, **{f"1/data/{i // 100}/{i}": b"x" for i in range(count)}}
        latencies: list[float] = []
        done = threading.Event()

        def probe() -> None:
            while not done.is_set() and len(latencies) < 10_000:
                started = time.monotonic()
                assert http_request(server, "GET", "/v2/health/live")[0] == 200
                latencies.append(time.monotonic() - started)
                time.sleep(0.01)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            assert _load("grpc", server, "many", files) == ""
        finally:
            done.set()
            prober.join(30)
        assert latencies and max(latencies) < 2.5, max(latencies)  # 20,000 files written on the loop: ~12 s
        _unload("grpc", server, "many")
        assert not list((tmp_path / "tmp").iterdir())
        _healthy(server)
    finally:
        server.stop()


@pytest.mark.parametrize("flag", ["--max-override-files", "--max-override-bytes"])
def test_the_limits_must_be_positive(flag: str) -> None:
    result = run_seawall(f"{flag}=0")
    assert result.returncode != 0
    assert f'Bad option: "{flag}".\nmust be at least 1. Got 0' in result.stdout + result.stderr
