"""The one listener table: every listener Seawall can open, with the names Triton prints for it, the options it
reads (allow/address/port) and the frontend that serves it; and `BindError`, which names the listener that
could not bind.

Read by `app.py` (building and starting the frontends), `cli.py` (port checks, bind errors) and `_cli_log.py`
(the start-up table). Imports `options` only at module level; each factory imports its frontend when called, so
embedding code and the CLI's checks never load a transport.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from seawall.options import Options, Restriction, TlsOptions

if TYPE_CHECKING:
    from seawall.core.server import InferenceServer
    from seawall.frontends.http.body import BodyBudget
    from seawall.security.keyring import KeyRing


class Frontend(Protocol):
    """A listener over the core. `start()` binds and returns the bound (host, port)."""

    async def start(self) -> tuple[str, int]: ...

    async def stop(self) -> None: ...


class Endpoint(Protocol):
    """The options every listener reads: whether it is on, and where it binds."""

    @property
    def allow(self) -> bool: ...

    @property
    def address(self) -> str: ...

    @property
    def port(self) -> int: ...


#: what a factory gets: the core, the options, the restricted-API keys and the HTTP listeners' shared body budget
Factory = Callable[["InferenceServer", Options, "KeyRing", "BodyBudget"], Frontend]


@dataclass(frozen=True)
class Listener:
    key: str  # the `Seawall ready: key=host:port` line
    banner: str  # the start-up table's `<banner>_service` row (Triton's)
    display: str  # `Started <display> at ...`, as Triton prints it
    check_name: str  # `The server cannot listen to <check_name> requests ...` (Triton's)
    bind_name: str  # `failed to start <bind_name> service: ...` (Triton's)
    settings: Callable[[Options], Endpoint]  # its options section
    build: Factory
    http_style: bool  # served by the HTTP/1.1 server (shares the body budget and the descriptor caps)
    label: str  # how the security report and the start-up log name it
    flag: str  # its `--<flag>-address` / `--allow-<flag>` name
    # the restricted-API keys that guard it (None: no API to restrict, the metrics listener)
    restricted: Callable[[Options], tuple[Restriction, ...]] | None
    # it serves the model-repository (load/unload) API under these options
    loads_models: Callable[[Options], bool]
    tls: Callable[[Options], TlsOptions] | None = None  # its TLS settings, when it can serve TLS

    def address(self, options: Options) -> str:
        """Where it binds (the metrics listener follows --http-address unless told otherwise)."""
        address = self.settings(options).address
        return address or options.http.address if self.key == "metrics" else address


class BindError(OSError):
    """A listener could not bind its address; `str()` and `strerror` are the cause's."""

    def __init__(self, listener: Listener, address: str, port: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.listener = listener
        self.address = address
        self.port = port
        self.cause = cause

    def __str__(self) -> str:
        return str(self.cause)


def _grpc(server: InferenceServer, options: Options, keys: KeyRing, budget: BodyBudget) -> Frontend:
    from seawall.frontends.grpc.listener import GrpcFrontend

    return GrpcFrontend(server, options, keys.grpc)


def _http(server: InferenceServer, options: Options, keys: KeyRing, budget: BodyBudget) -> Frontend:
    from seawall.frontends.http.routes import HttpFrontend

    return HttpFrontend(server, options, keys.http, budget)


def _metrics(server: InferenceServer, options: Options, keys: KeyRing, budget: BodyBudget) -> Frontend:
    from seawall.frontends.metrics import MetricsFrontend

    return MetricsFrontend(server, options, budget)


def _sagemaker(server: InferenceServer, options: Options, keys: KeyRing, budget: BodyBudget) -> Frontend:
    from seawall.frontends.cloud.sagemaker import SageMakerFrontend

    return SageMakerFrontend(server, options, keys.http, budget)


def _vertex(server: InferenceServer, options: Options, keys: KeyRing, budget: BodyBudget) -> Frontend:
    from seawall.frontends.cloud.vertex import VertexFrontend

    return VertexFrontend(server, options, keys.http, budget)


HTTP = Listener(
    key="http",
    banner="http",
    display="HTTPService",
    check_name="HTTP",
    bind_name="HTTP",
    settings=lambda o: o.http,
    build=_http,
    label="HTTP",
    flag="http",
    restricted=lambda o: o.http.restricted,
    loads_models=lambda o: True,
    http_style=True,
    tls=lambda o: o.http.tls,
)

GRPC = Listener(
    key="grpc",
    banner="grpc",
    display="GRPCInferenceService",
    check_name="GRPC",
    bind_name="GRPC",
    settings=lambda o: o.grpc,
    build=_grpc,
    label="gRPC",
    flag="grpc",
    restricted=lambda o: o.grpc.restricted,
    loads_models=lambda o: True,
    http_style=False,
    tls=lambda o: o.grpc.tls,
)

METRICS = Listener(
    key="metrics",
    banner="metrics",
    display="Metrics Service",
    check_name="metrics",
    bind_name="Metrics",
    settings=lambda o: o.metrics,
    build=_metrics,
    label="Metrics",
    flag="metrics",
    restricted=None,
    loads_models=lambda o: False,
    http_style=True,
    tls=lambda o: o.metrics.tls,
)

SAGEMAKER = Listener(
    key="sagemaker",
    banner="sagemaker",
    display="Sagemaker HTTPService",
    check_name="SageMaker",
    bind_name="Sagemaker",
    settings=lambda o: o.sagemaker,
    build=_sagemaker,
    label="SageMaker",
    flag="sagemaker",
    restricted=lambda o: o.http.restricted,
    loads_models=lambda o: o.sagemaker.multi_model,
    http_style=True,
)

VERTEX = Listener(
    key="vertex",
    banner="vertex_ai",
    display="Vertex AI HTTPService",
    check_name="Vertex AI",
    bind_name="Vertex AI",
    settings=lambda o: o.vertex,
    build=_vertex,
    label="Vertex AI",
    flag="vertex-ai",
    restricted=lambda o: o.http.restricted,
    loads_models=lambda o: True,
    http_style=True,
)

#: every listener, in Triton's order for checks, messages and the start-up table
LISTENERS: tuple[Listener, ...] = (HTTP, GRPC, METRICS, SAGEMAKER, VERTEX)
#: the order listeners start in (Triton's: gRPC first), so the `Started ...` lines come as Triton's do
START_ORDER: tuple[Listener, ...] = (GRPC, HTTP, METRICS, SAGEMAKER, VERTEX)


def enabled(options: Options, order: tuple[Listener, ...] = LISTENERS) -> list[Listener]:
    """The listeners `options` turns on, in `order`."""
    return [listener for listener in order if listener.settings(options).allow]
