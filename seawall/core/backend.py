"""The seam between the core and backends: what a backend loads and how the core executes it.

Imports only `core.types`, `core.model_config`, `errors` and protobuf. Backends implement these Protocols;
the core never imports a backend module directly (see `backends/registry.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from tritonclient.grpc.model_config_pb2 import ModelConfig as ModelConfig

from seawall.core.types import InferRequest, InferResponse
from seawall.errors import SeawallError


@dataclass(frozen=True, slots=True)
class ModelLoadContext:
    """Everything a backend needs to load one version of one model.

    `config` is the final, completed configuration; backends must not mutate it.
    `report_unavailable(reason)` tells the core the model can no longer serve (e.g. a stub process died);
    it may be called from the event loop thread only.
    """

    name: str
    version: int
    config: ModelConfig
    model_dir: str  # <repository>/<model>, resolved
    version_dir: str  # <model_dir>/<version>, resolved
    backend_settings: Mapping[str, str]  # --backend-config values for this backend (globals included)
    auto_complete: bool
    report_unavailable: Callable[[str], None]
    # the config came through the load API (a `config` override, with or without `file:` code), not from the
    # repository: settings only the repository's operator may choose must be refused
    config_from_client: bool = False


class ModelInstance(Protocol):
    """One instance of an instance group.

    The core runs at most `pipeline_depth` executions of one instance at once (an optional int attribute,
    1 to 8, default 1): an instance that queues the next batch while it runs one (the python backend's stub)
    says so there, and must answer its executions in the order they were started.
    """

    @property
    def name(self) -> str: ...

    def is_healthy(self) -> bool:
        """False once the instance can no longer execute (its process died, say)."""
        ...

    async def execute(self, requests: Sequence[InferRequest]) -> list[InferResponse | SeawallError]:
        """Run a batch; one entry per request, in order: a response or that request's error.

        Raises:
            SeawallError: the whole batch failed (every request gets this error).
        """
        ...


class Model(Protocol):
    """A loaded model version: its instances, and how to unload it."""

    @property
    def instances(self) -> Sequence[ModelInstance]: ...

    async def unload(self) -> None:
        """Finalize and release every instance; idempotent."""
        ...


class Backend(Protocol):
    """A kind of model (python, onnxruntime, pytorch, plugins)."""

    @property
    def name(self) -> str: ...

    async def auto_complete_config(self, config: ModelConfig, model_dir: str, version_dir: str) -> ModelConfig:
        """Fill what the backend can derive (inputs, outputs, max_batch_size); may run model code.

        Raises:
            SeawallError: the model's completion hook failed or produced an invalid config.
        """
        ...

    async def load(self, context: ModelLoadContext) -> Model:
        """Load one model version with all its instances.

        Raises:
            SeawallError: the model cannot be loaded; the message becomes the UNAVAILABLE reason.
        """
        ...

    async def stop(self) -> None:
        """Release backend-wide resources at server shutdown; idempotent."""
        ...
