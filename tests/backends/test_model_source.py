"""The python backend's model-code loader (`model_source`): verified source only, never compiled forms."""

from __future__ import annotations

import hashlib
import importlib.machinery
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from seawall.backends.python.model_source import COMPILED_SUFFIXES, ModelSource, RepositoryCodeError, RepositoryFinder
from seawall.backends.python.user_model import load_model_class

MODEL = "import helper_mod\n\nclass TritonPythonModel:\n    VALUE = helper_mod.VALUE\n"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def model(tmp_path: Path) -> Iterator[Path]:
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(MODEL)
    (version / "helper_mod.py").write_text("VALUE = 1\n")
    yield tmp_path / "m"
    sys.modules.pop("helper_mod", None)
    sys.modules.pop("model_under_test", None)


def _load(model: Path, pins: list[dict[str, str]] | None = None) -> object:
    source = ModelSource(str(model), pins or [])
    source.top_level.append(str(model / "1"))
    finder = RepositoryFinder(source)
    finder.install()
    try:
        return load_model_class(str(model / "1" / "model.py"), "model_under_test", source)
    finally:
        finder.remove()


def test_source_loads_and_writes_no_bytecode(model: Path) -> None:
    assert _load(model).VALUE == 1  # type: ignore[attr-defined]
    assert not (model / "1" / "__pycache__").exists()


@pytest.mark.parametrize("suffix", COMPILED_SUFFIXES)
def test_every_compiled_form_of_an_imported_module_is_refused(model: Path, suffix: str) -> None:
    (model / "1" / f"helper_mod{suffix}").write_bytes(b"planted")
    with pytest.raises(RepositoryCodeError, match=rf"^model file '1/helper_mod{suffix}' is compiled code; "):
        _load(model)


@pytest.mark.parametrize("suffix", COMPILED_SUFFIXES)
def test_a_compiled_package_init_is_refused(model: Path, suffix: str) -> None:
    os.remove(model / "1" / "helper_mod.py")
    (model / "1" / "helper_mod").mkdir()
    (model / "1" / "helper_mod" / "__init__.py").write_text("VALUE = 1\n")
    (model / "1" / "helper_mod" / f"__init__{suffix}").write_bytes(b"planted")
    with pytest.raises(RepositoryCodeError, match=rf"^model file '1/helper_mod/__init__{suffix}' is compiled code; "):
        _load(model)


def test_a_submodule_of_a_repository_package_is_verified_too(model: Path) -> None:
    os.remove(model / "1" / "helper_mod.py")
    package = model / "1" / "helper_mod"
    package.mkdir()
    (package / "__init__.py").write_text("from helper_mod.inner import VALUE\n")
    (package / "inner.py").write_text("VALUE = 1\n")
    pins = {str(p.relative_to(model)): _digest(p) for p in model.rglob("*.py")}
    assert _load(model, [pins]).VALUE == 1  # type: ignore[attr-defined]
    sys.modules.pop("helper_mod.inner", None)
    sys.modules.pop("helper_mod", None)
    (package / "inner.py").write_text("VALUE = 666\n")
    with pytest.raises(RepositoryCodeError, match=r"^checksum agent: file '1/helper_mod/inner.py' does not match"):
        _load(model, [pins])
    sys.modules.pop("helper_mod", None)
    (package / f"inner{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"planted")
    with pytest.raises(RepositoryCodeError, match=r"^model file '1/helper_mod/inner\..*' is compiled code"):
        _load(model, [pins])


def test_the_bytes_executed_are_the_bytes_verified(model: Path) -> None:
    """A file changed after the checksum agent ran is refused when the backend reads it."""
    pins = {"1/model.py": _digest(model / "1" / "model.py"), "1/helper_mod.py": _digest(model / "1" / "helper_mod.py")}
    (model / "1" / "helper_mod.py").write_text("VALUE = 666\n")
    with pytest.raises(RepositoryCodeError, match=r"^checksum agent: file '1/helper_mod.py' does not match its SHA256"):
        _load(model, [pins])
    (model / "1" / "model.py").write_text(MODEL + "# changed\n")
    with pytest.raises(RepositoryCodeError, match=r"^checksum agent: file '1/model.py' does not match its SHA256"):
        _load(model, [pins])


def test_an_unpinned_module_of_a_pinned_model_is_refused(model: Path) -> None:
    pins = {"1/model.py": _digest(model / "1" / "model.py")}
    with pytest.raises(RepositoryCodeError, match=r"^checksum agent: file '1/helper_mod.py' has no SHA256 pin$"):
        _load(model, [pins])


def test_a_module_linked_from_outside_is_refused(model: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("VALUE = 666\n")
    os.remove(model / "1" / "helper_mod.py")
    os.symlink(outside, model / "1" / "helper_mod.py")
    with pytest.raises(RepositoryCodeError, match=r"^model file 'helper_mod.py' leaves the model directory$"):
        _load(model)
