"""Differential: model warmup, `reshape` and instance groups on the same probe repository in Seawall and in the
real Triton 2.51 (tests/probe_repository.py): load states and reasons, what the model saw during warmup and
for requests, wire shapes, metadata, instance names and kinds. Deliberate differences (docs/differences.md)
are asserted as such.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests import probe_repository
from tests.harness import TRITON, ServerProcess, http_request, start_seawall, start_triton

#: Triton 2.51 loads these, reading a file outside the model's warmup/ directory; Seawall refuses them
ESCAPES = {"warm_escape", "warm_symlink"}
FLAGS = ("--exit-on-error=false", "--strict-readiness=false")
#: a BYTES warmup file shorter than an element's length prefix: Triton 2.51 refuses the load or crashes (SIGSEGV,
#: 3 loads in 7 seen), so it has a test of its own that accepts either and is never retried
CRASHES_TRITON = "warm_strbad"
#: models whose warmup fails after their stub started: Triton 2.51 at times crashes (SIGSEGV) as it tears such an
#: instance down, so it loads them one at a time through the load API, and is started again after a crash
FAILING_WARMUPS = sorted(
    name for name in probe_repository.BAD if name.startswith("warm_") and name not in ESCAPES and name != CRASHES_TRITON
)
ATTEMPTS = 6


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return probe_repository.build(tmp_path_factory.mktemp("probe_diff"), seawall_only=False)


class _Triton:
    """The reference server in explicit mode with every model but the failing warmups loaded; `reason` loads one
    of those and reads its state, starting the server again if the load crashed it."""

    def __init__(self, repository: Path) -> None:
        self._repository = repository
        self.reasons: dict[str, dict[str, Any]] = {}
        self.server = self._start()

    def _start(self) -> ServerProcess:
        names = [p.name for p in self._repository.iterdir() if p.name not in {*FAILING_WARMUPS, CRASHES_TRITON}]
        loads = [f"--load-model={name}" for name in sorted(names)]
        for _ in range(ATTEMPTS - 1):  # Triton 2.51 at times aborts while starting on a loaded machine
            try:  # (boost::interprocess::lock_exception in its python backend, seen 1 start in 4)
                return start_triton(self._repository, "--model-control-mode=explicit", *loads, *FLAGS, timeout=300)
            except RuntimeError as exc:
                if "exited" not in str(exc):
                    raise
        return start_triton(self._repository, "--model-control-mode=explicit", *loads, *FLAGS, timeout=300)

    def load(self, name: str) -> dict[str, Any]:
        outcomes = []  # why each attempt was given up, for the failure's message
        for _ in range(ATTEMPTS):
            try:
                _call(self.server, "POST", f"/v2/repository/models/{name}/load", {})
                entry = _index(self.server)[name]
            except OSError as exc:
                entry, why = {}, repr(exc)
            else:
                why = "the load was answered"
            if self.server.process.poll() is None and entry:
                return entry
            outcomes.append(f"exit {self.server.process.poll()}, {why}: {' | '.join(self.server.lines[-3:])}")
            self.server.stop()
            self.server = self._start()
        raise AssertionError(f"Triton crashed {ATTEMPTS} times loading {name}:\n" + "\n".join(outcomes))


@pytest.fixture(scope="module")
def reference(repository: Path) -> Iterator[_Triton]:
    if not TRITON.exists():
        pytest.skip(f"the reference Triton is not available at {TRITON}")
    holder = _Triton(repository)
    for name in FAILING_WARMUPS:
        holder.reasons[name] = holder.load(name)
    yield holder
    holder.server.stop()


@pytest.fixture(scope="module")
def triton(reference: _Triton) -> ServerProcess:
    return reference.server


@pytest.fixture(scope="module")
def seawall(repository: Path) -> Iterator[ServerProcess]:
    server = start_seawall(*FLAGS, repository=repository, timeout=300)
    yield server
    server.stop()


def _call(server: ServerProcess, method: str, path: str, document: Any = None) -> tuple[int, Any]:
    body = None if document is None else json.dumps(document).encode()
    status, _, reply = http_request(server, method, path, body, timeout=60)
    return status, json.loads(reply) if reply else None


def _index(server: ServerProcess) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in _call(server, "POST", "/v2/repository/index")[1]}


def test_load_states_and_reasons_match(reference: _Triton, seawall: ServerProcess) -> None:
    theirs, ours = _index(reference.server) | reference.reasons, _index(seawall)
    assert set(theirs) == set(ours)
    for name, entry in ours.items():
        if name == CRASHES_TRITON:  # never loaded here: test_a_bytes_warmup_file_cut_short_...
            continue
        expected = theirs[name]
        if name in ESCAPES:
            assert (expected["state"], entry["state"]) == ("READY", "UNAVAILABLE")
            continue
        assert entry["state"] == expected["state"], name
        if name in probe_repository.BAD:
            reason = probe_repository.BAD[name][1]
            if reason is not None:
                assert entry["reason"] == reason
                # Triton prefixes its status code, and may add the model's traceback and a "; "
                assert expected["reason"].split(": ", 1)[1].startswith(reason), (name, expected["reason"])
            else:
                assert entry["reason"] == probe_repository.SEAWALL_REASONS[name]
    assert http_request(seawall, "GET", "/v2/health/ready")[0] == 200


def _load_outcome(repository: Path, name: str) -> str:
    """Load `name` into a Triton of its own (explicit mode, nothing else loaded): "crashed" when the process died
    during the load or right after it, else the model's state and reason in the index."""
    server = start_triton(repository, "--model-control-mode=explicit", *FLAGS, timeout=300)
    try:
        try:
            _call(server, "POST", f"/v2/repository/models/{name}/load", {})
            entry = _index(server)[name]
        except OSError:  # the connection died with the process
            server.process.wait(60)
            return "crashed"
        if server.process.poll() is not None:
            return "crashed"
        return f"{entry['state']}: {entry.get('reason', '')}"
    finally:
        server.stop()


