"""A Python model writing into its input arrays in place, on the reference Triton 2.51 and on Seawall: both answer
the written values, over HTTP and gRPC, and a later request with the same values is answered from its own inputs
(a write never leaks into the next request)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.harness import triton_and_seawall

MODEL = Path(__file__).resolve().parent.parent / "models" / "write_inputs"


def _infer(module: object, client: object, values: np.ndarray) -> np.ndarray:
    tensor = module.InferInput("INPUT0", list(values.shape), "INT32")  # type: ignore[attr-defined]
    tensor.set_data_from_numpy(values)
    return client.infer("write_inputs", [tensor]).as_numpy("OUTPUT0")  # type: ignore[attr-defined, no-any-return]


def test_writes_into_inputs_answer_as_on_triton(tmp_path: Path) -> None:
    with triton_and_seawall(tmp_path, MODEL) as servers:
        answers = []
        for server in servers:
            got = []
            with httpclient.InferenceServerClient(server.http.removeprefix("http://")) as http:
                with grpcclient.InferenceServerClient(server.grpc) as grpc:
                    for client, module in ((http, httpclient), (grpc, grpcclient)):
                        for _ in range(2):  # the same values twice: a leaked write would answer 2 * (2x + 1) + 1
                            got.append(_infer(module, client, np.arange(6, dtype=np.int32)).tolist())
            answers.append(got)
    triton, seawall = answers
    assert seawall == triton == [[2 * x + 1 for x in range(6)]] * 4
