"""The composition root: builds the core and its frontends from Options, and runs them until a signal.

The only module that knows every part. `open_server()` is the embedding API; `serve()` is what the CLI runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import resource
import signal
import time
from collections.abc import AsyncIterator, Awaitable

from seawall.core import audit
from seawall.core.log_settings import LogSettings
from seawall.core.server import InferenceServer
from seawall.listeners import START_ORDER, BindError, Frontend, Listener, enabled
from seawall.options import Options, Restriction
from seawall.security.keyring import KeyFileReader, KeyRing

logger = logging.getLogger(__name__)

#: File descriptors kept free of HTTP connections: models, stub processes, logs, gRPC connections.
_FD_RESERVE = 256


@contextlib.asynccontextmanager
async def open_server(options: Options) -> AsyncIterator[InferenceServer]:
    """Start an in-process InferenceServer (no listeners) and stop it on exit.

    Raises:
        SeawallError: start-up failed (missing repository, a model failed with exit-on-error).
    """
    server = _build_server(options)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()


def _build_server(options: Options, log_settings: LogSettings | None = None) -> InferenceServer:
    """The core with this installation's backends (built in, then --backend-directory's plugins), repository
    agents and response cache.

    Raises:
        SeawallError: the response cache cannot be created (see `plugins.create_cache`).
    """
    from seawall.backends.registry import BackendRegistry
    from seawall.plugins import backend_lookup, create_cache, repoagent_lookup

    trusted = tuple(os.path.realpath(p) for p in options.backends.allow_untrusted_paths)
    return InferenceServer(
        options,
        BackendRegistry(options.backends, backend_lookup(options.backends, trusted)),
        log_settings=log_settings,
        agent_for=repoagent_lookup(options.backends.repoagent_directory, trusted),
        response_cache=create_cache(options.backends, trusted),
    )


def _frontends(server: InferenceServer, options: Options, keys: KeyRing) -> list[tuple[Listener, Frontend]]:
    from seawall.frontends.http.body import BodyBudget  # here so that embedding code never pays for the transports

    budget = BodyBudget(options.limits.http_max_inflight_body_bytes)  # one for all HTTP listeners
    return [(listener, listener.build(server, options, keys, budget)) for listener in enabled(options, START_ORDER)]


def _no_key_files(path: str, family: str) -> tuple[Restriction, ...]:
    raise ValueError("keys are not re-read: the server was not started by the command line")


def _raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (the default soft 1024 is below the connection caps); returns
    the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):  # some systems refuse the hard value; keep what we have
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


def _fit_connection_caps(options: Options, fd_limit: int) -> Options:
    """Lower --http-max-connections (and the per-peer share) so that every HTTP listener full still leaves
    descriptors for the rest of the server; a listener out of descriptors stops accepting anyone, health included."""
    listeners = sum(listener.http_style for listener in enabled(options))
    limits = options.limits
    if fd_limit == resource.RLIM_INFINITY or not listeners:
        return options
    fitting = max(1, (fd_limit - _FD_RESERVE) // listeners)
    if limits.http_max_connections <= fitting:
        return options
    logger.warning(
        "--http-max-connections=%d does not fit the open-file limit %d over %d HTTP listener(s): using %d",
        limits.http_max_connections,
        fd_limit,
        listeners,
        fitting,
    )
    per_peer = min(limits.http_max_connections_per_peer, max(1, fitting * 3 // 4))
    fitted = dataclasses.replace(limits, http_max_connections=fitting, http_max_connections_per_peer=per_peer)
    return options.replace(limits=fitted)


async def _start(listener: Listener, frontend: Frontend, options: Options) -> tuple[str, int]:
    """Start one frontend; a failed bind raises a BindError naming its listener."""
    try:
        return await frontend.start()
    except OSError as exc:
        settings = listener.settings(options)
        raise BindError(listener, settings.address, settings.port, exc) from exc


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


#: Seconds the unload (each model's finalize) may take once the drain is over or its timeout passed; then the
#: process exits and the kernel ends every stub (backends/python/bootstrap.py).
STOP_GRACE_S = 5.0


async def _drain(server: InferenceServer, timeout_secs: int) -> None:
    """Refuse new work (readiness goes false at once) and wait for accepted requests, up to the timeout."""
    server.start_draining()
    logger.info("Shutting down: waiting up to %ds for %d in-flight request(s)", timeout_secs, server.inflight())
    deadline = time.monotonic() + timeout_secs
    while server.inflight() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    if server.inflight():
        logger.warning("exit timeout: %d request(s) still in flight are cancelled", server.inflight())


async def _bounded(step: Awaitable[None], seconds: float, forced: asyncio.Event, what: str) -> bool:
    """Run a shutdown step until it ends, `seconds` pass, or a second signal forces the exit. False: the step
    was abandoned (cancelled, though grpc's stop, say, may not end on a cancel: the caller exits without it)."""
    task = asyncio.ensure_future(step)
    force = asyncio.ensure_future(forced.wait())
    try:
        await asyncio.wait((task, force), timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        force.cancel()
    if task.done():
        task.result()
        return True
    logger.warning("%s: %s is abandoned", "second signal" if forced.is_set() else "exit timeout", what)
    task.cancel()
    return False


async def _stop(frontends: list[tuple[Listener, Frontend]], server: InferenceServer) -> None:
    """Close the listeners (last started first), then unload every model (each one's finalize)."""
    for _, frontend in reversed(frontends):
        await frontend.stop()
    await server.stop()


def _audit_key_reload(caller: str, path: str, result: str, count: int) -> None:
    audit.record(caller, "reload restricted-API keys", path, result, keys=count)


async def serve(
    options: Options, log_settings: LogSettings | None = None, read_key_file: KeyFileReader | None = None
) -> bool:
    """Run the server with its frontends until SIGINT/SIGTERM, then drain and stop within --exit-timeout-secs
    (and STOP_GRACE_S for the models' finalize); a second signal exits at once. With `read_key_file`, the
    restricted-API key files are re-read on SIGHUP and when they change, for every listener at once.

    Returns False when a shutdown step was abandoned (timeout or second signal): the caller must exit the
    process without waiting for the event loop's tasks.

    Raises:
        SeawallError: start-up failed.
        BindError: a listener could not bind (it names the listener).
    """
    stop_requested, forced = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        (forced if stop_requested.is_set() else stop_requested).set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    deadline = 0.0  # when the unload must be over; 0: no shutdown asked (start-up failed)
    clean = True
    options = _fit_connection_caps(options, _raise_fd_limit())
    server = _build_server(options, log_settings)
    keys = KeyRing(options, read_key_file or _no_key_files, _audit_key_reload)
    rotating = read_key_file is not None and keys.has_files
    if rotating:
        loop.add_signal_handler(signal.SIGHUP, keys.request_reload)
    frontends: list[tuple[Listener, Frontend]] = []
    try:
        await server.start()
        if rotating:
            await keys.start()
        frontends = _frontends(server, options, keys)
        bound: dict[str, str] = {}
        for listener, frontend in frontends:
            host, port = await _start(listener, frontend, options)
            bound[listener.key] = _format_address(host, port)
            logger.info("Started %s at %s", listener.display, bound[listener.key])
        # one parseable line with every bound address, for tests and orchestration
        logger.info("Seawall ready: %s", " ".join(f"{k}={v}" for k, v in bound.items()))
        await stop_requested.wait()
        deadline = time.monotonic() + options.exit_timeout_secs + STOP_GRACE_S
        draining = _drain(server, options.exit_timeout_secs)  # which ends at its own deadline
        clean = await _bounded(draining, options.exit_timeout_secs + 1, forced, "the drain")
    finally:
        await keys.stop()
        if deadline:
            remaining = deadline - time.monotonic()
            stopped = await _bounded(_stop(frontends, server), remaining, forced, "stopping the listeners and models")
            clean = clean and stopped
        else:
            await _stop(frontends, server)
        for signum in (signal.SIGINT, signal.SIGTERM, *((signal.SIGHUP,) if rotating else ())):
            loop.remove_signal_handler(signum)
    return clean
