"""Enforces the import rules of ARCHITECTURE.md by walking every module's imports with `ast`: each module's own
imports, and the transitive closure of the core's and of the stub entry point's (imports inside functions
included; `if TYPE_CHECKING:` blocks load nothing and are skipped). Subprocesses check the same at run time,
where imports that `ast` cannot see (importlib) count too.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "seawall"

TRANSPORTS = ("grpc", "httptools", "uvloop", "prometheus_client", "h11", "aiohttp", "starlette", "fastapi")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_file(name: str) -> Path | None:
    """The file of seawall module `name` (None: not a seawall module)."""
    if name.split(".")[0] != "seawall":
        return None
    base = PACKAGE.parent.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
    return name.lstrip("_") == "TYPE_CHECKING"


def _imports(path: Path) -> set[str]:
    """The modules `path` imports anywhere (functions included), with `from pkg import submodule`'s submodules."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    nodes: list[ast.AST] = [tree]
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            nodes.extend(node.orelse)  # the body only runs under a type checker
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if _module_file(f"{node.module}.{a.name}"))
        nodes.extend(ast.iter_child_nodes(node))
    return found


def _closure(entries: Iterable[Path], replaced: Mapping[str, Path] | None = None) -> set[str]:
    """Every module loading `entries` may import, transitively through seawall's own modules: seawall's and
    the outside modules they name (with their parent packages, which an import runs first). `replaced`: files
    read instead of some modules' own (for the test of this test)."""
    loaded: set[str] = set()
    todo = [*entries]
    walked: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in walked:
            continue
        walked.add(path)
        name = _module_name(path) if path.is_relative_to(PACKAGE) else path.stem
        for imported in {name} | _imports(path):
            parts = imported.split(".")
            for end in range(1, len(parts) + 1):
                prefix = ".".join(parts[:end])
                loaded.add(prefix)
                found = (replaced or {}).get(prefix) or _module_file(prefix)
                if found is not None:
                    todo.append(found)
    return loaded


def _reaches(loaded: set[str], forbidden: Iterable[str]) -> list[str]:
    return sorted(m for m in loaded for f in forbidden if m == f or m.startswith(f + "."))


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _allowed(module: str, imported: str) -> bool:
    """The import rules: (importing module prefix) → what it may import from seawall and transports."""
    own = imported.startswith("seawall")
    if module.startswith("seawall.core"):
        if imported.split(".")[0] in TRANSPORTS:
            return False
        if own:
            return imported.startswith(("seawall.core", "seawall.errors", "seawall.options"))
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
                "seawall.core.config_proto",  # Triton's model-config schema, without grpc
                "seawall.core.model_config",
                "seawall.core.custom_metrics",  # a model's own metric families (pb_utils.MetricFamily)
                "seawall.errors",
                "seawall.options",
            )
        )
    if module == "seawall.listeners":  # the listener table: options at load time, each frontend when it is built
        return not own or imported.startswith(("seawall.options", "seawall.frontends", "seawall.listeners"))
    if module.startswith("seawall.frontends"):
        if not own:
            return True
        # a package per transport: http/ and grpc/ know nothing of each other, of cloud/ or of metrics;
        # cloud/ and metrics ride on http/ (its server and codec) and never on grpc/
        foreign = {
            "seawall.frontends.http": ("grpc", "cloud", "metrics"),
            "seawall.frontends.grpc": ("http", "cloud", "metrics"),
            "seawall.frontends.cloud": ("grpc", "metrics"),
            "seawall.frontends.metrics": ("grpc", "cloud"),
        }
        for package, others in foreign.items():
            if _in(module, package) and any(_in(imported, f"seawall.frontends.{o}") for o in others):
                return False
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
    if module == "seawall.security.report":  # reads the listener table (which loads only options when imported)
        return not own or imported.startswith(
            ("seawall.errors", "seawall.options", "seawall.security", "seawall.listeners")
        )
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
    assert not _allowed("seawall.core.lifecycle", "seawall.frontends.http.routes")
    assert not _allowed("seawall.frontends.http.routes", "seawall.core.lifecycle")
    assert not _allowed("seawall.frontends.http.routes", "seawall.frontends.grpc.codec")
    assert not _allowed("seawall.frontends.grpc.service", "seawall.frontends.http.codec")
    assert not _allowed("seawall.frontends.cloud.vertex", "seawall.frontends.grpc.service")
    assert not _allowed("seawall.frontends.http.server", "seawall.frontends.cloud.routes")
    assert _allowed("seawall.frontends.cloud.vertex", "seawall.frontends.http.routes")
    assert not _allowed("seawall.listeners", "seawall.core.lifecycle")
    assert not _allowed("seawall.backends.python.host", "seawall.core.server")
    assert not _allowed("seawall.core.server", "seawall.backends.registry")


# -- transitive closures: what the core and a stub process may load --------------------------------------------

CORE_FILES = sorted((PACKAGE / "core").glob("*.py"))
#: the core never loads a transport, the security layer, a frontend, a backend, or grpc by way of
#: `tritonclient.grpc`'s package (its __init__ imports grpc; see core/config_proto.py)
CORE_MAY_NOT_LOAD = (
    *TRANSPORTS,
    "tritonclient.grpc",
    "seawall.app",
    "seawall.cli",
    "seawall.plugins",
    "seawall.frontends",
    "seawall.security",
    "seawall.backends",
)

