"""Seawall: a secure-by-default inference server that speaks Triton's protocols.

The public embedding API is exactly `__all__`:

    async with seawall.open_server(seawall.Options(repository=RepositoryOptions(paths=("models",)))) as server:
        response = await server.infer(seawall.InferRequest("add_sub", [seawall.Tensor.from_numpy("INPUT0", x), ...]))
"""

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
