"""Poll mode end to end: while a client sends add_sub requests back to back, the repository changes under the
server (new version, replaced model.py, edited config, broken config, removed model) and not one request fails."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.harness import EXAMPLES, ServerProcess, start_seawall
from tests.harness import http_request as request

_ADD_SUB = (EXAMPLES / "add_sub" / "1" / "model.py").read_text()


@dataclass
class Traffic:
    """A client thread sending add_sub requests continuously; it records what it saw."""

    url: str
    failures: list[str] = field(default_factory=list)
    seen: list[tuple[str, float]] = field(default_factory=list)  # (model_version, OUTPUT0[0])
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        client = httpclient.InferenceServerClient(self.url)
        inputs = [httpclient.InferInput("INPUT0", [4], "FP32"), httpclient.InferInput("INPUT1", [4], "FP32")]
        for tensor in inputs:
            tensor.set_data_from_numpy(np.ones(4, dtype=np.float32))
        while not self._stop.is_set():
            try:
                result = client.infer("add_sub", inputs)
                version = result.get_response()["model_version"]
                self.seen.append((version, float(result.as_numpy("OUTPUT0")[0])))
            except Exception as exc:  # every failure is recorded, none may happen
                self.failures.append(repr(exc))
        client.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def wait_for(self, predicate: Callable[[tuple[str, float]], bool], timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.seen and predicate(self.seen[-1]):
                return
            time.sleep(0.05)
        raise AssertionError(f"not seen in {timeout}s; last: {self.seen[-1:]}, failures: {self.failures[:3]}")


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    for name in ("add_sub", "identity"):
        shutil.copytree(EXAMPLES / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@pytest.fixture
def server(repository: Path) -> Iterator[ServerProcess]:
    process = start_seawall("--model-control-mode=poll", "--repository-poll-secs=1", repository=repository)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def traffic(server: ServerProcess) -> Iterator[Traffic]:
    running = Traffic(server.http)
    running.start()
    yield running
    running.stop()


def _index(server: ServerProcess) -> list[dict[str, str]]:

    status, _, body = request(server, "POST", "/v2/repository/index")
    assert status == 200
    return list(json.loads(body))


def _write_model(path: Path, offset: int) -> None:
    """add_sub whose OUTPUT0 is shifted by `offset`, so the test can tell which code serves."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_ADD_SUB.replace("(in0 + in1)", f"(in0 + in1 + {offset})"))


def test_changes_are_picked_up_without_failing_a_request(
    server: ServerProcess, traffic: Traffic, repository: Path
) -> None:
    traffic.wait_for(lambda seen: seen == ("1", 2.0))
    _write_model(repository / "add_sub" / "2" / "model.py", 10)  # a new version
    traffic.wait_for(lambda seen: seen == ("2", 12.0))
    _write_model(repository / "add_sub" / "2" / "model.py", 100)  # replaced model.py
    traffic.wait_for(lambda seen: seen == ("2", 102.0))
    config = repository / "add_sub" / "config.pbtxt"
    text = config.read_text()
    config.write_text(text + '\nparameters { key: "edited" value { string_value: "yes" } }\n')
    deadline = time.monotonic() + 15
    client = httpclient.InferenceServerClient(server.http)
    while "edited" not in client.get_model_config("add_sub").get("parameters", {}):
        assert time.monotonic() < deadline, "the edited config was not loaded"
        time.sleep(0.1)
    client.close()
    config.write_text(text + "\nthis is not a config\n")  # broken: the old version keeps serving
    time.sleep(2.5)
    traffic.wait_for(lambda seen: seen == ("2", 102.0))
    assert request(server, "GET", "/v2/models/add_sub/ready")[0] == 200
    shutil.rmtree(repository / "identity")
    deadline = time.monotonic() + 15
    while any(row["name"] == "identity" for row in _index(server)):
        assert time.monotonic() < deadline, "a removed model stays in the index"
        time.sleep(0.1)
    traffic.stop()
    assert traffic.failures == []
    assert len(traffic.seen) > 20
