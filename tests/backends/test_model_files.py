"""The checksum pins of the onnxruntime and pytorch backends: one check (backends/model_files.verify_pins) covers the
bytes each backend reads, with one message for a file a pin set does not name and one for a digest that differs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from seawall.backends.model_files import verify_pins
from seawall.backends.onnxruntime import intake
from seawall.backends.pytorch import archive
from seawall.errors import InvalidArgumentError
from tests import onnx_models as m

LIMIT = 1 << 20
#: a zip laid out as torch.jit.save writes it (archive.is_torchscript), without torch
TORCHSCRIPT_NAMES = ("m/constants.pkl", "m/data.pkl", "m/code/__torch__.py")


def _torchscript(path: Path) -> bytes:
    import zipfile

    with zipfile.ZipFile(path, "w") as written:
        for name in TORCHSCRIPT_NAMES:
            written.writestr(name, b"")
    return path.read_bytes()


def _read_onnx(root: Path, pins: list[dict[str, str]]) -> object:
    model_dir = root / "x"
    return intake.read_model(
        str(model_dir / "1" / "model.onnx"), str(model_dir), str(model_dir / "1"), pins, LIMIT, "x"
    )


def _read_torch(root: Path, pins: list[dict[str, str]]) -> object:
    model_dir = root / "x"
    return archive.read_model(str(model_dir), str(model_dir / "1"), "model.pt", pins, LIMIT, "x")


@pytest.mark.parametrize("backend", ["onnxruntime", "pytorch"])
def test_each_backend_refuses_an_unpinned_or_changed_file_with_the_same_message(tmp_path: Path, backend: str) -> None:
    version = tmp_path / "x" / "1"
    version.mkdir(parents=True)
    if backend == "onnxruntime":
        filename, read = "model.onnx", _read_onnx
        (version / filename).write_bytes(m.add_sub(["n"]).SerializeToString())
    else:
        filename, read = "model.pt", _read_torch
        _torchscript(version / filename)
    digest = hashlib.sha256((version / filename).read_bytes()).hexdigest()
    read(tmp_path, [{f"1/{filename}": digest}])  # pinned and unchanged: read
    read(tmp_path, [])  # not pinned: read
    with pytest.raises(InvalidArgumentError) as info:
        read(tmp_path, [{"1/other.bin": digest}])
    assert info.value.message == f"checksum agent: file '1/{filename}' of model 'x' has no SHA256 pin"
    with pytest.raises(InvalidArgumentError) as info:
        read(tmp_path, [{f"1/{filename}": digest}, {f"1/{filename}": "0" * 64}])
    assert info.value.message == f"checksum agent: file '1/{filename}' of model 'x' does not match its SHA256 pin"


def test_the_check_normalizes_the_file_name_it_looks_up() -> None:
    digest = hashlib.sha256(b"weights").hexdigest()
    verify_pins(b"weights", "1/./w.bin", [{"1/w.bin": digest}], "x")
    with pytest.raises(InvalidArgumentError):
        verify_pins(b"other", "1/./w.bin", [{"1/w.bin": digest}], "x")
