"""End-to-end TLS: HTTP, metrics and gRPC listeners with server-side and mutual TLS, driven by tritonclient.

Certificates are made per test module with trustme; the server is a real `seawall` process.
"""

from __future__ import annotations

import dataclasses
import http.client
import socket
import ssl
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
import trustme
from tritonclient.utils import InferenceServerException

from tests.harness import ServerProcess, run_seawall, start_seawall


@dataclass(frozen=True)
class Pki:
    """PEM files of one test authority, its server certificate and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # signed by another authority
    stranger_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    authority, other = trustme.CA(), trustme.CA()
    server = authority.issue_cert("127.0.0.1", "localhost")
    client = authority.issue_cert("client@example.test")
    stranger = other.issue_cert("stranger@example.test")
    files = {
        "ca": authority.cert_pem,
        "server_cert": server.cert_chain_pems[0],
        "server_key": server.private_key_pem,
        "client_cert": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
        "stranger_cert": stranger.cert_chain_pems[0],
        "stranger_key": stranger.private_key_pem,
    }
    paths = {}
    for name, blob in files.items():
        paths[name] = folder / f"{name}.pem"
        blob.write_to_path(str(paths[name]))
    return Pki(**paths)


def tls_flags(listener: str, pki: Pki, *, mutual: bool = False) -> list[str]:
    flags = [
        f"--{listener}-use-ssl{'-mutual' if mutual else ''}=true",
        f"--{listener}-server-cert={pki.server_cert}",
        f"--{listener}-server-key={pki.server_key}",
    ]
    return [*flags, f"--{listener}-root-cert={pki.ca}"] if mutual else flags


@pytest.fixture(scope="module")
def server(pki: Pki) -> Iterator[ServerProcess]:
    process = start_seawall(*tls_flags("http", pki), *tls_flags("metrics", pki), *tls_flags("grpc", pki))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def mutual(pki: Pki) -> Iterator[ServerProcess]:
    process = start_seawall(
        *tls_flags("http", pki, mutual=True), *tls_flags("grpc", pki, mutual=True), "--allow-metrics=false"
    )
    try:
        yield process
    finally:
        process.stop()


def _inputs(module: object) -> list[object]:
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        tensor = module.InferInput(name, [4], "FP32")  # type: ignore[attr-defined]
        tensor.set_data_from_numpy(np.arange(4, dtype=np.float32))
        inputs.append(tensor)
    return inputs


def _https(address: str, context: ssl.SSLContext, path: str) -> tuple[int, bytes, str | None]:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        assert connection.sock is not None
        return reply.status, reply.read(), connection.sock.version()
    finally:
        connection.close()


def _client_context(pki: Pki, *, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


# ------------------------------------------------------------------------------------------------ HTTP


def test_http_over_tls_with_tritonclient(server: ServerProcess, pki: Pki) -> None:
    client = httpclient.InferenceServerClient(server.http, ssl=True, ssl_options={"ca_certs": str(pki.ca)})
    try:
        assert client.is_server_ready()
        result = client.infer("add_sub", _inputs(httpclient))
        assert result.as_numpy("OUTPUT0").tolist() == [0.0, 2.0, 4.0, 6.0]
    finally:
        client.close()


async def test_http_over_tls_with_the_aio_client(server: ServerProcess, pki: Pki) -> None:
    client = aioclient.InferenceServerClient(server.http, ssl=True, ssl_context=_client_context(pki))
    try:
        assert await client.is_server_live()
        assert (await client.get_model_metadata("add_sub"))["name"] == "add_sub"
    finally:
        await client.close()


def test_tls_1_3_is_negotiated_and_1_1_is_refused(server: ServerProcess, pki: Pki) -> None:
    status, _, version = _https(server.http, _client_context(pki), "/v2/health/ready")
    assert (status, version) == (200, "TLSv1.3")
    twelve = _client_context(pki)
    twelve.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _https(server.http, twelve, "/v2/health/live")[::2] == (200, "TLSv1.2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the client side of the test is the obsolete one
        old = _client_context(pki)
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises(ssl.SSLError):
            _https(server.http, old, "/v2/health/live")
    assert _https(server.http, _client_context(pki), "/v2/health/ready")[0] == 200


def test_plain_http_on_a_tls_port_gets_no_answer(server: ServerProcess, pki: Pki) -> None:
    host, port = server.http.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        connection.request("GET", "/v2/health/ready")
        connection.getresponse()
    connection.close()


def test_an_untrusted_server_certificate_is_detected(server: ServerProcess) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _https(server.http, ssl.create_default_context(), "/v2/health/ready")


def test_metrics_over_tls(server: ServerProcess, pki: Pki) -> None:
    status, body, _ = _https(server.metrics, _client_context(pki), "/metrics")
    assert status == 200 and b"nv_inference_request_success" in body


def test_start_up_log_reports_tls(server: ServerProcess) -> None:
    log = server.log()
    assert "http_tls" in log and "grpc_tls" in log and "metrics_tls" in log


def test_mutual_tls_http_requires_a_client_certificate(mutual: ServerProcess, pki: Pki) -> None:
    good = _client_context(pki, cert=pki.client_cert, key=pki.client_key)
    assert _https(mutual.http, good, "/v2/health/ready")[0] == 200
    for context in (_client_context(pki), _client_context(pki, cert=pki.stranger_cert, key=pki.stranger_key)):
        # TLS 1.3 reports a refused client certificate on the first read after the handshake
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            _https(mutual.http, context, "/v2/health/ready")
    assert _https(mutual.http, good, "/v2/health/ready")[0] == 200


def test_mutual_tls_http_with_tritonclient(mutual: ServerProcess, pki: Pki) -> None:
    options = {"ca_certs": str(pki.ca), "certfile": str(pki.client_cert), "keyfile": str(pki.client_key)}
    client = httpclient.InferenceServerClient(mutual.http, ssl=True, ssl_options=options)
    try:
        assert client.is_server_ready()
    finally:
        client.close()
    anonymous = httpclient.InferenceServerClient(mutual.http, ssl=True, ssl_options={"ca_certs": str(pki.ca)})
    try:
        with pytest.raises(Exception):  # noqa: B017 (gevent raises ssl or socket errors, by platform)
            anonymous.is_server_ready()
    finally:
        anonymous.close()


# ------------------------------------------------------------------------------------------------ gRPC


def test_grpc_over_tls_from_the_command_line(server: ServerProcess, pki: Pki) -> None:
    client = grpcclient.InferenceServerClient(server.grpc, ssl=True, root_certificates=str(pki.ca))
    try:
        assert client.is_server_ready()
        result = client.infer("add_sub", _inputs(grpcclient))
        assert result.as_numpy("OUTPUT1").tolist() == [0.0, 0.0, 0.0, 0.0]
    finally:
        client.close()
    plain = grpcclient.InferenceServerClient(server.grpc)
    try:
        with pytest.raises(InferenceServerException):
            plain.is_server_live(client_timeout=5)
    finally:
        plain.close()


def test_grpc_mutual_tls_from_the_command_line(mutual: ServerProcess, pki: Pki) -> None:
    client = grpcclient.InferenceServerClient(
        mutual.grpc,
        ssl=True,
        root_certificates=str(pki.ca),
        private_key=str(pki.client_key),
        certificate_chain=str(pki.client_cert),
    )
    try:
        assert client.is_server_ready()
    finally:
        client.close()
    for key, chain in ((None, None), (pki.stranger_key, pki.stranger_cert)):
        refused = grpcclient.InferenceServerClient(
            mutual.grpc,
            ssl=True,
            root_certificates=str(pki.ca),
            private_key=None if key is None else str(key),
            certificate_chain=None if chain is None else str(chain),
        )
        try:
            with pytest.raises(InferenceServerException):
                refused.is_server_live(client_timeout=5)
        finally:
            refused.close()


# ------------------------------------------------------------------------------------------------ start-up


@pytest.mark.parametrize("listener", ["http", "grpc", "metrics"])
def test_a_missing_pem_file_stops_start_up_naming_the_flag(listener: str, pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    result = run_seawall(
        "--model-repository=/nonexistent",
        f"--{listener}-use-ssl=true",
        f"--{listener}-server-cert={pki.server_cert}",
        f"--{listener}-server-key={missing}",
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: creating server: Invalid argument - --{listener}-server-key: cannot read '{missing}': "
        "No such file or directory"
    )


def test_disabled_listeners_have_no_socket() -> None:
    ports = []
    for _ in range(2):
        with socket.socket() as probe:  # a port that was free a moment ago; nothing of ours may listen on it
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    process = start_seawall(f"--sagemaker-port={ports[0]}", f"--vertex-ai-port={ports[1]}", "--allow-metrics=false")
    try:
        assert "sagemaker" not in process.addresses and "vertex" not in process.addresses
        assert "metrics" not in process.addresses
        for port in ports:
            with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
    finally:
        process.stop()


def test_every_listener_context_refuses_old_protocols(pki: Pki) -> None:
    from seawall.options import TlsOptions
    from seawall.security.tls import server_ssl_context

    files = TlsOptions(True, False, str(pki.server_cert), str(pki.server_key), str(pki.ca))
    context = server_ssl_context(files, "http")
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2 and context.verify_mode is ssl.CERT_NONE
    context = server_ssl_context(dataclasses.replace(files, use_ssl_mutual=True), "metrics")
    assert context.verify_mode is ssl.CERT_REQUIRED


async def test_grpc_credentials_from_the_shared_builder(pki: Pki, tmp_path: Path) -> None:
    import grpc

    from seawall.errors import InvalidArgumentError
    from seawall.options import TlsOptions
    from seawall.security.tls import grpc_server_credentials

    files = TlsOptions(True, True, str(pki.server_cert), str(pki.server_key), str(pki.ca))
    server = grpc.aio.server()
    port = server.add_secure_port("127.0.0.1:0", grpc_server_credentials(files))
    assert port > 0
    await server.stop(None)
    with pytest.raises(InvalidArgumentError, match="^--grpc-root-cert: cannot read"):
        grpc_server_credentials(dataclasses.replace(files, root_cert=str(tmp_path / "none.pem")))
