"""A Python model that keeps its input arrays (or views of them, its requests, their tensors) past execute() keeps
seeing their data, as on Triton, while the host writes later batches into a fresh input region; a model that
keeps nothing keeps its regions. The stub's regions are read from its own /proc/self/maps (the model's REGIONS)."""

from __future__ import annotations

import mmap
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from seawall.backends.python import ipc
from seawall.backends.python.host import PythonBackend
from seawall.backends.python.instance import PythonModelInstance
from seawall.errors import InternalError
from tests.backends.test_python_backend import MODELS, load, only, outputs, request

#: small regions, so that the batches below grow them
SMALL = {"shm-default-byte-size": "4096", "shm-growth-byte-size": "4096"}
#: sizes (int32 elements) of the batches after the one kept: 2000 and 4000 grow the 4 KiB input region
LATER = (8, 3, 2000, 5, 4000, 1)


#: what a model may make of an input array, and whether the region is still held while the result lives
DERIVED: dict[str, tuple[Callable[[np.ndarray], object], bool]] = {
    "the array": (lambda a: a, True),
    "a slice": (lambda a: a[1:, ::2], True),
    "a reshape": (lambda a: a.reshape(-1), True),
    "a transpose": (lambda a: a.T, True),
    "a dtype view": (lambda a: a.view(np.int32), True),
    "np.asarray": (np.asarray, True),
    "a memoryview": (memoryview, True),
    "its .data": (lambda a: a.data, True),
    "np.frombuffer of it": (lambda a: np.frombuffer(a, dtype=np.uint8), True),
    "as_strided": (lambda a: np.lib.stride_tricks.as_strided(a, (2,), (4,)), True),
    "a list of it": (lambda a: [a], True),
    "a copy": (lambda a: a.copy(), False),
    "its bytes": (lambda a: a.tobytes(), False),
    "a sum": (lambda a: a.sum(), False),
}


@pytest.mark.parametrize("derived", DERIVED)
def test_an_input_view_is_released_exactly_when_nothing_over_the_region_lives(derived: str) -> None:
    make, held = DERIVED[derived]
    region = mmap.mmap(-1, 4096)
    view = ipc.InputView(region)
    _, _, array = ipc.read_tensor(view.memory, ["IN", "FP32", [4, 4], 64, 64], False, view.source)
    kept = make(array)
    del array
    assert view.release() is held
    if held:
        with pytest.raises(BufferError):
            region.close()  # the mapping stays while the model holds something over it
    del kept, view  # what the model kept, and the stub's view (once its batch is done)
    region.close()


@pytest.fixture(params=["def", "async def"])
def model_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """keep_inputs with a plain `def execute`, or the same code as `async def execute` (the stub's other loop)."""
    target = tmp_path / "keep_inputs"
    shutil.copytree(MODELS / "keep_inputs", target)
    if request.param == "async def":
        code = target / "1" / "model.py"
        code.write_text(code.read_text().replace("    def execute(", "    async def execute("))
    return target


async def run(instance: PythonModelInstance, data: np.ndarray, **parameters: str | bool) -> tuple[np.ndarray, set[int]]:
    """OUT and the stub's input regions after one batch of one request."""
    got = outputs(only(await instance.execute([request("keep_inputs", dict(parameters), IN=data)])))
    return got["OUT"].data, set(got["REGIONS"].data.tolist())


def values(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-(2**31), 2**31, size, dtype=np.int32)


@pytest.mark.parametrize("how", ["array", "slice", "request", "tensor"])
async def test_a_kept_input_keeps_its_data_through_later_batches(
    backend: PythonBackend, model_dir: Path, how: str
) -> None:
    model = await load(backend, model_dir, settings=SMALL)
    (instance,) = model.instances
    first = values(16, 0)
    await run(instance, first, keep=f"{how}:a")
    expected = first[1:] if how == "slice" else first
    for seed, size in enumerate(LATER, start=1):
        # the later batch's input lies where the kept one did, unless the kept region is never written again
        recalled, _ = await run(instance, values(size, seed), recall="a")
        np.testing.assert_array_equal(recalled, expected)
    assert instance.is_healthy()


async def test_inputs_accumulated_in_a_list_all_keep_their_data(backend: PythonBackend, model_dir: Path) -> None:
    model = await load(backend, model_dir, settings=SMALL)
    (instance,) = model.instances
    sent: list[np.ndarray] = []
    for seed, size in enumerate((16, *LATER)):
        data = values(size, seed)
        sent.append(data)
        recalled, _ = await run(instance, data, keep="list:a", recall="a")
        np.testing.assert_array_equal(recalled, np.concatenate(sent))


async def test_an_input_kept_by_a_batch_that_raised_keeps_its_data(backend: PythonBackend, model_dir: Path) -> None:
    model = await load(backend, model_dir)
    (instance,) = model.instances
    first = values(16, 0)
    with pytest.raises(InternalError, match="asked to raise"):
        await run(instance, first, keep="array:a", **{"raise": True})
    for seed in range(1, 4):
        recalled, _ = await run(instance, values(16, seed), recall="a")
        np.testing.assert_array_equal(recalled, first)


async def test_only_kept_inputs_cost_a_new_region_and_it_goes_with_them(
    backend: PythonBackend, model_dir: Path
) -> None:
    model = await load(backend, model_dir)
    (instance,) = model.instances
    _, regions = await run(instance, values(4, 0))
    assert len(regions) == 1  # slot 0's: the batches below run one at a time, all in slot 0
    for seed, size in enumerate((1, 100, 7, 1000, 3), start=1):  # outputs that are views of the inputs included
        out, now = await run(instance, values(size, seed))
        np.testing.assert_array_equal(out, values(size, seed))
        assert now == regions  # a model that keeps nothing writes nothing off: the same region every batch
    with pytest.raises(InternalError, match="asked to raise"):
        await run(instance, values(4, 9), **{"raise": True})
    _, now = await run(instance, values(4, 10), keep="array:a")
    assert now == regions  # execute() holds the array in the region it lies in
    _, now = await run(instance, values(4, 11))
    (fresh,) = now - regions  # the next batch came in a fresh region, the kept one is still mapped for the model
    assert now == regions | {fresh}
    _, now = await run(instance, values(4, 12), drop=True)
    assert now == {fresh}  # the model dropped its last array over the old region: the mapping went with it
    _, now = await run(instance, values(4, 13))
    assert now == {fresh}
