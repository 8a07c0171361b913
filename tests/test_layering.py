"""Enforces the import rules of ARCHITECTURE.md by walking every module's imports with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "seawall"

TRANSPORTS = ("grpc", "httptools", "uvloop", "prometheus_client", "h11", "aiohttp", "starlette", "fastapi")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _allowed(module: str, imported: str) -> bool:
    """The import rules: (importing module prefix) → what it may import from seawall and transports."""
    own = imported.startswith("seawall")
    if module.startswith("seawall.core"):
        if imported.split(".")[0] in TRANSPORTS:
            return False
        if own:
            sanctioned = module == "seawall.core.server" and imported == "seawall.backends.registry"
            return imported.startswith(("seawall.core", "seawall.errors", "seawall.options")) or sanctioned
        return True
    if module.startswith("seawall.backends"):
        if not own:
            return imported.split(".")[0] not in ("grpc", "httptools", "prometheus_client")
        return imported.startswith(
            (
                "seawall.backends",
                "seawall.core.types",
                "seawall.core.raw",
                "seawall.core.offload",  # heavy tensor work off the event loop
                "seawall.core.backend",
                "seawall.core.model_config",
                "seawall.errors",
                "seawall.options",
            )
        )
    if module.startswith("seawall.frontends"):
        if not own:
            return True
        return imported.startswith(
            (
                "seawall.frontends",
                "seawall.core.server",
                "seawall.core.types",
                "seawall.core.raw",  # Triton's tensor byte format, shared by every wire
                "seawall.core.offload",  # heavy tensor work off the event loop
                "seawall.errors",
                "seawall.options",
                "seawall.security",
            )
        )
    if module == "seawall.errors":
        return not own
    if module == "seawall.options":
        return not own or imported == "seawall.errors"
    if module.startswith("seawall.security"):
        return not own or imported.startswith(("seawall.errors", "seawall.options", "seawall.security"))
    return True  # cli, app, __init__, __main__: the composition root may import anything


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layering(path: Path) -> None:
    module = _module_name(path)
    bad = sorted(i for i in _imports(path) if not _allowed(module, i))
    assert bad == [], f"{module} imports {bad}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_cli_exits(path: Path) -> None:
    if _module_name(path) == "seawall.cli":
        return
    tree = ast.parse(path.read_text())
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "exit"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "sys"
    ]
    assert calls == [], f"{path.name} calls sys.exit"


def test_the_rules_catch_a_forbidden_edge() -> None:
    assert not _allowed("seawall.core.server", "grpc")
    assert not _allowed("seawall.core.lifecycle", "seawall.frontends.http")
    assert not _allowed("seawall.frontends.http", "seawall.core.lifecycle")
    assert not _allowed("seawall.backends.python.host", "seawall.core.server")
    assert _allowed("seawall.core.server", "seawall.backends.registry")
