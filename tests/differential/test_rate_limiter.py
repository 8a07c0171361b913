"""Differential: the rate limiter (`--rate-limit=execution_count`) on the real Triton 2.51 and on Seawall, same
repository: instances of three models share one resource; the waiting instance with the lowest execution
count × priority runs first; a model that needs more of a resource than `--rate-limit-resource` gives fails its
load with Triton's message while the others serve.

Deterministic: the `gate` model holds the resource until the test creates a file, and the test waits until each
request is queued (`nv_inference_pending_request_count`) before it goes on.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.differential.test_dynamic_batcher import GATE, Gate, healthy
from tests.harness import TRITON, ServerProcess, http_request, start_seawall, start_triton

LIMITED = (
    "instance_group [ {{ count: 1 kind: KIND_CPU rate_limiter {{ "
    'resources [ {{ name: "{name}" count: {count} }} ] priority: {priority} }} }} ]\n'
)


def model(root: Path, name: str, resource: str = "R", count: int = 1, priority: int = 1) -> None:
    shutil.copytree(GATE, root / name)
    config = root / name / "config.pbtxt"
    text = config.read_text().replace('name: "gate"', f'name: "{name}"')
    config.write_text(text + LIMITED.format(name=resource, count=count, priority=priority))


def both(root: Path, *args: str) -> Iterator[dict[str, ServerProcess]]:
    if not TRITON.exists():
        pytest.skip(f"the reference Triton is not available at {TRITON}")
    triton = start_triton(root, *args)
    try:
        seawall = start_seawall(*args, repository=root)
    except BaseException:
        triton.stop()
        raise
    try:
        yield {"triton": triton, "seawall": seawall}
    finally:
        seawall.stop()
        triton.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    root = tmp_path_factory.mktemp("rate_limited")
    model(root, "first", priority=1)
    model(root, "second", priority=2)
    model(root, "holder", priority=1)
    yield from both(root, "--rate-limit=execution_count")


@pytest.mark.parametrize("which", ["triton", "seawall"])
def test_waiting_instances_run_by_execution_count_times_priority(
    servers: dict[str, ServerProcess], which: str, tmp_path: Path
) -> None:
    server = servers[which]
    folder = tmp_path / "g"
    folder.mkdir()
    gates = {name: Gate(server, name, tmp_path / name) for name in ("holder", "first", "second")}
    try:
        for name in ("first", "second"):  # one execution each: first then weighs 1 x 1, second 1 x 2
            status, _, _ = http_request(server, "POST", f"/v2/models/{name}/infer", _plain())
            assert status == 200
        for gate in gates.values():
            gate.folder = folder  # every model reports to one order file
        held = gates["holder"].send("holder")
        gates["holder"].wait_started("holder")  # holds the only R
        late = gates["second"].send("second")  # arrives first, but weighs more
        gates["second"].wait_pending(1)
        early = gates["first"].send("first")
        gates["first"].wait_pending(1)
        gates["holder"].open()
        assert [f.result(60)[0] for f in (held, late, early)] == [200, 200, 200]
        assert gates["holder"].order() == ["holder", "first", "second"]
        assert healthy(server)
    finally:
        for gate in gates.values():
            gate.close()


def _plain() -> bytes:
    return b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,1],"data":[1.0]}]}'


@pytest.fixture(scope="module")
def short_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    root = tmp_path_factory.mktemp("rate_short")
    model(root, "big", "R1", count=4)
    model(root, "other", "R2", count=1)
    model(root, "fits", "R1", count=2)
    flags = (
        "--rate-limit=execution_count",
        "--rate-limit-resource=R1:2",
        "--exit-on-error=false",
        "--strict-readiness=false",
    )
    yield from both(root, *flags)


@pytest.mark.parametrize("which", ["triton", "seawall"])
def test_a_resource_short_of_what_an_instance_needs_fails_the_load(
    short_servers: dict[str, ServerProcess], which: str
) -> None:
    server = short_servers[which]
    index = _index(server)
    assert index["fits"]["state"] == "READY"
    assert index["big"]["state"] == index["other"]["state"] == "UNAVAILABLE"
    reasons = {name: index[name]["reason"] for name in ("big", "other")}
    prefix = "Invalid argument: " if which == "triton" else ""
    assert reasons == {
        "big": f'{prefix}Resource count for "R1" is limited to 2 which will prevent scheduling of one or more model '
        "instances, the minimum required count is 4",
        # a resource --rate-limit-resource does not list has none
        "other": f'{prefix}Resource count for "R2" is limited to 0 which will prevent scheduling of one or more '
        "model instances, the minimum required count is 1",
    }
    assert http_request(server, "POST", "/v2/models/fits/infer", _plain())[0] == 200
    assert healthy(server)


def _index(server: ServerProcess) -> dict[str, dict[str, str]]:
    status, _, body = http_request(server, "POST", "/v2/repository/index", b"{}")
    assert status == 200
    return {entry["name"]: entry for entry in json.loads(body)}
