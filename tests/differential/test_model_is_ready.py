"""A model's own `is_ready()` against the real Triton 2.51, whose python backend does not call it (user-defined
readiness came to python_backend after 2.51): on Triton the model stays ready whatever is_ready() answers, on
Seawall it decides the model's readiness (docs/differences.md). Both agree on everything else: inference works,
the server and the other models stay ready, and a model whose is_ready() says True is ready on both.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.harness import EXAMPLES, TEST_MODELS, ServerProcess, triton_and_seawall


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    root = tmp_path_factory.mktemp("is_ready")
    with triton_and_seawall(root, TEST_MODELS / "ready_flag", EXAMPLES / "add_sub") as pair:
        yield pair


def _state(server: ServerProcess, state: int) -> bool:
    """Tell ready_flag's is_ready() what to answer next; the model's readiness afterwards (HTTP)."""
    tensor = httpclient.InferInput("IN", [1], "INT32")
    tensor.set_data_from_numpy(np.array([state], dtype=np.int32))
    with httpclient.InferenceServerClient(server.http) as client:
        result = client.infer("ready_flag", [tensor]).as_numpy("OUT")
        assert result is not None and int(result[0]) == state
        ready = bool(client.is_model_ready("ready_flag"))
        assert client.is_server_ready() and client.is_model_ready("add_sub")
    return ready


@pytest.mark.parametrize("state", [0, 1, 2, 3], ids=["true", "false", "raises", "not_a_bool"])
def test_is_ready_decides_on_seawall_only(servers: tuple[ServerProcess, ServerProcess], state: int) -> None:
    triton, seawall = servers
    assert _state(triton, state) is True  # Triton 2.51 never asks the model
    assert _state(seawall, state) is (state == 0)
    assert _state(triton, 0) is _state(seawall, 0) is True  # ready again on both
