"""The InferenceServer facade: the one object every frontend and the embedding API call.

Imports only other `core` modules, `errors`, `options`. Knows nothing about HTTP or gRPC.
"""

from __future__ import annotations

from seawall.core.backend import ModelConfig
from seawall.core.types import (
    InferRequest,
    InferResponse,
    ModelIndexEntry,
    ModelMetadata,
    ModelStatistics,
    ServerMetadata,
)
from seawall.options import Options

SERVER_VERSION = "2.51.0"
#: Extensions Seawall implements, in the order Triton 2.51 lists them.
EXTENSIONS = ("model_configuration", "binary_tensor_data", "parameters")


class InferenceServer:
    """A Triton-compatible inference server core.

    Lifecycle: `await start()` loads the repository per the control mode; `await stop()` unloads every model.
    """

    def __init__(self, options: Options) -> None:
        self.options = options

    async def start(self) -> None:
        """Scan the repositories and load the models the control mode asks for.

        Raises:
            SeawallError: a repository is missing, or a model failed with exit-on-error set.
        """
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop accepting work, unload every model (calls `finalize`); idempotent."""
        raise NotImplementedError

    def is_live(self) -> bool:
        raise NotImplementedError

    def is_ready(self) -> bool:
        """Live, and (with strict readiness) every model the server tried to load is READY."""
        raise NotImplementedError

    def server_metadata(self) -> ServerMetadata:
        raise NotImplementedError

    def model_ready(self, name: str, version: str = "") -> bool:
        """Raises: InvalidArgumentError for a version string that is not an integer."""
        raise NotImplementedError

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        """Raises: NotFoundError (unknown model or version), InvalidArgumentError (bad version string)."""
        raise NotImplementedError

    def model_config(self, name: str, version: str = "") -> ModelConfig:
        """The completed configuration of a served model version.

        Raises: NotFoundError, InvalidArgumentError.
        """
        raise NotImplementedError

    def repository_index(self, ready_only: bool = False) -> list[ModelIndexEntry]:
        raise NotImplementedError

    def model_statistics(self, name: str = "", version: str = "") -> list[ModelStatistics]:
        """Statistics of every ready model version ("" name), or of one model / version.

        Raises: InvalidArgumentError (the statistics extension answers unknown models with 400).
        """
        raise NotImplementedError

    async def infer(self, request: InferRequest) -> InferResponse:
        """Validate `request` against the model's config, schedule it on an instance, return its response.

        Raises:
            NotFoundError: unknown model or version.
            UnavailableError: the model is not ready.
            InvalidArgumentError: inputs do not match the config (name, datatype, shape, byte size).
            SeawallError: the model's own error for this request, with its code.
        """
        raise NotImplementedError
