"""A Python model may write into its input arrays in place, as on Triton (whose arrays are writable): the stub maps
input regions shared and writable; the next batch reads what the host wrote for it, never this batch's writes, and the
caller's tensors are never changed by the model."""

from __future__ import annotations

import numpy as np

from seawall.backends.python.host import PythonBackend
from tests.backends.test_python_backend import MODELS, load, only, outputs, request

#: small regions, so that some of the batches grow them
SMALL = {"shm-default-byte-size": "4096", "shm-growth-byte-size": "4096"}


async def test_a_model_writing_into_its_inputs_gets_them_and_the_next_batch_sees_the_hosts(
    backend: PythonBackend,
) -> None:
    model = await load(backend, MODELS / "write_inputs", settings=SMALL)
    instance = model.instances[0]
    # the same values twice in a row: a stale page written by the model would answer 2 * (2x + 1) + 1
    for index, size in enumerate((16, 16, 3, 2000, 2000, 5, 4000, 1)):
        data = np.arange(size, dtype=np.int32) + index // 2
        got = outputs(only(await instance.execute([request("write_inputs", INPUT0=data)])))
        np.testing.assert_array_equal(got["OUTPUT0"].data, data * 2 + 1)
        assert (data == np.arange(size, dtype=np.int32) + index // 2).all()  # the caller's tensor is untouched
