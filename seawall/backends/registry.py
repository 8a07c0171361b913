"""Which module implements each backend, imported lazily when a model first needs it.

Imports `core.backend`, `errors` and `options`. Only built-in backends exist: Seawall never loads code
from --backend-directory, so an unknown backend name is refused instead of searched for.
"""

from __future__ import annotations

import importlib
import logging
from typing import cast

from seawall.core.backend import Backend
from seawall.errors import UnsupportedError
from seawall.options import BackendOptions

logger = logging.getLogger(__name__)

#: backend name → "module:factory"; the factory takes BackendOptions and returns a Backend.
BACKENDS: dict[str, str] = {
    "python": "seawall.backends.python.host:PythonBackend",
    "onnxruntime": "seawall.backends.onnx:OnnxBackend",
    "pytorch": "seawall.backends.torch:TorchBackend",
}

#: legacy `platform` values → backend names (Triton's table, restricted to the backends above)
PLATFORMS: dict[str, str] = {
    "onnxruntime_onnx": "onnxruntime",
    "pytorch_libtorch": "pytorch",
}


def backend_name(backend: str, platform: str) -> str:
    """The backend of a model config: its `backend` field, or the one its `platform` implies.

    Raises:
        UnsupportedError: neither names a known backend.
    """
    name = backend or PLATFORMS.get(platform, "")
    if name not in BACKENDS:
        raise UnsupportedError(f"backend '{backend or platform}' is not supported")
    return name


def create_backend(name: str, options: BackendOptions) -> Backend:
    """Import and build the backend called `name`.

    Raises:
        UnsupportedError: the backend is unknown, or its module (or a library it needs) is not installed.
    """
    target = BACKENDS.get(name)
    if target is None:
        raise UnsupportedError(f"backend '{name}' is not supported")
    module_name, _, factory_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        logger.warning("backend '%s' cannot be imported: %r", name, exc)
        raise UnsupportedError(f"backend '{name}' is not available in this installation") from exc
    factory = getattr(module, factory_name)
    return cast(Backend, factory(options))


class BackendRegistry:
    """One Backend per name for one server, created on first use; `stop()` stops them all."""

    def __init__(self, options: BackendOptions) -> None:
        self._options = options
        self._backends: dict[str, Backend] = {}  # owned by the event loop thread

    def get(self, name: str) -> Backend:
        """The backend called `name`, creating it on first use.

        Raises:
            UnsupportedError: see `create_backend`.
        """
        backend = self._backends.get(name)
        if backend is None:
            backend = create_backend(name, self._options)
            self._backends[name] = backend
        return backend

    async def stop(self) -> None:
        """Stop every backend created so far (unloading what they still hold); idempotent."""
        backends = list(self._backends.values())
        self._backends.clear()
        for backend in backends:
            await backend.stop()
