"""The server's side of the stub template (`--python-stub-start=fork`, the default; the template's own loop is
`template_process.py`): starts the template process at the first stub, asks it to fork each stub with that stub's
descriptors, and tells each stub's owner when its process exits. A template that dies takes its stubs with it
(they die with their parent); it is started again at the next stub. The python backend owns one template.

Imports `process_io` (log lines) and `template_process` (its constants). Event loop thread only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence

from seawall.backends.python.process_io import escape_log
from seawall.backends.python.template_process import FD_NAMES, TITLE_BYTES

logger = logging.getLogger(__name__)

#: The entry script of stubs and of the template (see process.py's flags).
BOOTSTRAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap.py")
_RECEIVE_BYTES = 4096


class TemplateError(Exception):
    """The template could not fork a stub (it is gone, or refused the request); `args[0]` says why."""


class ForkedStub:
    """A stub the template forked: the server's handle, as asyncio's subprocess transport is for a spawned
    one (`get_returncode`, `kill`, `close`). Killing goes through a pidfd, which cannot hit a reused pid."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self._pidfd = pidfd
        self._returncode: int | None = None
        self._on_exit: Callable[[], None] | None = None
        self.pipes: list[asyncio.BaseTransport] = []  # its stdout and stderr readers, closed with it

    def get_returncode(self) -> int | None:
        return self._returncode

    def watch(self, on_exit: Callable[[], None]) -> None:
        """Call `on_exit` once the process has exited (soon, if it already has)."""
        self._on_exit = on_exit
        if self._returncode is not None:
            asyncio.get_running_loop().call_soon(on_exit)

    def kill(self) -> None:
        if self._returncode is None and self._pidfd >= 0:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass  # exited; its report is on its way

    def exited(self, code: int) -> None:
        if self._returncode is not None:
            return
        self._returncode = code
        if self._on_exit is not None:
            self._on_exit()

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.close()
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


#: Set in every stub's environment unless the operator sets it (through the allowlist or --model-env): numpy's
#: OpenBLAS on one thread. Its pool has a thread per core in every stub, and from products of 16 rows on it splits
#: each one across them, and they spin: [16,256] @ [256,256] costs 146 us of CPU instead of 57 on 2 cores, no
#: faster; the bench's matmul at c=32 served 12.6-13.5k req/s at 134-144 us CPU each, 18.0-18.6k at 66-69 us with
#: one thread. Parallelism across requests comes from instances (instance_group count), as Triton advises.
STUB_DEFAULTS = (("OPENBLAS_NUM_THREADS", "1"),)


