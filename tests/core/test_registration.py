"""Model directories registered at run time (the core API under SageMaker MME), through `open_server()`."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

import seawall
from seawall.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, UnavailableError
from seawall.options import Options, RepositoryOptions
from tests.harness import EXAMPLES, TEST_MODELS

EXPLICIT = Options(repository=RepositoryOptions(paths=(str(EXAMPLES),), control_mode="explicit", load_models=()))


def _copy(model: str, target: Path) -> Path:
    shutil.copytree(TEST_MODELS / model if (TEST_MODELS / model).is_dir() else EXAMPLES / model, target)
    return target


def _request(name: str) -> seawall.InferRequest:
    x = np.arange(4, dtype=np.float32)
    return seawall.InferRequest(name, [seawall.Tensor.from_numpy("INPUT0", x), seawall.Tensor.from_numpy("INPUT1", x)])


async def test_register_serves_under_the_new_name_then_unregister_forgets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="seawall.audit")
    directory = _copy("add_sub", tmp_path / "model")  # config.pbtxt says name: "add_sub"
    async with seawall.open_server(EXPLICIT) as server:
        await server.register_model_directory("abc123", str(directory), caller="peer=p")
        assert server.model_ready("abc123")
        response = await server.infer(_request("abc123"))
        assert response.model_name == "abc123"
        assert [(e.name, e.state) for e in server.repository_index() if e.name == "abc123"] == [("abc123", "READY")]
        assert server.model_config("abc123").name == "abc123"
        with pytest.raises(AlreadyExistsError, match="conflicting mapping for 'abc123'"):
            await server.register_model_directory("abc123", str(directory))
        await server.unregister_model_directory("abc123", caller="peer=p")
        assert not server.model_ready("abc123")
        assert all(e.name != "abc123" for e in server.repository_index())
        with pytest.raises(NotFoundError):
            await server.unregister_model_directory("abc123")
        # the name is free again
        await server.register_model_directory("abc123", str(directory))
        assert server.is_ready()
    assert [r.getMessage() for r in caplog.records if r.name == "seawall.audit"][:3] == [
        'caller="peer=p" action="register model directory" target="abc123" result=OK',
        'caller="in-process" action="register model directory" target="abc123" result=ALREADY_EXISTS',
        'caller="peer=p" action="unregister model directory" target="abc123" result=OK',
    ]


async def test_register_refusals(tmp_path: Path) -> None:
    good = _copy("add_sub", tmp_path / "good")
    broken = _copy("init_fail", tmp_path / "broken")
    async with seawall.open_server(EXPLICIT) as server:
        with pytest.raises(AlreadyExistsError):  # a repository model's name is taken, loaded or not
            await server.register_model_directory("identity", str(good))
        with pytest.raises(InvalidArgumentError, match="^invalid model name"):
            await server.register_model_directory("../x", str(good))
        with pytest.raises(InvalidArgumentError, match="model directory not found"):
            await server.register_model_directory("x", str(tmp_path / "missing"))
        with pytest.raises(InvalidArgumentError, match="^load failed for model 'x'"):
            await server.register_model_directory("x", str(broken))
        assert all(e.name != "x" for e in server.repository_index())
        assert server.is_ready()
        await server.register_model_directory("x", str(good))  # a failed load left nothing behind
    async with seawall.open_server(EXPLICIT.replace(repository=RepositoryOptions(paths=(str(EXAMPLES),)))) as server:
        with pytest.raises(UnavailableError, match="not allowed if model control mode is not EXPLICIT"):
            await server.register_model_directory("x", str(good))


async def test_repository_load_and_unload_reach_a_registered_model(tmp_path: Path) -> None:
    directory = _copy("add_sub", tmp_path / "model")
    async with seawall.open_server(EXPLICIT) as server:
        await server.register_model_directory("mapped", str(directory))
        await server.unload_model("mapped")
        assert not server.model_ready("mapped")
        await server.load_model("mapped")  # reloads from the registered directory
        assert server.model_ready("mapped")
