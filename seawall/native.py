"""The compiled hot path: modules of the request path compiled by mypyc (`make native`, `seawall/native_build.py`),
used in place of their sources only while every one of those sources is the one they were compiled from.

Imports only the standard library (it runs at the first `import seawall`, in the server and in every stub). The
build writes the extension modules and a manifest of their sources' SHA-256 into `seawall/_native/`; `install`
puts a finder in front of the import system when the manifest matches the sources on disk, so an edited checkout
runs its edits (in pure Python) instead of stale machine code, and all the compiled modules load or none (they
call each other directly, so a mix would run old code). SEAWALL_PURE_PYTHON=1 keeps the sources. The manifest
says whether the build is current, not who made it: `_native/` is trusted as the sources beside it are.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from types import ModuleType

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
NATIVE_DIR = os.path.join(PACKAGE_DIR, "_native")
MANIFEST = "manifest.json"
#: why the compiled modules are not used ("" when they are), for the start-up log
status = "not built"
#: the modules that run compiled (empty when `status` says why none does)
compiled: frozenset[str] = frozenset()


def source_path(module: str) -> str:
    """The source file of `module` (a seawall module name)."""
    return os.path.join(PACKAGE_DIR, *module.split(".")[1:]) + ".py"


def source_digest(module: str) -> str:
    """SHA-256 of the source of `module`."""
    with open(source_path(module), "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


class _NativeFinder:
    """A meta path finder of the compiled modules (and mypyc's shared runtime module) in NATIVE_DIR (duck-typed:
    `importlib.abc` alone would add ~5 ms to every process that imports seawall, stubs included)."""

    def __init__(self, files: dict[str, str]) -> None:
        self._files = files  # module name → extension file

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        found = self._files.get(fullname)
        if found is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, found)
        return importlib.util.spec_from_file_location(fullname, found, loader=loader)


def describe() -> str:
    """One line for the start-up log: whether the compiled request path runs, and if not, why."""
    if not status:
        return f"request path: compiled (mypyc, {NATIVE_DIR})"
    return f"request path: pure Python ({status})"


def install() -> str:
    """Use the compiled modules if they match the sources; returns `status` ("" when in use)."""
    global status
    status = _install()
    return status


def _install() -> str:
    if os.environ.get("SEAWALL_PURE_PYTHON", "") not in ("", "0"):
        return "SEAWALL_PURE_PYTHON is set"
    try:
        with open(os.path.join(NATIVE_DIR, MANIFEST), encoding="utf-8") as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        return "not built"
    except (OSError, ValueError) as exc:
        return f"unreadable manifest ({exc})"
    if manifest.get("python") != sys.implementation.cache_tag:
        return f"built for {manifest.get('python')}, not {sys.implementation.cache_tag}"
    files: dict[str, str] = {}
    try:
        for module, entry in manifest["modules"].items():
            if module in sys.modules:
                return f"{module} was imported before the compiled modules were installed"
            if source_digest(module) != entry["sha256"]:
                return f"stale: {module} changed since it was compiled (make native)"
            files[module] = os.path.join(NATIVE_DIR, entry["file"])
        for module, name in manifest["support"].items():
            files[module] = os.path.join(NATIVE_DIR, name)
    except (OSError, KeyError, TypeError) as exc:
        return f"incomplete build ({exc})"
    missing = [path for path in files.values() if not os.path.isfile(path)]
    if missing:
        return f"incomplete build ({missing[0]} is missing)"
    sys.meta_path.insert(0, _NativeFinder(files))
    global compiled
    compiled = frozenset(manifest["modules"])
    return ""
