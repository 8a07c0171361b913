"""Seawall: a secure-by-default inference server that speaks Triton's protocols.

The public embedding API is exactly `__all__`:

    async with seawall.open_server(seawall.Options(repository=RepositoryOptions(paths=("models",)))) as server:
        response = await server.infer(seawall.InferRequest("add_sub", [seawall.Tensor.from_numpy("INPUT0", x), ...]))

The names load lazily, on first use: `import seawall` alone imports nothing else, so that a stub process (which
imports `seawall.backends.python.stub`) never loads the server, its frontends or grpc.
"""

from importlib import import_module as _import_module
from typing import TYPE_CHECKING as _TYPE_CHECKING

from seawall import native as _native

_native.install()  # the compiled request path, when it was built from these very sources

if _TYPE_CHECKING:
    from seawall.app import open_server as open_server
    from seawall.core.server import InferenceServer as InferenceServer
    from seawall.core.types import InferRequest as InferRequest
    from seawall.core.types import InferResponse as InferResponse
    from seawall.core.types import ModelState as ModelState
    from seawall.core.types import RequestedOutput as RequestedOutput
    from seawall.core.types import Tensor as Tensor
    from seawall.errors import Code as Code
    from seawall.errors import SeawallError as SeawallError
    from seawall.options import Options as Options
    from seawall.options import RepositoryOptions as RepositoryOptions

__version__ = "0.1.0"

__all__ = [
    "Code",
    "InferRequest",
    "InferResponse",
    "InferenceServer",
    "ModelState",
    "Options",
    "RepositoryOptions",
    "RequestedOutput",
    "SeawallError",
    "Tensor",
    "open_server",
]

#: public name → the module that defines it
_SOURCES = {
    "Code": "seawall.errors",
    "InferRequest": "seawall.core.types",
    "InferResponse": "seawall.core.types",
    "InferenceServer": "seawall.core.server",
    "ModelState": "seawall.core.types",
    "Options": "seawall.options",
    "RepositoryOptions": "seawall.options",
    "RequestedOutput": "seawall.core.types",
    "SeawallError": "seawall.errors",
    "Tensor": "seawall.core.types",
    "open_server": "seawall.app",
}


def __getattr__(name: str) -> object:
    """Import a public name's module on first use (PEP 562); the value is then cached in this module."""
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'seawall' has no attribute '{name}'")
    value = getattr(_import_module(source), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
