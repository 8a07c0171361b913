"""Triton 2.51 and Seawall serving tests/models/error_codes: a response carrying each pb_utils.TritonError code
answers the same HTTP status and gRPC code, with the model's message, on both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.harness import TEST_MODELS, ServerProcess, triton_and_seawall

CODES = ("UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE", "UNSUPPORTED", "ALREADY_EXISTS", "CANCELLED")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    root: Path = tmp_path_factory.mktemp("differential_codes")
    with triton_and_seawall(root, TEST_MODELS / "error_codes") as pair:
        yield pair


def _answers(server: ServerProcess, code: int) -> list[tuple[str | None, str]]:
    answers = []
    for module, address in ((httpclient, server.http), (grpcclient, server.grpc)):
        client = module.InferenceServerClient(address)  # type: ignore[attr-defined]
        tensor = module.InferInput("CODE", [1], "INT32")  # type: ignore[attr-defined]
        tensor.set_data_from_numpy(np.array([code], dtype=np.int32))
        with pytest.raises(InferenceServerException) as raised:
            client.infer("error_codes", [tensor])
        answers.append((raised.value.status(), raised.value.message()))
        client.close()
    return answers


@pytest.mark.parametrize("code", range(len(CODES)), ids=CODES)
def test_each_triton_error_code_maps_to_the_same_statuses(pair: tuple[ServerProcess, ServerProcess], code: int) -> None:
    triton, seawall = pair
    expected = _answers(triton, code)
    assert expected[0][1] == f"error {CODES[code]}"
    assert _answers(seawall, code) == expected
    assert seawall.is_ready()
