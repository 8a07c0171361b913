"""Model code from the repository, executed only from source that was read once, checked and compiled here.

Imports only the standard library (a stub process imports it before any model code). Python's own path
loaders would run `__pycache__` bytecode, sourceless `.pyc` files and extension modules found beside (or
instead of) the source; this loader never does: it reads a `.py` file's bytes once, checks them against the
model's SHA-256 pins (when it has any), compiles those same bytes and writes no bytecode anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from types import CodeType, ModuleType

#: Forms of a module the interpreter would execute that are not source; never loaded from a model directory.
COMPILED_SUFFIXES = (*importlib.machinery.EXTENSION_SUFFIXES, *importlib.machinery.BYTECODE_SUFFIXES)
#: The largest source file a model may import (the whole file is read into memory once).
MAX_SOURCE_BYTES = 64 << 20


class RepositoryCodeError(ImportError):
    """A model-directory file that may not be executed: compiled code, unpinned, changed, or outside."""


class ModelSource:
    """The model directory's code: `model_dir` (pins are relative to it), the directories searched for
    top-level imports (`top_level`), and the pin sets of its checksum agents (empty: not pinned)."""

    def __init__(self, model_dir: str, pins: Sequence[Mapping[str, str]] = ()) -> None:
        self.root = os.path.realpath(model_dir)
        self.top_level: list[str] = []
        self._pins = [dict(pin_set) for pin_set in pins]
        self._inside: dict[str, bool] = {}

    def contains(self, directory: str) -> bool:
        """Whether `directory` (a sys.path or __path__ entry) is the model directory or inside it."""
        known = self._inside.get(directory)
        if known is None:
            real = os.path.realpath(directory)
            known = os.path.commonpath([real, self.root]) == self.root
            self._inside[directory] = known
        return known

    def relative(self, path: str) -> str:
        return os.path.relpath(os.path.realpath(path), self.root)

    def read(self, path: str) -> bytes:
        """The bytes of the source file `path`, read once and checked against every pin set.

        Raises:
            RepositoryCodeError: the file leaves the model directory, is too large, unpinned or changed.
        """
        real = os.path.realpath(path)
        if os.path.commonpath([real, self.root]) != self.root:
            raise RepositoryCodeError(f"model file '{os.path.basename(path)}' leaves the model directory")
        relative = os.path.relpath(real, self.root)
        with open(real, "rb") as file:
            data = file.read(MAX_SOURCE_BYTES + 1)
        if len(data) > MAX_SOURCE_BYTES:
            raise RepositoryCodeError(f"model file '{relative}' is larger than {MAX_SOURCE_BYTES} bytes")
        if self._pins:
            digest = hashlib.sha256(data).hexdigest()
            for pins in self._pins:
                pinned = pins.get(relative)
                if pinned is None:
                    raise RepositoryCodeError(f"checksum agent: file '{relative}' has no SHA256 pin")
                if not hmac.compare_digest(digest, pinned):
                    raise RepositoryCodeError(f"checksum agent: file '{relative}' does not match its SHA256 pin")
        return data

    def compile(self, path: str) -> CodeType:
        """`path` compiled from the verified bytes (never from bytecode)."""
        return compile(self.read(path), path, "exec", dont_inherit=True)

    def spec(self, fullname: str, path: str, package_dir: str | None = None) -> importlib.machinery.ModuleSpec:
        """The spec of module `fullname` from source file `path` (a package's `__init__.py` with `package_dir`)."""
        loader = SourceLoader(self, path, package_dir is not None)
        spec = importlib.util.spec_from_loader(fullname, loader, origin=path, is_package=package_dir is not None)
        assert spec is not None
        spec.has_location = True
        if package_dir is not None:
            spec.submodule_search_locations = [package_dir]
        return spec

    def find(self, fullname: str, directory: str) -> importlib.machinery.ModuleSpec | None:
        """The spec of `fullname` in `directory`: a package (`<name>/__init__.py`) or `<name>.py`.

        Raises:
            RepositoryCodeError: a compiled form of the module (bytecode, extension module) is there.
        """
        base = os.path.join(directory, fullname.rpartition(".")[2])
        self._refuse_compiled(base)
        if os.path.isdir(base):
            self._refuse_compiled(os.path.join(base, "__init__"))
            init = os.path.join(base, "__init__.py")
            if os.path.isfile(init):
                return self.spec(fullname, init, base)
        if os.path.isfile(base + ".py"):
            return self.spec(fullname, base + ".py")
        return None

    def _refuse_compiled(self, base: str) -> None:
        for suffix in COMPILED_SUFFIXES:
            if os.path.lexists(base + suffix):
                raise RepositoryCodeError(
                    f"model file '{self.relative(base + suffix)}' is compiled code; Seawall imports only .py "
                    "source from a model directory (no bytecode, no extension modules)"
                )


class SourceLoader(importlib.abc.Loader):
    """Executes one verified source file of a model directory."""

    def __init__(self, source: ModelSource, path: str, is_package: bool) -> None:
        self._source = source
        self._path = path
        self._is_package = is_package

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        module.__file__ = self._path
        module.__cached__ = None  # type: ignore[attr-defined]  # no bytecode file stands for this module
        exec(self._source.compile(self._path), module.__dict__)  # noqa: S102  # the model's own code

    def is_package(self, fullname: str) -> bool:
        return self._is_package

    def get_filename(self, fullname: str) -> str:
        return self._path

    def get_source(self, fullname: str) -> str:
        return importlib.util.decode_source(self._source.read(self._path))


class RepositoryFinder(importlib.abc.MetaPathFinder):
    """First on sys.meta_path: finds every module that lives in the model directory (top-level names in
    `source.top_level` and sys.path entries inside it; submodules of packages loaded from it), so Python's
    path finder never loads code from there."""

    def __init__(self, source: ModelSource) -> None:
        self.source = source

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self.source
        entries = sys.path if path is None else path
        directories = [*source.top_level] if path is None else []
        directories += [entry for entry in entries if isinstance(entry, str) and source.contains(entry)]
        for directory in directories:
            spec = source.find(fullname, directory)
            if spec is not None:
                return spec
        return None

    def install(self) -> None:
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)
