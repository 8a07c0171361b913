"""Model code runs only from verified source (issue 9, findings 1 and 11), against a real Seawall process.

Planted bytecode (`__pycache__` pycs, unchecked-hash and timestamp; sourceless `.pyc`) and extension modules,
for `model.py` and for a module it imports, in a stub and in the server process (SEAWALL_IN_PROCESS true and
inline): an unpinned model runs its source and never the plant; sourceless and compiled modules are refused;
a pinned model refuses any unpinned file. Poll mode notices a plant. A load-time `config` override cannot drop
the repository's checksum pins.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import marshal
import py_compile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.harness import ServerProcess, http_request, start_seawall

MODEL_PY = '''"""OUT is helper.VALUE."""
import numpy as np
import triton_python_backend_utils as pb_utils

import helper


class TritonPythonModel:
    def execute(self, requests):
        value = np.array([helper.VALUE], dtype=np.int32)
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUT", value)]) for _ in requests]
'''
HELPER_PY = "VALUE = 1\n"
TAG = importlib.util.cache_from_source("x.py").rsplit("/", 1)[-1][len("x.") :]  # e.g. cpython-311.pyc
EXTENSION = importlib.machinery.EXTENSION_SUFFIXES[0]
COMPILED = (
    "is compiled code; Seawall imports only .py source from a model directory (no bytecode, no extension modules)"
)

#: plant kind → the planted file (relative to the model directory)
PLANTS = {
    "model_unchecked": f"1/__pycache__/model.{TAG}",
    "model_timestamp": f"1/__pycache__/model.{TAG}",
    "helper_unchecked": f"1/__pycache__/helper.{TAG}",
    "helper_timestamp": f"1/__pycache__/helper.{TAG}",
    "package_unchecked": f"1/helper/__pycache__/__init__.{TAG}",
    "helper_sourceless": "1/helper.pyc",
    "helper_extension": f"1/helper{EXTENSION}",
}
#: plants an unpinned model refuses to import (the others are never read)
REFUSED = {"helper_sourceless", "helper_extension"}
MODES = ("false", "true", "inline")


def _config(name: str, mode: str = "false", pins: dict[str, str] | None = None) -> str:
    text = (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n'
        'input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
        'output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
        "instance_group [ { kind: KIND_CPU } ]\n"
        f'parameters {{ key: "SEAWALL_IN_PROCESS" value {{ string_value: "{mode}" }} }}\n'
    )
    if pins is not None:
        entries = ", ".join(f'{{ key: "SHA256:{path}" value: "{digest}" }}' for path, digest in sorted(pins.items()))
        text += f'model_repository_agents {{ agents [ {{ name: "checksum", parameters [ {entries} ] }} ] }}\n'
    return text


def _evil(marker: Path, model: bool) -> str:
    """Source that leaves `marker` behind and answers 666."""
    if model:
        return MODEL_PY + f"\nopen({str(marker)!r}, 'w').write('planted')\nhelper.VALUE = 666\n"
    return f"open({str(marker)!r}, 'w').write('planted')\nVALUE = 666\n"


def _timestamp_pyc(source: str, target: Path, like: Path) -> None:
    """A timestamp pyc of `source` whose header matches the real source file `like` (mtime and size)."""
    stat = like.stat()
    code = compile(source, str(like), "exec")
    header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
    header += (int(stat.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + (stat.st_size & 0xFFFFFFFF).to_bytes(
        4, "little"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(header + marshal.dumps(code))


def _unchecked_pyc(source: str, target: Path, scratch: Path) -> None:
    scratch.write_text(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    py_compile.compile(
        str(scratch), cfile=str(target), doraise=True, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
    )


def make_model(
    repo: Path, name: str, kind: str, mode: str, pinned: bool, markers: Path, plant_now: bool = True
) -> Path:
    """A model answering 1 (from its helper module), with the plant of `kind` (if `plant_now`)."""
    model = repo / name
    version = model / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(MODEL_PY)
    if kind == "package_unchecked":
        (version / "helper").mkdir()
        (version / "helper" / "__init__.py").write_text(HELPER_PY)
    elif kind != "helper_sourceless":
        (version / "helper.py").write_text(HELPER_PY)
    pins = None
    if pinned:
        pins = {
            str(path.relative_to(model)): hashlib.sha256(path.read_bytes()).hexdigest() for path in model.rglob("*.py")
        }
    (model / "config.pbtxt").write_text(_config(name, mode, pins))
    if plant_now:
        plant(model, kind, markers / f"{name}.pwned")
    return model


def plant(model: Path, kind: str, marker: Path) -> None:
    target = model / PLANTS[kind]
    scratch = model.parent.parent / f"scratch-{model.name}.py"
    evil = _evil(marker, model=kind.startswith("model"))
    if kind.endswith("timestamp"):
        _timestamp_pyc(evil, target, model / "1" / ("model.py" if kind.startswith("model") else "helper.py"))
    elif kind == "helper_extension":
        target.write_bytes(b"\x7fELF planted, not a real shared object")
    else:
        _unchecked_pyc(evil, target, scratch)


def _cases() -> list[tuple[str, str, bool]]:
    unpinned = [(kind, mode, False) for kind in PLANTS for mode in MODES]
    pinned = [(kind, mode, True) for kind in PLANTS for mode in ("false", "true")]
    return unpinned + pinned


def _name(kind: str, mode: str, pinned: bool) -> str:
    return f"{kind}_{mode}_{'pinned' if pinned else 'open'}"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model_code")
    (root / "repo").mkdir()
    (root / "markers").mkdir()
    for kind, mode, pinned in _cases():
        make_model(root / "repo", _name(kind, mode, pinned), kind, mode, pinned, root / "markers")
    for mode in MODES:
        make_model(root / "repo", f"clean_{mode}", "helper_unchecked", mode, False, root / "markers", plant_now=False)
    for protocol in ("http", "grpc"):
        make_model(root / "repo", f"guarded_{protocol}", "helper_unchecked", "false", True, root / "markers", False)
    return root


@pytest.fixture(scope="module")
def server(sandbox: Path) -> Iterator[ServerProcess]:
    process = start_seawall(
        "--model-control-mode=explicit",
        "--allow-unrestricted-model-repository=true",
        "--strict-readiness=false",
        repository=sandbox / "repo",
    )
    yield process
    process.stop()


def _load(server: ServerProcess, name: str, body: dict[str, object] | None = None) -> tuple[int, str]:
    status, _, reply = http_request(
        server, "POST", f"/v2/repository/models/{name}/load", json.dumps(body).encode() if body else None
    )
    return status, json.loads(reply).get("error", "") if reply else ""


def _out(server: ServerProcess, name: str) -> int:
    client = httpclient.InferenceServerClient(server.http)
    tensor = httpclient.InferInput("IN", [1], "INT32")
    tensor.set_data_from_numpy(np.array([0], dtype=np.int32))
    result = client.infer(name, [tensor]).as_numpy("OUT")
    assert result is not None
    return int(result[0])


def _healthy(server: ServerProcess) -> None:
    assert http_request(server, "GET", "/v2/health/ready")[0] == 200
    assert server.process.poll() is None


@pytest.mark.parametrize(("kind", "mode", "pinned"), _cases(), ids=[_name(*case) for case in _cases()])
def test_planted_code_never_runs(server: ServerProcess, sandbox: Path, kind: str, mode: str, pinned: bool) -> None:
    name = _name(kind, mode, pinned)
    status, error = _load(server, name)
    if pinned:
        assert (status, error) == (
            400,
            f"load failed for model '{name}': checksum agent: file '{PLANTS[kind]}' has no SHA256 pin;\n",
        )
    elif kind in REFUSED:
        assert status == 400
        assert error.startswith(f"load failed for model '{name}': ")  # auto-complete's stub refuses first
        assert error.endswith(f": RepositoryCodeError: model file '{PLANTS[kind]}' {COMPILED};\n")
    else:
        assert (status, error) == (200, "")
        assert _out(server, name) == 1  # the source ran, not the planted bytecode
    assert not (sandbox / "markers" / f"{name}.pwned").exists()
    _healthy(server)


@pytest.mark.parametrize("mode", MODES)
def test_loading_writes_no_bytecode_into_the_repository(server: ServerProcess, sandbox: Path, mode: str) -> None:
    assert _load(server, f"clean_{mode}") == (200, "")
    assert _out(server, f"clean_{mode}") == 1
    assert sorted(p.name for p in (sandbox / "repo" / f"clean_{mode}").rglob("*")) == [
        "1",
        "config.pbtxt",
        "helper.py",
        "model.py",
    ]


def _override(name: str, agents: object = None) -> str:
    config: dict[str, object] = {
        "name": name,
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "IN", "data_type": "TYPE_INT32", "dims": [1]}],
        "output": [{"name": "OUT", "data_type": "TYPE_INT32", "dims": [1]}],
    }
    if agents is not None:
        config["model_repository_agents"] = agents
    return json.dumps(config)


def _stored_agents(model: Path) -> dict[str, object]:
    pins = {
        "SHA256:" + str(p.relative_to(model)): hashlib.sha256(p.read_bytes()).hexdigest() for p in model.rglob("*.py")
    }
    return {"agents": [{"name": "checksum", "parameters": pins}]}


def _load_via(
    protocol: str, server: ServerProcess, name: str, config: str, files: dict[str, bytes] | None = None
) -> str:
    """Load over `protocol`; "" on success, else the refusal (HTTP: 400 checked here; gRPC: INVALID_ARGUMENT)."""
    try:
        if protocol == "http":
            httpclient.InferenceServerClient(server.http).load_model(name, config=config, files=files)
        else:
            grpcclient.InferenceServerClient(server.grpc).load_model(name, config=config, files=files)
    except InferenceServerException as exc:
        assert exc.status() == ("400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT")
        return str(exc.message())
    return ""


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_config_override_keeps_the_repository_pins(server: ServerProcess, sandbox: Path, protocol: str) -> None:
    name = f"guarded_{protocol}"
    model = sandbox / "repo" / name
    stored = _stored_agents(model)
    assert _load_via(protocol, server, name, _override(name)) == ""  # the pins are merged in, and hold
    assert _out(server, name) == 1
    good = (model / "1" / "model.py").read_text()
    marker = sandbox / "markers" / f"{name}.pwned"
    evil = good + f"\nopen({str(marker)!r}, 'w').write('planted')\nhelper.VALUE = 666\n"
    (model / "1" / "model.py").write_text(evil)
    mismatch = f"load failed for model '{name}': checksum agent: file '1/model.py' does not match its SHA256 pin;\n"
    assert _load_via(protocol, server, name, _override(name)) == mismatch
    assert _load_via(protocol, server, name, _override(name, {"agents": []})) == mismatch
    other = {
        "agents": [{"name": "checksum", "parameters": {"SHA256:1/model.py": hashlib.sha256(evil.encode()).hexdigest()}}]
    }
    assert _load_via(protocol, server, name, _override(name, other)) == (
        f"load failed for model '{name}': load parameter 'config' of model '{name}' cannot change "
        "'model_repository_agents': the agents of the repository's configuration always apply;\n"
    )
    (model / "1" / "model.py").write_text(good)
    # uploaded files are held to the repository's pins too
    files = {"file:1/model.py": evil.encode(), "file:1/helper.py": HELPER_PY.encode()}
    assert _load_via(protocol, server, name, _override(name), files) == mismatch
    assert not marker.exists()
    assert _out(server, name) == 1  # the verified model still serves
    assert _load_via(protocol, server, name, _override(name, stored)) == ""  # the same agents are fine
    assert _out(server, name) == 1
    _healthy(server)


def _wait_for(server: ServerProcess, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        assert time.monotonic() < deadline, f"not logged within {timeout} s: {text}\n{server.log()}"
        time.sleep(0.2)


def test_poll_mode_notices_a_plant(tmp_path: Path) -> None:
    repo, markers = tmp_path / "repo", tmp_path / "markers"
    repo.mkdir()
    markers.mkdir()
    pinned = make_model(repo, "pinned_poll", "model_unchecked", "false", True, markers, plant_now=False)
    unpinned = make_model(repo, "open_poll", "helper_unchecked", "true", False, markers, plant_now=False)
    server = start_seawall(
        "--model-control-mode=poll", "--repository-poll-secs=1", "--strict-readiness=false", repository=repo
    )
    try:
        assert _out(server, "pinned_poll") == 1 and _out(server, "open_poll") == 1
        plant(pinned, "model_unchecked", markers / "pinned_poll.pwned")
        plant(unpinned, "helper_unchecked", markers / "open_poll.pwned")
        _wait_for(
            server,
            f"failed to load model 'pinned_poll': checksum agent: file '1/__pycache__/model.{TAG}' has no SHA256 pin",
        )
        _wait_for(server, "model 'open_poll' changed in the repository: loading")
        deadline = time.monotonic() + 30
        while server.log().count("successfully loaded 'open_poll' version 1") < 2:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        assert _out(server, "pinned_poll") == 1  # the verified model keeps serving
        assert _out(server, "open_poll") == 1  # reloaded from source, the plant ignored
        assert not list(markers.iterdir())
        _healthy(server)
    finally:
        server.stop()