STUB_ENTRIES = [
    PACKAGE / "backends" / "python" / "bootstrap.py",  # run by path; it imports stub.py
    PACKAGE / "backends" / "python" / "stub.py",
    # imported by name (importlib) from its own directory when the stub loads model.py
    PACKAGE / "backends" / "python" / "pb_utils" / "triton_python_backend_utils.py",
]
#: every seawall module a stub process may load: the stub's own, the tensor types and the errors; adding one
#: here is a decision (a stub's memory, start-up time and attack surface), never a side effect
STUB_MAY_LOAD = {
    "seawall",
    "seawall.native",  # the compiled request path's loader (standard library only)
    "seawall.errors",
    "seawall.options",
    "seawall.core",
    "seawall.core.raw",
    "seawall.core.types",
    "seawall.backends",
    "seawall.backends.python",
    "seawall.backends.python.bootstrap",
    "seawall.backends.python.bls_stream",  # exec(decoupled=True)'s response iterator
    "seawall.backends.python.call_client",  # BLS and model control from model code
    "seawall.backends.python.ipc",
    "seawall.backends.python.message_decoding",  # the protocol's frame checks
    "seawall.backends.python.message_fields",  # the frame checks' field checks
    "seawall.backends.python.message_kinds",  # the protocol's message types
    "seawall.backends.python.messages",
    "seawall.backends.python.model_source",
    "seawall.backends.python.pb_utils",
    "seawall.backends.python.pb_utils._pb_metrics",  # pb_utils' private helpers
    "seawall.backends.python.pb_utils._pb_model_config",
    "seawall.backends.python.pb_utils._pb_tensors",
    "seawall.backends.python.pb_utils.triton_python_backend_utils",
    "seawall.backends.python.stub",
    "seawall.backends.python.stub_async",  # the serving loop of an `async def execute` model
    "seawall.backends.python.stub_channel",  # the stub's control-channel I/O
    "seawall.backends.python.stub_responses",  # a decoupled model's responses and cancellation flags
    "seawall.backends.python.template_process",  # the stub template that forks stubs (a forked stub keeps it)
    "seawall.backends.python.user_model",
}
#: and the outside packages it never loads: no transport, no gRPC client
STUB_MAY_NOT_LOAD = (*TRANSPORTS, "tritonclient", "google.protobuf")


def test_the_core_closure_loads_no_transport_and_no_outer_layer() -> None:
    loaded = _closure(CORE_FILES)
    assert _reaches(loaded, CORE_MAY_NOT_LOAD) == []
    own = {m for m in loaded if m.split(".")[0] == "seawall"}
    outside = ("seawall", "seawall.native", "seawall.errors", "seawall.options")
    assert all(m in outside or m.startswith("seawall.core") for m in own)


def test_the_stub_closure_loads_only_what_it_states() -> None:
    loaded = _closure(STUB_ENTRIES)
    assert _reaches(loaded, STUB_MAY_NOT_LOAD) == []
    assert sorted(m for m in loaded if m.split(".")[0] == "seawall" and m not in STUB_MAY_LOAD) == []
    # in particular never the facade, the lifecycle or a frontend
    assert _reaches(loaded, ("seawall.core.server", "seawall.core.lifecycle", "seawall.frontends")) == []


def test_the_closure_catches_a_transitive_grpc_import(tmp_path: Path) -> None:
    """A module the stub may load that imports, inside a function, one that imports grpc."""
    forged = tmp_path / "raw.py"
    forged.write_text(
        (PACKAGE / "core" / "raw.py").read_text()
        + "\n\ndef _late() -> None:\n    import seawall.frontends.grpc.service\n"
    )
    loaded = _closure(STUB_ENTRIES, {"seawall.core.raw": forged})
    assert {"seawall.frontends.grpc.service", "grpc"} <= loaded
    assert "grpc" in _reaches(loaded, STUB_MAY_NOT_LOAD)


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_import_seawall_loads_nothing_else() -> None:
    done = _run_python(
        "import sys, seawall\n"
        "assert 'seawall.core.server' not in sys.modules, 'server'\n"
        "assert 'grpc' not in sys.modules, 'grpc'\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('seawall'))\n"
        "assert loaded == ['seawall', 'seawall.native'], loaded\n"
        "assert seawall.Options.__name__ == 'Options' and 'seawall.core.server' not in sys.modules\n"
        "assert seawall.InferenceServer.__name__ == 'InferenceServer'\n"
        "assert 'seawall.core.server' in sys.modules and 'seawall.frontends' not in sys.modules\n"
    )
    assert done.returncode == 0, done.stderr


def test_a_stub_process_imports_neither_grpc_nor_the_server() -> None:
    """The stub's modules as bootstrap.py imports them (its own package, then stub, then pb_utils)."""
    bootstrap = PACKAGE / "backends" / "python" / "bootstrap.py"
    pb_dir = PACKAGE / "backends" / "python" / "pb_utils"
    done = _run_python(
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('stub_bootstrap', {str(bootstrap)!r})\n"
        "bootstrap = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(bootstrap)\n"
        f"bootstrap._import_own_package({str(PACKAGE)!r})\n"
        "import seawall.backends.python.stub\n"
        f"sys.path.insert(0, {str(pb_dir)!r})\n"
        "import triton_python_backend_utils\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'tritonclient', 'prometheus_client')\n"
        "    or m in ('seawall.core.server', 'seawall.core.lifecycle') or m.startswith('seawall.frontends'))\n"
        "assert bad == [], bad\n"
        f"assert seawall.__file__ == {str(PACKAGE / '__init__.py')!r}, seawall.__file__\n"
    )
    assert done.returncode == 0, done.stderr


def test_the_core_imports_no_grpc_at_run_time() -> None:
    done = _run_python(
        "import sys\n"
        + "".join(f"import {_module_name(path)}\n" for path in CORE_FILES)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'httptools', 'uvloop', "
        "'prometheus_client') or m.startswith(('seawall.frontends', 'seawall.backends', 'seawall.security')))\n"
        "assert bad == [], bad\n"
    )
    assert done.returncode == 0, done.stderr
