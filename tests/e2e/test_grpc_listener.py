"""The gRPC listener in process (open_server + GrpcFrontend): TLS, mutual TLS, SO_REUSEPORT and shutdown.

These drive the frontend directly over an empty repository (the CLI's TLS flags are tested in tests/e2e/test_tls.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc.aio as aioclient
import trustme
from tritonclient.utils import InferenceServerException

from seawall.app import open_server
from seawall.core.server import InferenceServer
from seawall.errors import InvalidArgumentError
from seawall.frontends.grpc.listener import GrpcFrontend, server_options
from seawall.frontends.grpc.service import build_handlers
from seawall.options import GrpcOptions, Limits, Options, RepositoryOptions, TlsOptions


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[InferenceServer]:
    repository = tmp_path / "models"
    repository.mkdir()
    async with open_server(Options(repository=RepositoryOptions(paths=(str(repository),)))) as server:
        yield server


def _options(server: InferenceServer, **grpc_changes: object) -> Options:
    return server.options.replace(grpc=dataclasses.replace(GrpcOptions(port=0), **grpc_changes))  # type: ignore[arg-type]


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("client@example.org")
    files = {
        "ca": ca.cert_pem,
        "server_key": server_cert.private_key_pem,
        "server_cert": server_cert.cert_chain_pems[0],
        "client_key": client_cert.private_key_pem,
        "client_cert": client_cert.cert_chain_pems[0],
    }
    paths = {}
    for name, blob in files.items():
        path = tmp_path / f"{name}.pem"
        blob.write_to_path(str(path))
        paths[name] = str(path)
    return paths


async def test_tls(core: InferenceServer, pki: dict[str, str]) -> None:
    tls = TlsOptions(use_ssl=True, server_cert=pki["server_cert"], server_key=pki["server_key"])
    frontend = GrpcFrontend(core, _options(core, tls=tls))
    host, port = await frontend.start()
    try:
        async with aioclient.InferenceServerClient(f"{host}:{port}", ssl=True, root_certificates=pki["ca"]) as client:
            assert await client.is_server_live()
        async with aioclient.InferenceServerClient(f"{host}:{port}") as plain:
            with pytest.raises(InferenceServerException):
                await plain.is_server_live(client_timeout=5)
    finally:
        await frontend.stop()


async def test_mutual_tls_requires_a_client_certificate(core: InferenceServer, pki: dict[str, str]) -> None:
    tls = TlsOptions(True, True, pki["server_cert"], pki["server_key"], pki["ca"])
    frontend = GrpcFrontend(core, _options(core, tls=tls))
    host, port = await frontend.start()
    target = f"{host}:{port}"
    try:
        async with aioclient.InferenceServerClient(
            target,
            ssl=True,
            root_certificates=pki["ca"],
            private_key=pki["client_key"],
            certificate_chain=pki["client_cert"],
        ) as client:
            assert await client.is_server_live()
        async with aioclient.InferenceServerClient(target, ssl=True, root_certificates=pki["ca"]) as anonymous:
            with pytest.raises(InferenceServerException):
                await anonymous.is_server_live(client_timeout=5)
    finally:
        await frontend.stop()


async def test_missing_certificate_names_the_flag(core: InferenceServer, tmp_path: Path) -> None:
    missing = str(tmp_path / "absent.pem")
    frontend = GrpcFrontend(core, _options(core, tls=TlsOptions(True, server_cert=missing, server_key=missing)))
    with pytest.raises(InvalidArgumentError) as info:
        await frontend.start()
    assert info.value.message.startswith(f"--grpc-server-cert: cannot read '{missing}'")  # the first file checked
    await frontend.stop()  # never started: still fine


async def test_port_is_not_shared_unless_reuse_port(core: InferenceServer) -> None:
    first = GrpcFrontend(core, _options(core))
    _, port = await first.start()
    try:
        with pytest.raises(OSError):
            await GrpcFrontend(core, _options(core, port=port)).start()
    finally:
        await first.stop()
    shared = [GrpcFrontend(core, _options(core, reuse_port=True)) for _ in range(2)]
    _, port = await shared[0].start()
    try:
        shared[1] = GrpcFrontend(core, _options(core, port=port, reuse_port=True))
        assert (await shared[1].start())[1] == port
    finally:
        for frontend in shared:
            await frontend.stop()


async def test_stop_is_idempotent_and_closes_the_port(core: InferenceServer) -> None:
    frontend = GrpcFrontend(core, _options(core))
    host, port = await frontend.start()
    await frontend.stop(grace=0)
    await frontend.stop()
    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary("/inference.GRPCInferenceService/ServerLive")(b"", timeout=2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_server_options_follow_the_settings() -> None:
    limits = Limits(grpc_max_message_bytes=1234, grpc_max_concurrent_streams=7)
    settings = dict(server_options(GrpcOptions(), limits))
    assert settings["grpc.max_send_message_length"] == settings["grpc.max_receive_message_length"] == 1234
    assert settings["grpc.max_concurrent_streams"] == 7
    assert settings["grpc.so_reuseport"] == 0  # grpc core would turn it on
    assert settings["grpc.keepalive_time_ms"] == 7200000
    assert "grpc.max_connection_age_ms" not in settings  # 0 = unset; grpc would read it as "close at once"
    assert "grpc.default_compression_level" not in settings
    assert settings["grpc.server_handshake_timeout_ms"] == 10000  # --http-header-timeout-secs
    assert settings["grpc.max_connection_idle_ms"] == 75000  # --http-idle-timeout-secs
    tuned = dict(
        server_options(
            GrpcOptions(reuse_port=True, max_connection_age_ms=5000, infer_response_compression_level="high"),
            limits,
        )
    )
    assert tuned["grpc.so_reuseport"] == 1
    assert tuned["grpc.max_connection_age_ms"] == 5000
    assert tuned["grpc.default_compression_level"] == 3


class _RecordingContext:
    """The part of grpc.aio.ServicerContext that the guard uses."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.metadata = metadata
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise grpc.aio.AbortError()


async def test_unexpected_exception_is_internal_and_logged_once(
    core: InferenceServer, caplog: pytest.LogCaptureFixture
) -> None:
    handler = build_handlers(core, core.options)["inference.GRPCInferenceService"]["ModelInfer"]
    context = _RecordingContext()
    with pytest.raises(grpc.aio.AbortError):
        await handler.unary_unary(object(), context)  # not a ModelInferRequest: the codec fails unexpectedly
    assert context.aborted == (grpc.StatusCode.INTERNAL, "internal error")
    errors = [r for r in caplog.records if r.name == "seawall.frontends.grpc.service"]
    assert len(errors) == 1 and errors[0].levelname == "ERROR" and errors[0].exc_info is not None
