"""Resolve, then run: `InferenceServer.model()` binds a request to a served model (config, input spec, raw-input
layout, limits), whose `infer` runs the pipeline of `core.inference`; the responses it is given are never modified."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

import seawall
from seawall.core import tensor_io
from seawall.core.shm import SharedMemoryManager
from seawall.core.types import RawInputSpec, RequestedOutput, Tensor
from seawall.errors import InvalidArgumentError, NotFoundError, UnavailableError
from seawall.options import Options, RepositoryOptions
from tests.harness import EXAMPLES

OPTIONS = Options(repository=RepositoryOptions(paths=(str(EXAMPLES),)))


def _add_sub_inputs(x: np.ndarray) -> list[seawall.Tensor]:
    return [seawall.Tensor.from_numpy("INPUT0", x), seawall.Tensor.from_numpy("INPUT1", x)]


async def test_a_served_model_exposes_what_frontends_decode_with_and_runs_requests() -> None:
    async with seawall.open_server(OPTIONS) as server:
        served = server.model("add_sub")
        assert (served.name, served.version, served.config.name) == ("add_sub", 1, "add_sub")
        assert served.spec.input_order == ("INPUT0", "INPUT1")
        assert served.raw_input == RawInputSpec("INPUT0", "FP32", (4,), 0, 2)
        assert served.limits == OPTIONS.limits
        assert server.model("identity", "1").raw_input == RawInputSpec("INPUT0", "FP32", (-1,), 8, 1)
        assert server.model("string_identity").raw_input == RawInputSpec("INPUT0", "BYTES", (-1,), 0, 1)
        x = np.arange(4, dtype=np.float32)
        response = await served.infer(seawall.InferRequest("add_sub", _add_sub_inputs(x), id="r"))
        assert (response.model_name, response.model_version, response.id) == ("add_sub", "1", "r")
        assert [t.name for t in response.outputs] == ["OUTPUT0", "OUTPUT1"]
        np.testing.assert_array_equal(response.outputs[0].data, x + x)
        [stats] = server.model_statistics("add_sub")
        assert stats.success.count == 1


async def test_a_model_that_is_not_decoupled_streams_one_final_message() -> None:
    async with seawall.open_server(OPTIONS) as server:
        served = server.model("add_sub")
        assert not served.decoupled
        x = np.arange(4, dtype=np.float32)
        messages = [m async for m in served.stream(seawall.InferRequest("add_sub", _add_sub_inputs(x), id="s"))]
        assert [(m.error, m.final) for m in messages] == [(None, True)]
        assert messages[0].response is not None
        np.testing.assert_array_equal(messages[0].response.outputs[1].data, x - x)
        with pytest.raises(InvalidArgumentError, match=r"^\[request id: <id_unknown>\] expected 2 inputs"):
            [m async for m in served.stream(seawall.InferRequest("add_sub", _add_sub_inputs(x)[:1]))]


async def test_resolving_refuses_like_infer() -> None:
    async with seawall.open_server(OPTIONS) as server:
        with pytest.raises(NotFoundError, match="^Request for unknown model: 'nope' is not found$"):
            server.model("nope")
        with pytest.raises(NotFoundError, match="^Request for unknown model: 'add_sub' version 7 is not found$"):
            server.model("add_sub", "7")
        with pytest.raises(InvalidArgumentError, match="^failed to get model version from specified version string"):
            server.model("add_sub", "x")
        with pytest.raises(InvalidArgumentError, match="^invalid model name: "):
            server.model("../add_sub")
        served = server.model("add_sub")
        server.start_draining()
        with pytest.raises(UnavailableError, match="^Server is shutting down$"):
            server.model("add_sub")
        x = np.ones(4, dtype=np.float32)
        with pytest.raises(UnavailableError, match="^Server is shutting down$"):  # bound before draining began
            await served.infer(seawall.InferRequest("add_sub", _add_sub_inputs(x)))
    with pytest.raises(UnavailableError, match="^Server is not live$"):
        server.model("add_sub")


async def test_selected_and_classified_outputs_come_in_a_new_response() -> None:
    async with seawall.open_server(OPTIONS) as server:
        x = np.array([3, 1, 4, 1], dtype=np.float32)
        wanted = [RequestedOutput("OUTPUT0", {"classification": 2})]
        request = seawall.InferRequest("add_sub", _add_sub_inputs(x), outputs=wanted)
        response = await server.model("add_sub").infer(request)
        [output] = response.outputs
        assert (output.name, output.datatype, output.shape) == ("OUTPUT0", "BYTES", (2,))
        assert output.data.tolist() == [b"8.000000:2", b"6.000000:0"]


def test_classification_leaves_the_given_tensors_alone() -> None:
    data = np.array([1, 5, 2], dtype=np.float32)
    tensors = [Tensor("A", "FP32", (3,), data), Tensor("B", "FP32", (3,), data)]
    given = list(tensors)
    classified = tensor_io.classify_outputs([RequestedOutput("A", {"classification": 1})], tensors, {}, False)
    assert tensors == given and tensors[0].datatype == "FP32"
    assert [(t.name, t.datatype) for t in classified] == [("A", "BYTES"), ("B", "FP32")]
    assert classified[1] is tensors[1]


@pytest.fixture
def key() -> Iterator[str]:
    name = f"sw-test-{uuid.uuid4().hex}"
    with open(f"/dev/shm/{name}", "wb") as file:
        file.write(bytes(64))
    yield name
    os.unlink(f"/dev/shm/{name}")


async def test_shared_memory_outputs_leave_the_given_tensors_alone(key: str) -> None:
    manager = SharedMemoryManager(allowed=True)
    manager.register("out", key, 0, 64)
    data = np.arange(4, dtype=np.float32)
    tensors = [Tensor("A", "FP32", (4,), data, {"p": 1}), Tensor("B", "FP32", (4,), data)]
    requested = [RequestedOutput("A", {tensor_io.SHM_REGION: "out", tensor_io.SHM_BYTE_SIZE: 16})]
    written = await tensor_io.write_shm_outputs(requested, tensors, manager)
    assert tensors[0].parameters == {"p": 1}  # the backend's (or the cache's) tensor is not touched
    assert written[0].parameters == {tensor_io.SHM_REGION: "out"} and written[1] is tensors[1]
    with open(f"/dev/shm/{key}", "rb") as file:
        assert np.frombuffer(file.read(16), dtype=np.float32).tolist() == [0.0, 1.0, 2.0, 3.0]
    manager.close()
