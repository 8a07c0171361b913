"""Regression tests for what fuzzing found (tests/fuzz): each input that escaped as a foreign exception, sent
again through the real process, with the exact refusal and the server healthy afterwards."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from seawall.core import model_config
from seawall.errors import InvalidArgumentError
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
