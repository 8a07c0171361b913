"""Which module implements each backend, imported lazily when a model first needs it.

Imports `core.backend`, `errors` and `options`. Built-in backends come first (`python`, `onnxruntime`,
`pytorch`); any other name goes to the plugin lookup the composition root passes in (backends from
--backend-directory, see `seawall/plugins.py`), and without one it is refused with `unknown_backend`, which
names the backends that exist.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable, Sequence
from typing import cast

from seawall.core.backend import Backend
from seawall.errors import UnsupportedError
from seawall.options import BackendOptions

logger = logging.getLogger(__name__)

#: backend name → "module:factory"; the factory takes BackendOptions and returns a Backend.
BACKENDS: dict[str, str] = {
    "python": "seawall.backends.python.host:PythonBackend",
    "onnxruntime": "seawall.backends.onnxruntime.backend:create",
    "pytorch": "seawall.backends.pytorch.backend:create",
}
#: backend name → the extra of the seawall package that installs what it needs
EXTRAS: dict[str, str] = {"onnxruntime": "onnx", "pytorch": "torch"}

#: backend name → the modules it needs beyond Seawall's own dependencies (those of its extra)
REQUIRES: dict[str, tuple[str, ...]] = {"onnxruntime": ("onnxruntime", "onnx"), "pytorch": ("torch",)}


def available_backends() -> list[str]:
    """The built-in backends this installation can run (their extras installed), found without importing them."""
    return [name for name in BACKENDS if all(importlib.util.find_spec(m) is not None for m in REQUIRES.get(name, ()))]


#: Triton's backends that Seawall does not implement yet (a plugin from --backend-directory may provide one)
NOT_YET: frozenset[str] = frozenset(
    ("tensorflow", "tensorrt", "openvino", "fil", "dali", "vllm", "tensorrtllm", "ensemble")
)


def unknown_backend(name: str, plugins: Sequence[str] = ()) -> UnsupportedError:
    """The error for a backend that is neither built in nor among `plugins` (those of --backend-directory)."""
    why = "is not supported by Seawall yet" if name in NOT_YET else "is unknown"
    available = ", ".join([*BACKENDS, *(f"{plugin} (--backend-directory)" for plugin in plugins)])
    return UnsupportedError(f"backend '{name[:64]}' {why}; available backends: {available}")


def create_backend(name: str, options: BackendOptions) -> Backend:
    """Import and build the backend called `name`.

    Raises:
        UnsupportedError: the backend is unknown, or its module (or a library it needs) is not installed.
    """
    target = BACKENDS.get(name)
    if target is None:
        raise unknown_backend(name)
    module_name, _, factory_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        logger.warning("backend '%s' cannot be imported: %r", name, exc)
        if name in EXTRAS:
            raise UnsupportedError(
                f"backend '{name}' needs packages that are not installed: install seawall[{EXTRAS[name]}]"
            ) from exc
        raise UnsupportedError(f"backend '{name}' is not available in this installation") from exc
    factory = getattr(module, factory_name)
    return cast(Backend, factory(options))


class BackendRegistry:
    """One Backend per name for one server, created on first use; `stop()` stops them all.

    `plugins(name)` builds a backend that is not built in (or raises a SeawallError saying why it cannot).
    """

    def __init__(self, options: BackendOptions, plugins: Callable[[str], Backend] | None = None) -> None:
        self._options = options
        self._plugins = plugins
        self._backends: dict[str, Backend] = {}  # owned by the event loop thread

    def get(self, name: str) -> Backend:
        """The backend called `name`, creating it on first use.

        Raises:
            UnsupportedError: see `create_backend`.
            SeawallError: the plugin lookup's error for a backend that is not built in.
        """
        backend = self._backends.get(name)
        if backend is None:
            if name not in BACKENDS and self._plugins is not None:
                backend = self._plugins(name)
            else:
                backend = create_backend(name, self._options)
            self._backends[name] = backend
        return backend

    async def stop(self) -> None:
        """Stop every backend created so far (unloading what they still hold); idempotent."""
        backends = list(self._backends.values())
        self._backends.clear()
        for backend in backends:
            await backend.stop()
