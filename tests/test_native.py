"""The compiled request path (seawall/native.py): used only when built from the sources on disk, all or none.

`make test` builds it first (`make native`), so these run against a real mypyc build; without one they skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from seawall import native
from seawall.native_build import MODULES

PACKAGE = Path(native.PACKAGE_DIR)
BUILT = (PACKAGE / "_native" / native.MANIFEST).is_file()
needs_build = pytest.mark.skipif(not BUILT, reason="no compiled build (make native)")
PROBE = (
    "import importlib, seawall.native as n\n"
    "files = [importlib.import_module(m).__file__ for m in {modules!r}]\n"
    "print(repr(n.status))\n"
    "print('\\n'.join(files))\n"
)


def _probe(package_parent: Path, **env: str) -> tuple[str, list[str]]:
    """Import every compiled module in a fresh interpreter that finds seawall under `package_parent`."""
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "SEAWALL_PURE_PYTHON")}
    environment.update(PYTHONPATH=str(package_parent), **env)
    done = subprocess.run(
        [sys.executable, "-P", "-c", PROBE.format(modules=MODULES)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        cwd=package_parent,
        check=True,
    )
    status, *files = done.stdout.splitlines()
    return status, files


@needs_build
def test_the_built_modules_are_the_ones_imported() -> None:
    status, files = _probe(PACKAGE.parent)
    assert status == "''"
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    # (mypyc may name a module's file after its path inside the build rather than the file loaded)
    assert all(file.startswith(str(PACKAGE / "_native")) and file.endswith(suffix) for file in files), files
    assert native.describe().startswith("request path: compiled")


@needs_build
def test_an_edited_source_makes_every_module_run_from_source(tmp_path: Path) -> None:
    """Compiled modules call each other directly: one stale module means none of them is used."""
    copy = tmp_path / "seawall"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "core" / "raw.py").open("a") as handle:
        handle.write("\n# edited after the build\n")
    status, files = _probe(tmp_path)
    assert status == "'stale: seawall.core.raw changed since it was compiled (make native)'"
    assert files == [str(copy / Path(*module.split(".")[1:])) + ".py" for module in MODULES]


@needs_build
def test_a_build_with_a_file_missing_is_not_used(tmp_path: Path) -> None:
    copy = tmp_path / "seawall"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    next((copy / "_native").glob("seawall_native__mypyc*")).unlink()
    status, files = _probe(tmp_path)
    assert status.startswith("'incomplete build (") and "seawall_native__mypyc" in status
    assert all(file.endswith(".py") for file in files)


def test_seawall_pure_python_keeps_the_sources() -> None:
    status, files = _probe(PACKAGE.parent, SEAWALL_PURE_PYTHON="1")
    assert status == "'SEAWALL_PURE_PYTHON is set'"
    assert files == [str(PACKAGE / Path(*module.split(".")[1:])) + ".py" for module in MODULES]


def test_without_a_build_the_sources_run(tmp_path: Path) -> None:
    copy = tmp_path / "seawall"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "_native"))
    status, files = _probe(tmp_path)
    assert status == "'not built'"
    assert all(file.endswith(".py") for file in files)


@needs_build
def test_an_installed_seawall_runs_the_build_installed_with_it(tmp_path: Path) -> None:
    """`pip install .` of a built checkout (the container image's last stage) installs the compiled modules and
    their manifest as package data, and the installed package runs them."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PACKAGE.parent / name, source)
    shutil.copytree(PACKAGE, source / "seawall", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site-packages"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target)]
    subprocess.run([*pip, str(source)], capture_output=True, timeout=300, check=True)
    status, files = _probe(target)
    assert status == "''"
    assert all(file.startswith(str(target / "seawall" / "_native")) for file in files), files
