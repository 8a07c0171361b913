"""The in-process API: `open_server()` gives the same InferenceServer facade the frontends use."""

from __future__ import annotations

import numpy as np
import pytest

import seawall
from seawall.errors import InvalidArgumentError, NotFoundError
from seawall.options import Options, RepositoryOptions
from tests.harness import EXAMPLES

OPTIONS = Options(repository=RepositoryOptions(paths=(str(EXAMPLES),)))


def _add_sub_request(x: np.ndarray, y: np.ndarray, **kwargs: object) -> seawall.InferRequest:
    inputs = [seawall.Tensor.from_numpy("INPUT0", x), seawall.Tensor.from_numpy("INPUT1", y)]
    return seawall.InferRequest("add_sub", inputs, **kwargs)  # type: ignore[arg-type]


async def test_embedded_server_infers_and_reports_metadata() -> None:
    async with seawall.open_server(OPTIONS) as server:
        assert server.is_live() and server.is_ready()
        x, y = np.arange(4, dtype=np.float32), np.full(4, 2, dtype=np.float32)
        response = await server.infer(_add_sub_request(x, y, id="r1"))
        outputs = {t.name: t.data for t in response.outputs}
        np.testing.assert_array_equal(outputs["OUTPUT0"], x + y)
        np.testing.assert_array_equal(outputs["OUTPUT1"], x - y)
        assert (response.model_name, response.model_version, response.id) == ("add_sub", "1", "r1")
        metadata = server.model_metadata("identity")
        assert metadata.versions == ("1",)
        assert [(i.name, i.datatype, i.shape) for i in metadata.inputs] == [("INPUT0", "FP32", (-1, -1))]
        assert server.server_metadata().name == "triton"
        [stats] = server.model_statistics("add_sub")
        assert stats.success.count == 1 and stats.execution_count == 1
    assert not server.is_live()


async def test_requested_outputs_filter_the_response() -> None:
    async with seawall.open_server(OPTIONS) as server:
        x = np.ones(4, dtype=np.float32)
        request = _add_sub_request(x, x, outputs=[seawall.RequestedOutput("OUTPUT1")])
        response = await server.infer(request)
        assert [t.name for t in response.outputs] == ["OUTPUT1"]


async def test_errors_are_seawall_errors() -> None:
    async with seawall.open_server(OPTIONS) as server:
        with pytest.raises(NotFoundError, match="Request for unknown model: 'nope' is not found"):
            await server.infer(seawall.InferRequest("nope", []))
        for hostile in ("../add_sub", "a\nb", "x$(touch y)", "x" * 129):
            with pytest.raises(InvalidArgumentError, match="^invalid model name: ") as info:
                await server.infer(seawall.InferRequest(hostile, []))
            assert hostile not in info.value.message
        with pytest.raises(InvalidArgumentError, match="expected 2 inputs but got 1"):
            await server.infer(seawall.InferRequest("add_sub", [seawall.Tensor.from_numpy("INPUT0", np.ones(4))]))
        assert server.is_ready()


async def test_two_servers_run_in_one_process() -> None:
    async with (
        seawall.open_server(OPTIONS) as first,
        seawall.open_server(OPTIONS.replace(server_id="b")) as second,
    ):
        x = np.ones(4, dtype=np.float32)
        await first.infer(_add_sub_request(x, x))
        assert first.model_statistics("add_sub")[0].success.count == 1
        assert second.model_statistics("add_sub")[0].success.count == 0
        assert second.server_metadata().name == "b"


async def test_index_shows_a_model_loading_then_ready() -> None:
    import asyncio
    import json

    options = Options(repository=RepositoryOptions(paths=(str(EXAMPLES),), control_mode="explicit"))
    slow_init = b"import time\nclass TritonPythonModel:\n    def initialize(self, args):\n        time.sleep(1)\n"
    slow_init += b"    def execute(self, requests):\n        return []\n"
    config = json.dumps({"backend": "python"})
    async with seawall.open_server(options) as server:
        loading = asyncio.create_task(server.load_model("slowpoke", config, {"1/model.py": slow_init}))
        states: set[str] = set()
        while not loading.done():
            states |= {e.state for e in server.repository_index() if e.name == "slowpoke"}
            await asyncio.sleep(0.05)
        await loading
        assert "LOADING" in states
        assert [(e.version, e.state) for e in server.repository_index() if e.name == "slowpoke"] == [("1", "READY")]
