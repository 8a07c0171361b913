"""Every setting of a Seawall server, as frozen dataclasses holding the defaults.

Imports only `errors`. `cli.py` builds these from tritonserver's flags; embedding code builds them directly.
Defaults follow Triton's secure deployment guide (see docs/differences.md for where they differ from Triton).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

ModelControlMode = Literal["none", "poll", "explicit"]
LogFormat = Literal["default", "ISO8601"]

#: Categories of `--http-restricted-api` / `--grpc-restricted-protocol`, in Triton's spelling.
API_CATEGORIES = (
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)


@dataclass(frozen=True, slots=True)
class Restriction:
    """One restricted group: requests to `categories` must carry header `key` with `value`."""

    categories: tuple[str, ...]
    key: str
    value: str = field(repr=False)  # a secret: never printed
    on_command_line: bool = field(default=False, compare=False)  # given on argv, not from a file or variable
    # the key file it was read from (re-read on SIGHUP and when it changes); "" = argv or environment: fixed
    source: str = ""

    def __repr__(self) -> str:
        return f"Restriction(categories={self.categories!r}, key={self.key!r}, value=<redacted>)"


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits applied to every request before anything is allocated."""

    max_request_bytes: int = 64 * 1024 * 1024  # HTTP body, also the decompressed size (Triton 2.59+)
    max_header_bytes: int = 16 * 1024  # all request headers of one HTTP request together
    max_json_depth: int = 100  # upstream Triton's limit
    max_inputs: int = 1024
    max_outputs: int = 1024
    max_parameters: int = 256  # parameters of a request, and of each of its inputs and outputs (each costs objects)
    max_tensor_elements: int = 1 << 31
    max_tensor_bytes: int = 64 * 1024 * 1024
    max_bytes_elements: int = 1 << 20  # BYTES elements in one request, all inputs together (each costs an object)
    max_chunks: int = 65536  # chunked transfer-encoding chunks per request (upstream Triton's cap)
    max_decompression_ratio: int = 1024
    grpc_max_message_bytes: int = 64 * 1024 * 1024
    grpc_max_concurrent_streams: int = 1024
    grpc_max_inflight_request_bytes: int = 256 * 1024 * 1024  # gRPC request bytes held at once (lean stack)
    max_inflight_requests: int = 0  # inference requests in flight, whole server; 0 = no cap (Triton's)
    busy_poll_us: int = 1000  # the event loop polls instead of sleeping this long after a request came; 0 = never
    # HTTP listeners (HTTP, metrics, SageMaker, Vertex AI); Triton has none of these limits
    http_max_inflight_body_bytes: int = 256 * 1024 * 1024  # request bodies held at once, all listeners together
    http_header_timeout_secs: int = 10  # from a request's first byte (or the connection) to the end of its head
    http_body_timeout_secs: int = 30  # each such window of a body must bring http_min_body_rate bytes per second,
    # and a reply waiting for its reader must drain as fast
    http_min_body_rate: int = 1024  # bytes per second
    http_idle_timeout_secs: int = 75  # keep-alive connection without a request
    http_max_connections: int = 1024  # open connections per listener
    http_max_connections_per_peer: int = 256  # of those, from one address (IPv6: one /64)


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS for one listener. `root_cert` is the CA bundle that verifies client certificates."""

    use_ssl: bool = False
    use_ssl_mutual: bool = False
    server_cert: str = ""
    server_key: str = ""
    root_cert: str = ""


@dataclass(frozen=True, slots=True)
class HttpOptions:
    allow: bool = True
    address: str = "127.0.0.1"  # Triton binds 0.0.0.0; Seawall binds loopback unless told otherwise
    port: int = 8000
    reuse_port: bool = False
    restricted: tuple[Restriction, ...] = ()
    tls: TlsOptions = TlsOptions()


@dataclass(frozen=True, slots=True)
class GrpcOptions:
    allow: bool = True
    address: str = "127.0.0.1"
    port: int = 8001
    reuse_port: bool = False
    restricted: tuple[Restriction, ...] = ()
    tls: TlsOptions = TlsOptions()
    infer_response_compression_level: Literal["none", "low", "medium", "high"] = "none"
    keepalive_time_ms: int = 7200000
    keepalive_timeout_ms: int = 20000
    keepalive_permit_without_calls: bool = False
    http2_max_pings_without_data: int = 2
    http2_min_recv_ping_interval_without_data_ms: int = 300000
    http2_max_ping_strikes: int = 2
    max_connection_age_ms: int = 0
    max_connection_age_grace_ms: int = 0
    server: Literal["aio", "lean"] = "lean"  # the lean HTTP/2 stack (frontends/grpc/lean.py), or grpc.aio


@dataclass(frozen=True, slots=True)
class MetricsOptions:
    allow: bool = True
    address: str = ""  # empty: same as the HTTP address
    port: int = 8002
    config: tuple[tuple[str, str], ...] = ()
    tls: TlsOptions = TlsOptions()


@dataclass(frozen=True, slots=True)
class SageMakerOptions:
    """The SageMaker listener (`--allow-sagemaker`); `model_root` confines the MME `url` (Seawall's own)."""

    allow: bool = False
    address: str = "127.0.0.1"  # Triton binds 0.0.0.0 and has no address option
    port: int = 8080
    safe_port_range: tuple[int, int] | None = None  # other listeners must use ports inside it
    default_model: str = "unspecified_SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"  # Triton's literal default
    ping_mode: Literal["ready", "live"] = "ready"
    model_root: str = "/opt/ml/models"
    multi_model: bool = False  # the MME load/unload routes (SAGEMAKER_MULTI_MODEL=true)
    max_models: int = 64  # MME models loaded at once; one more is refused with 507 (SageMaker then evicts)


@dataclass(frozen=True, slots=True)
class VertexOptions:
    """The Vertex AI listener (`--allow-vertex-ai`); routes come from AIP_PREDICT_ROUTE / AIP_HEALTH_ROUTE."""

    allow: bool = False
    address: str = "127.0.0.1"  # Triton binds 0.0.0.0 and has no address option
    port: int = 8080
    default_model: str = ""  # empty: the only model in the repository
    predict_route: str = ""
    health_route: str = ""


@dataclass(frozen=True, slots=True)
class LogOptions:
    info: bool = True
    warning: bool = True
    error: bool = True
    verbose: int = 0
    format: LogFormat = "default"
    file: str = ""
    audit_file: str = ""  # Seawall: audit lines go here (else to the log file, else stderr); start-up only


@dataclass(frozen=True, slots=True)
class TraceOptions:
    """Start-up trace settings (`--trace-config`, triton mode). The file can be set only here (CVE-2024-0100)."""

    level: tuple[str, ...] = ("OFF",)  # ("OFF",) or ("TIMESTAMPS",)
    rate: int = 1000  # trace every rate-th request
    count: int = -1  # traces left to take; -1 = no limit
    log_frequency: int = 0  # write <file>.<n> every this many traces; 0 = one file at shutdown
    file: str = ""


@dataclass(frozen=True, slots=True)
class RepositoryOptions:
    paths: tuple[str, ...] = ()
    control_mode: ModelControlMode = "none"
    poll_secs: int = 15
    load_models: tuple[str, ...] = ()
    config_name: str = ""
    load_thread_count: int = 4
    load_retry_count: int = 0
    strict_readiness: bool = True
    exit_on_error: bool = True
    auto_complete_config: bool = True  # --disable-auto-complete-config turns it off
    max_override_files: int = 1000  # `file:` overrides of one load request
    max_override_bytes: int = 64 << 20  # their decoded bytes together
    # explicit mode starts only when model-repository is restricted on every listener, unless this is set
    allow_unrestricted_model_repository: bool = False
    # explicit mode: a request for a repository model that is not loaded loads it (core/residency.py)
    load_on_request: bool = False
    load_on_request_timeout_secs: int = 120  # how long a request waits for the load it triggered
    max_loaded_models: int = 0  # explicit mode: at most this many loaded, least recently used evicted; 0: no limit


@dataclass(frozen=True, slots=True)
class BackendOptions:
    backend_directory: str = "/opt/tritonserver/backends"
    repoagent_directory: str = "/opt/tritonserver/repoagents"
    cache_directory: str = "/opt/tritonserver/caches"
    # plugin paths loaded although they fail the trust check (--allow-untrusted-plugin-path)
    allow_untrusted_paths: tuple[str, ...] = ()
    # (backend, setting, value); backend "" is a global setting
    config: tuple[tuple[str, str, str], ...] = ()
    # (cache, setting, value) of --cache-config, all naming one cache; empty: no response cache
    cache_config: tuple[tuple[str, str, str], ...] = ()
    # model code isolation (python-backend stub processes; see docs/differences.md): the (uid, gid) stubs run as
    # (--model-user; None: the server's own), and their whole environment (cli.py builds it from an allowlist)
    model_user: tuple[int, int] | None = None
    model_environment: tuple[tuple[str, str], ...] = ()
    # python models may run in the server process when their repository config.pbtxt asks (SEAWALL_IN_PROCESS);
    # a config sent through the load API never may
    allow_in_process_models: bool = True
    # how python-backend stubs start: "fork" from one pre-imported template process (shared pages), or "spawn"
    # a fresh interpreter each (own address-space layout; see docs/differences.md)
    python_stub_start: str = "fork"
    # the largest model a backend reads (--max-model-size): ONNX with its external-data files, or a model.pt
    max_model_bytes: int = 1 << 30

    def settings_for(self, backend: str) -> dict[str, str]:
        """Every --backend-config value `backend` sees: the global ones, then its own (which win)."""
        settings: dict[str, str] = {}
        for owner in ("", backend):
            for name, key, value in self.config:
                if name == owner:
                    settings[key] = value
        return settings

    def setting(self, backend: str, name: str, default: str) -> str:
        """The value of `name` for `backend`, a global setting, or `default`, in that order."""
        return self.settings_for(backend).get(name, default)


@dataclass(frozen=True, slots=True)
class Options:
    """All settings of one server. Frozen: configuration does not change once the server starts."""

    server_id: str = "triton"
    exit_timeout_secs: int = 30
    repository: RepositoryOptions = RepositoryOptions()
    http: HttpOptions = HttpOptions()
    grpc: GrpcOptions = GrpcOptions()
    metrics: MetricsOptions = MetricsOptions()
    sagemaker: SageMakerOptions = SageMakerOptions()
    vertex: VertexOptions = VertexOptions()
    log: LogOptions = LogOptions()
    trace: TraceOptions = TraceOptions()
    backends: BackendOptions = BackendOptions()
    limits: Limits = Limits()
    allow_client_shm: bool = False  # client shared-memory registration (Triton 2.68's secure default)
    max_shm_regions: int = 64  # registered client shared memory regions (each holds one descriptor)
    max_shm_bytes: int = 4 << 30  # sum of their byte_size (nothing is mapped; bounds what requests may name)
    rate_limit: Literal["off", "execution_count"] = "off"  # instances wait for their rate_limiter resources
    # --rate-limit-resource: (name, count, device; -1 = every device); empty: the most any instance needs
    rate_limit_resources: tuple[tuple[str, int, int], ...] = ()

    def replace(self, **changes: object) -> Options:
        """A copy with `changes` applied (dataclasses.replace, typed loosely for nested use)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
