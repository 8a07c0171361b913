"""The gRPC listener: the handlers of `service` over Seawall's lean HTTP/2 stack (`lean`, `http2`; the default,
`--grpc-server=lean`), or over a grpc.aio server with the channel arguments the options ask for (`--grpc-server=aio`;
the hot RPC registered by name, the others through one generic handler); plain or over TLS.

Imports `core.server`, `options`, `security` and its siblings `service`, `lean` and `http2`.
"""

from __future__ import annotations

import grpc
import grpc.aio

from seawall.core.server import InferenceServer
from seawall.frontends.grpc.lean import LeanServer
from seawall.frontends.grpc.limits import Http2Limits
from seawall.frontends.grpc.service import HOT_RPC, SERVICE, build_handlers
from seawall.options import GrpcOptions, Limits, Options
from seawall.security import tls
from seawall.security.policy import Keys


def server_options(grpc_options: GrpcOptions, limits: Limits) -> list[tuple[str, int]]:
    """grpc core channel arguments from the options (gRPC turns SO_REUSEPORT on unless told otherwise)."""
    settings = [
        ("grpc.max_send_message_length", limits.grpc_max_message_bytes),
        ("grpc.max_receive_message_length", limits.grpc_max_message_bytes),
        ("grpc.max_concurrent_streams", limits.grpc_max_concurrent_streams),
        ("grpc.so_reuseport", int(grpc_options.reuse_port)),
        ("grpc.keepalive_time_ms", grpc_options.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", grpc_options.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", int(grpc_options.keepalive_permit_without_calls)),
        ("grpc.http2.max_pings_without_data", grpc_options.http2_max_pings_without_data),
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            grpc_options.http2_min_recv_ping_interval_without_data_ms,
        ),
        ("grpc.http2.max_ping_strikes", grpc_options.http2_max_ping_strikes),
        # slow clients: the TCP/TLS/HTTP2 handshake and an idle connection get the HTTP listeners' deadlines
        ("grpc.server_handshake_timeout_ms", limits.http_header_timeout_secs * 1000),
        ("grpc.max_connection_idle_ms", limits.http_idle_timeout_secs * 1000),
    ]
    # 0 means "not set" on Triton's command line; for grpc core it would close every connection at once
    if grpc_options.max_connection_age_ms > 0:
        settings.append(("grpc.max_connection_age_ms", grpc_options.max_connection_age_ms))
    if grpc_options.max_connection_age_grace_ms > 0:
        settings.append(("grpc.max_connection_age_grace_ms", grpc_options.max_connection_age_grace_ms))
    level = ("none", "low", "medium", "high").index(grpc_options.infer_response_compression_level)
    if level:
        settings.append(("grpc.default_compression_level", level))
    return settings


class GrpcFrontend:
    """Serves the gRPC API of one InferenceServer on `options.grpc.address:port` (port 0: ephemeral)."""

    def __init__(self, server: InferenceServer, options: Options, keys: Keys | None = None) -> None:
        self._core = server
        self._options = options
        self._keys = keys  # the live restrictions when key files rotate (security.keyring)
        self._server: grpc.aio.Server | None = None  # owned here; created and stopped on the event loop
        self._lean: LeanServer | None = None  # instead of `_server` with --grpc-server=lean

    async def start(self) -> tuple[str, int]:
        """Bind and start serving; return the bound (host, port).

        Raises:
            OSError: the address could not be bound.
            InvalidArgumentError: TLS files are missing.
        """
        grpc_options = self._options.grpc
        if grpc_options.server == "lean":
            return await self._start_lean()
        server = grpc.aio.server(options=server_options(grpc_options, self._options.limits))
        handlers = build_handlers(self._core, self._options, self._keys)
        server.add_registered_method_handlers(SERVICE, {HOT_RPC: handlers[SERVICE][HOT_RPC]})
        server.add_generic_rpc_handlers(
            tuple(
                grpc.method_handlers_generic_handler(
                    service, {name: h for name, h in methods.items() if (service, name) != (SERVICE, HOT_RPC)}
                )
                for service, methods in handlers.items()
            )
        )
        host = grpc_options.address
        target = f"[{host}]:{grpc_options.port}" if ":" in host else f"{host}:{grpc_options.port}"
        try:
            if tls.is_enabled(grpc_options.tls):
                port = server.add_secure_port(target, tls.grpc_server_credentials(grpc_options.tls))
            else:
                port = server.add_insecure_port(target)
        except RuntimeError as exc:
            raise OSError(f"gRPC could not bind {target}: {exc}") from exc
        if not port:
            raise OSError(f"gRPC could not bind {target}")
        await server.start()
        self._server = server
        return host, int(port)

    async def _start_lean(self) -> tuple[str, int]:
        grpc_options, limits = self._options.grpc, self._options.limits
        handlers = build_handlers(self._core, self._options, self._keys, gathered=True)
        paths = {f"/{service}/{name}": h for service, methods in handlers.items() for name, h in methods.items()}
        context = tls.listener_ssl_context(grpc_options.tls, "grpc")
        if context is not None:
            context.set_alpn_protocols(["h2"])
        http2_limits = Http2Limits(
            max_concurrent_streams=limits.grpc_max_concurrent_streams,
            max_message_bytes=limits.grpc_max_message_bytes,
            max_held_bytes=limits.grpc_max_inflight_request_bytes,
            keepalive_time=grpc_options.keepalive_time_ms / 1000,
            keepalive_timeout=grpc_options.keepalive_timeout_ms / 1000,
            keepalive_without_calls=grpc_options.keepalive_permit_without_calls,
            max_pings_without_data=grpc_options.http2_max_pings_without_data,
            min_ping_interval=grpc_options.http2_min_recv_ping_interval_without_data_ms / 1000,
            max_ping_strikes=grpc_options.http2_max_ping_strikes,
            max_age=grpc_options.max_connection_age_ms / 1000,
            max_age_grace=grpc_options.max_connection_age_grace_ms / 1000,
        )
        lean = LeanServer(
            paths,
            http2_limits,
            context,
            idle_timeout=limits.http_idle_timeout_secs,
            handshake_timeout=limits.http_header_timeout_secs,
        )
        try:
            port = await lean.start(grpc_options.address, grpc_options.port, grpc_options.reuse_port)
        except OSError as exc:
            raise OSError(f"gRPC could not bind {grpc_options.address}:{grpc_options.port}: {exc}") from exc
        self._lean = lean
        return grpc_options.address, port

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new RPCs; in-flight ones get `grace` seconds (default: exit timeout). Idempotent."""
        lean, self._lean = self._lean, None
        if lean is not None:
            await lean.stop(self._options.exit_timeout_secs if grace is None else grace)
        server, self._server = self._server, None
        if server is not None:
            await server.stop(self._options.exit_timeout_secs if grace is None else grace)
