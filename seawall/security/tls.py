"""TLS for every listener: one SSLContext builder for the HTTP-style listeners and the gRPC credentials.

Imports `errors`, `options`, the standard `ssl` module and (lazily) grpc. PEM files are checked here, at
start-up, and every error names the flag that gave the file (`--<listener>-server-cert`, ...).
"""

from __future__ import annotations

import ssl
from typing import Any

from seawall.errors import InvalidArgumentError
from seawall.options import TlsOptions

#: The oldest protocol any listener accepts.
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def is_enabled(tls: TlsOptions) -> bool:
    """Whether the listener speaks TLS (mutual mode turns TLS on, as Triton's `-use-ssl-mutual` does)."""
    return tls.use_ssl or tls.use_ssl_mutual


def _read(path: str, flag: str, marker: bytes, what: str) -> bytes:
    if not path:
        raise InvalidArgumentError(f"{flag} is required when TLS is on")
    try:
        with open(path, "rb") as pem:
            data = pem.read()
    except OSError as exc:
        raise InvalidArgumentError(f"{flag}: cannot read '{path}': {exc.strerror or exc}") from None
    if marker not in data:
        raise InvalidArgumentError(f"{flag}: '{path}' holds no PEM {what}")
    return data


def _read_files(tls: TlsOptions, listener: str) -> tuple[bytes, bytes, bytes | None]:
    prefix = f"--{listener}"
    chain = _read(tls.server_cert, f"{prefix}-server-cert", b"-----BEGIN CERTIFICATE-----", "certificate")
    key = _read(tls.server_key, f"{prefix}-server-key", b"PRIVATE KEY-----", "private key")
    root = None
    if tls.use_ssl_mutual:
        root = _read(tls.root_cert, f"{prefix}-root-cert", b"-----BEGIN CERTIFICATE-----", "certificate")
    return chain, key, root


def server_ssl_context(tls: TlsOptions, listener: str) -> ssl.SSLContext:
    """A server SSLContext for `listener` ("http", "metrics", ...): TLS 1.2 or newer, and with
    `use_ssl_mutual` a client certificate signed by the root bundle is required.

    Raises:
        InvalidArgumentError: a file is missing, unreadable, not PEM, or the key does not match the
            certificate; the message names the flag.
    """
    chain, key, root = _read_files(tls, listener)
    prefix = f"--{listener}"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    try:
        # load_cert_chain takes paths only; the files were read above so that errors name the flag
        context.load_cert_chain(tls.server_cert, tls.server_key, password=_refuse_password(prefix))
    except ssl.SSLError as exc:
        raise InvalidArgumentError(
            f"{prefix}-server-cert / {prefix}-server-key: the key does not match the certificate or is not "
            f"usable ({exc.reason or exc})"
        ) from None
    if root is not None:
        try:
            context.load_verify_locations(cadata=root.decode("ascii", "replace"))
        except ssl.SSLError as exc:
            raise InvalidArgumentError(f"{prefix}-root-cert: not a usable CA bundle ({exc.reason or exc})") from None
        context.verify_mode = ssl.CERT_REQUIRED
    del chain, key  # checked for presence only; OpenSSL reads them itself
    return context


def listener_ssl_context(tls: TlsOptions, listener: str) -> ssl.SSLContext | None:
    """The SSL context of an HTTP-style listener, or None when it speaks plain HTTP.

    Raises:
        InvalidArgumentError: as `server_ssl_context`.
    """
    return server_ssl_context(tls, listener) if is_enabled(tls) else None


def _refuse_password(prefix: str) -> Any:
    def refuse() -> bytes:
        # an encrypted key would otherwise make OpenSSL prompt on the terminal
        raise InvalidArgumentError(f"{prefix}-server-key: encrypted private keys are not supported")

    return refuse


def grpc_server_credentials(tls: TlsOptions) -> Any:
    """gRPC server credentials from the `--grpc-*` PEM files; mutual mode requires and verifies client
    certificates (Triton's REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY).

    Raises:
        InvalidArgumentError: as `server_ssl_context`, naming the `--grpc-*` flag.
    """
    import grpc  # only a gRPC listener pays for it

    server_ssl_context(tls, "grpc")  # the same checks (PEM, key matches certificate) as every listener
    chain, key, root = _read_files(tls, "grpc")
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=root, require_client_auth=root is not None)