def test_a_bytes_warmup_file_cut_short_is_refused_by_name_where_triton_may_crash(
    repository: Path, seawall: ServerProcess
) -> None:
    """The element's length prefix says 99 bytes, the file holds 2: Triton 2.51 refuses the load or dies of it
    (SIGSEGV, nondeterministic); Seawall refuses this model alone, with its reason, and serves the others."""
    if not TRITON.exists():
        pytest.skip(f"the reference Triton is not available at {TRITON}")
    outcome = _load_outcome(repository, CRASHES_TRITON)
    reason = probe_repository.SEAWALL_REASONS[CRASHES_TRITON]
    assert outcome == "crashed" or (outcome.startswith("UNAVAILABLE: ") and reason in outcome), outcome
    entry = _index(seawall)[CRASHES_TRITON]
    assert (entry["state"], entry["reason"]) == ("UNAVAILABLE", reason)
    refused = _call(seawall, "POST", f"/v2/models/{CRASHES_TRITON}/infer", {"inputs": []})
    assert refused == (404, {"error": f"Request for unknown model: '{CRASHES_TRITON}' has no available versions"})
    assert http_request(seawall, "GET", "/v2/health/ready")[0] == 200
    index = _index(seawall)
    assert {name: index[name]["state"] for name in probe_repository.GOOD} == dict.fromkeys(
        probe_repository.GOOD, "READY"
    )
    assert seawall.process.poll() is None


def _infer(server: ServerProcess, model: str, *inputs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    status, reply = _call(server, "POST", f"/v2/models/{model}/infer", {"inputs": list(inputs)})
    assert status == 200, reply
    tensors = {t["name"]: t for t in reply["outputs"]}
    return json.loads(tensors.pop("INFO")["data"][0]), tensors


def _fp32(shape: list[int], count: int) -> dict[str, Any]:
    return {"name": "INPUT0", "shape": shape, "datatype": "FP32", "data": list(range(count))}


def _without_random(seen: list[dict[str, Any]]) -> list[Any]:
    """The shapes and dtypes of every request seen, with values except those of the random sample (index 4)."""
    return [
        {name: value if index != 4 else value[:2] for name, value in request.items()}
        for index, request in enumerate(seen)
    ]


CASES = {
    "warm_data": (
        _fp32([1, 3], 3),
        {"name": "S", "shape": [1, 2], "datatype": "BYTES", "data": ["x", "y"]},
    ),
    "warm_nobatch": (_fp32([3], 3),),
    "warm_reshape": (_fp32([2, 4], 8),),
    "reshape_in": (_fp32([2, 4], 8),),
    "reshape_scalar": (_fp32([3, 1], 3),),
    "reshape_var": (_fp32([3, 4], 12),),
    "reshape_out": (_fp32([2, 4], 8),),
}


@pytest.mark.parametrize("model", sorted(CASES))
def test_the_model_sees_and_returns_the_same(triton: ServerProcess, seawall: ServerProcess, model: str) -> None:
    expected_info, expected = _infer(triton, model, *CASES[model])
    info, tensors = _infer(seawall, model, *CASES[model])
    assert _without_random(info["seen"]) == _without_random(expected_info["seen"])
    assert tensors == expected
    assert _call(seawall, "GET", f"/v2/models/{model}") == _call(triton, "GET", f"/v2/models/{model}")


def test_a_request_in_the_model_facing_shape_is_refused_alike(triton: ServerProcess, seawall: ServerProcess) -> None:
    document = {"inputs": [_fp32([1, 2, 2], 4)]}
    assert _call(seawall, "POST", "/v2/models/reshape_in/infer", document) == _call(
        triton, "POST", "/v2/models/reshape_in/infer", document
    )


def test_instance_groups_name_and_kind_instances_alike(triton: ServerProcess, seawall: ServerProcess) -> None:
    def instances(server: ServerProcess) -> list[tuple[str, str]]:
        """Four 600 ms requests at once: one on each instance, in both servers."""
        document = {"inputs": [_fp32([3], 3)], "parameters": {"sleep_ms": 600}}
        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda _: _call(server, "POST", "/v2/models/groups/infer", document), range(4)))
        infos = [json.loads(next(t for t in r["outputs"] if t["name"] == "INFO")["data"][0]) for _, r in replies]
        return sorted((info["instance"], info["kind"]) for info in infos)

    assert instances(seawall) == instances(triton)
    assert instances(seawall) == [
        ("groups_0_0", "CPU"),
        ("groups_0_1", "CPU"),
        ("groups_2_0", "CPU"),
        ("named_0", "MODEL"),
    ]
    config = _call(seawall, "GET", "/v2/models/groups/config")[1]
    expected = _call(triton, "GET", "/v2/models/groups/config")[1]
    assert config["instance_group"] == expected["instance_group"]