def with_defaults(environment: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The environment a stub runs with: `environment` over `STUB_DEFAULTS`."""
    return {**dict(STUB_DEFAULTS), **dict(environment)}


class StubTemplate:
    """The template process, started lazily, restarted after it died."""

    def __init__(self, environment: Sequence[tuple[str, str]], timeout_s: float) -> None:
        self._environment = with_defaults(environment)  # the stubs' whole environment: they inherit the template's
        self._timeout_s = timeout_s
        self._lock = asyncio.Lock()
        self._process: asyncio.SubprocessTransport | None = None
        self._socket: socket.socket | None = None
        self._ready: asyncio.Future[None] | None = None
        self._exited: asyncio.Future[None] | None = None  # set when the running template's process has exited
        self._pending: dict[int, asyncio.Future[ForkedStub]] = {}
        self._children: dict[int, ForkedStub] = {}  # running stubs, by pid
        self._next_id = 0
        self.pid = 0  # the template's pid while it runs (tests and logs)

    async def fork(
        self, fds: Sequence[int], sizes: Sequence[int], names: Sequence[str], user: Sequence[int]
    ) -> ForkedStub:
        """A new stub with `fds` (see template_process.FD_NAMES; the caller still closes its copies).

        Raises:
            TemplateError: the template could not be started, or did not fork.
        """
        assert len(fds) == len(FD_NAMES)
        async with self._lock:
            if self._socket is None:
                await self._start()
            assert self._socket is not None
            loop = asyncio.get_running_loop()
            self._next_id += 1
            request_id = self._next_id
            answer = self._pending[request_id] = loop.create_future()
            request = {"id": request_id, "names": list(names), "user": list(user), "sizes": list(sizes)}
            try:
                socket.send_fds(self._socket, [json.dumps(request).encode()], list(fds))
            except OSError as exc:
                self._pending.pop(request_id, None)
                self._gone(f"cannot send it a fork request: {exc}")
                raise TemplateError(f"the stub template is gone ({exc})") from exc
        try:
            return await asyncio.wait_for(asyncio.shield(answer), self._timeout_s)
        except TimeoutError:
            raise TemplateError("the stub template did not fork in time") from None
        finally:
            self._pending.pop(request_id, None)

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._process is not None:  # a template that died: its exit was seen (it closed its channel first)
            self._process.close()
        exited = self._exited = loop.create_future()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [sys.executable, "-P", "-B", "-u", BOOTSTRAP, "template", str(theirs.fileno()), " " * TITLE_BYTES]
        try:
            self._process, _ = await loop.subprocess_exec(
                lambda: _TemplateOutput(self, exited),
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(theirs.fileno(),),
                close_fds=True,
                env=self._environment,
            )
        except OSError as exc:
            mine.close()
            raise TemplateError(f"cannot start the stub template: {exc}") from exc
        finally:
            theirs.close()
        mine.setblocking(False)
        self._socket = mine
        self._ready = loop.create_future()
        loop.add_reader(mine.fileno(), self._readable)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self._timeout_s)
        except TimeoutError:
            self._gone("it did not start in time")
            raise TemplateError("the stub template did not start in time") from None
        except TemplateError:
            raise
        logger.info("python backend: stub template started (pid %d)", self.pid)

    def _readable(self) -> None:
        while self._socket is not None:
            try:
                data, fds, _, _ = socket.recv_fds(self._socket, _RECEIVE_BYTES, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._gone(f"its channel failed: {exc}")
                return
            if not data:
                self._gone("its channel closed")
                return
            try:
                self._dispatch(json.loads(data), fds)
            except (ValueError, TypeError, KeyError) as exc:
                for fd in fds:
                    os.close(fd)
                self._gone(f"bad message: {exc}")
                return

    def _dispatch(self, message: dict[str, object], fds: list[int]) -> None:
        if "exit" in message:
            child = self._children.pop(int(message["exit"]), None)  # type: ignore[call-overload]
            if child is not None:
                child.exited(int(message["code"]))  # type: ignore[call-overload]
        elif "ready" in message:
            self.pid = int(message["ready"])  # type: ignore[call-overload]
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        else:
            answer = self._pending.pop(int(message["id"]), None)  # type: ignore[call-overload]
            if "pid" in message and len(fds) == 1:
                child = ForkedStub(int(message["pid"]), fds[0])  # type: ignore[call-overload]
                self._children[child.pid] = child
                if answer is None or answer.done():
                    child.kill()  # nobody waits for it any more (timed out)
                else:
                    answer.set_result(child)
                return
            for fd in fds:
                os.close(fd)
            if answer is not None and not answer.done():
                answer.set_exception(TemplateError(str(message.get("error", "no pid"))))

    def _gone(self, reason: str) -> None:
        """The template stopped (or broke): fail what waits for it; its stubs die with it (parent-death signal)."""
        if self._socket is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._socket.fileno())
        self._socket.close()
        self._socket = None
        if self._process is not None and self._process.get_returncode() is None:
            self._process.kill()
        error = TemplateError(f"the stub template stopped ({reason})")
        for waiter in (self._ready, *self._pending.values()):
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
        self._pending.clear()
        if self._children:
            logger.error("python backend: the stub template stopped (%s); its stubs stop with it", reason)
        for child in self._children.values():
            child.kill()
            child.exited(-signal.SIGKILL)
        self._children.clear()

    def on_output(self, line: bytes) -> None:
        logger.warning("python backend: stub template: %s", escape_log(line.decode("utf-8", "replace")))

    def on_exit(self, process: asyncio.SubprocessTransport, code: int | None) -> None:
        """A template process exited. Only the current one's exit ends the current template: an earlier one's,
        reported after its closed channel already got a new template started, would stop that one mid-start
        (and fail the stub restart waiting for it)."""
        if process is self._process:
            self._gone(f"exit code {code}")

    async def stop(self) -> None:
        """End the template (the server stops; its stubs are gone already) and wait for it to exit. Idempotent."""
        process, self._process = self._process, None
        exited = self._exited
        self._gone("stopped")  # kills it: it holds nothing to finish
        if process is not None and exited is not None:
            try:
                await asyncio.wait_for(asyncio.shield(exited), self._timeout_s)
            except TimeoutError:
                logger.warning("python backend: the stub template did not exit in time")
            process.close()


class _TemplateOutput(asyncio.SubprocessProtocol):
    """One template process's output and exit (its own `exited` future: a later template has another)."""

    def __init__(self, owner: StubTemplate, exited: asyncio.Future[None]) -> None:
        self._owner = owner
        self._exited = exited

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        for line in data.splitlines():
            self._owner.on_output(line)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport: asyncio.SubprocessTransport = transport  # type: ignore[assignment]

    def process_exited(self) -> None:
        if not self._exited.done():
            self._exited.set_result(None)
        self._owner.on_exit(self._transport, self._transport.get_returncode())
