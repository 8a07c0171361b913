"""The host's handle on one stub process: spawning it (argv list, never a shell), its control channel, its
output pipes, and noticing its death; its shared regions are `stub_regions.StubRegions` (`process.regions`).

Imports `ipc`, `messages`, `process_io` (its protocols, log lines), `stub_regions` and `metric_relay` (custom
metrics). Every method runs on the event loop thread; nothing here blocks the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import deque
from collections.abc import Callable

from seawall.backends.python import ipc, messages, stub_launch
from seawall.backends.python.messages import (
    CALL_MESSAGES,
    METRIC_MESSAGES,
    BatchResult,
    CallMessage,
    Finalize,
    Grow,
    HostMessage,
    Log,
    MetricMessage,
    ReadyAnswer,
    Response,
    ResponseGrow,
    StubMessage,
)
from seawall.backends.python.metric_relay import MetricRelay
from seawall.backends.python.process_io import ControlProtocol, log_model_line
from seawall.backends.python.stub_launch import StubDied as StubDied  # for the instances
from seawall.backends.python.stub_launch import StubSettings as StubSettings
from seawall.backends.python.stub_regions import StubRegions
from seawall.backends.python.template import TemplateError
from seawall.core.custom_metrics import MetricsOwner

logger = logging.getLogger(__name__)

#: Seconds the channel of an exited stub may stay open before its death is handled anyway.
_DRAIN_S = 1.0


class StubProcess:
    """One stub process and its shared regions (`regions`, made by `start`).

    Messages are answered in the order they were sent (the stub runs them one at a time), so several may be
    in flight: each slot has its own regions, and its owner sends a slot's next message only once the
    previous reply of that slot has been read.
    """

    def __init__(
        self,
        label: str,
        settings: StubSettings,
        on_death: Callable[[str], None] | None,
        metrics: MetricsOwner | None = None,
        names: tuple[str, ...] = (),
    ) -> None:
        self.label = label
        self._names = names  # what the stub serves, for its command line (as `ps` shows it): no paths, no secrets
        self._metrics = MetricRelay(label, metrics, self.send)  # None: refused, e.g. during auto-complete
        self._settings = settings
        self._on_death = on_death  # called once if the stub dies while not being stopped
        self._process: stub_launch.ProcessHandle | None = None
        self._control: asyncio.Transport | None = None
        self._regions: StubRegions | None = None  # made by start
        # replies awaited, in send order: each reply's future and, for `submit_awaited`, the one its caller awaits
        self._waiters: deque[tuple[asyncio.Future[StubMessage], asyncio.Future[StubMessage] | None]] = deque()
        self._contexts: deque[object] = deque()  # beside each waiter: what its message runs (BLS calls read it)
        self.on_call: Callable[[CallMessage], None] | None = None  # BLS and model control; None: refused
        self._exited: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # kept: get_running_loop() costs a getpid() call
        self._alive = False
        self._stopping = False
        self._death = ""
        self._exit_reason = ""  # how the process ended, once it has
        self.on_response: Callable[[Response], None] = self._unexpected_response  # set by a decoupled instance
        self.on_ready_answer: Callable[[ReadyAnswer], None] = lambda answer: None  # set by the instance

    @property
    def is_alive(self) -> bool:
        return self._alive

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the process was started on (its messages arrive there)."""
        assert self._loop is not None
        return self._loop

    @property
    def regions(self) -> StubRegions:
        """The stub's shared regions (once started)."""
        assert self._regions is not None, "the stub has not started"
        return self._regions

    async def start(self) -> None:
        """Start the stub with its sockets and regions (spawned or forked: stub_launch.py).

        The stub gets only `settings.environment` and its own descriptors, and becomes `settings.user` before
        anything else runs (bootstrap.py; uvloop's spawn can do neither).

        Raises:
            StubDied: it died at once, or the stub template could not fork it.
        """
        self._loop = loop = asyncio.get_running_loop()
        self._exited = loop.create_future()
        control, control_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fd_socket, fd_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # one fd per message
        fd_socket.setblocking(False)
        size = self._settings.shm_default_bytes
        self._regions = StubRegions(fd_socket, self._settings.user, size, self._settings.shm_growth_bytes, self._fail)
        in_fd, out_fd = self._regions.first_slot()
        ends = (control_child.fileno(), fd_child.fileno(), in_fd, out_fd)
        try:
            self._process = await stub_launch.launch(self, self._settings, ends, size, self._names)
            self._alive = True
            self._control, _ = await loop.connect_accepted_socket(lambda: ControlProtocol(self), control)
        except TemplateError as exc:
            control.close()
            raise StubDied(str(exc)) from exc
        except BaseException:
            control.close()
            raise
        finally:
            for child_end in (control_child, fd_child):
                child_end.close()
            os.close(in_fd)
            os.close(out_fd)
        if not self._alive:  # died before the channel was connected
            raise StubDied(self._death)

    def send(self, message: HostMessage) -> None:
        if self._control is not None and self._alive:
            self._control.write(messages.encode(message))

    def submit(self, message: HostMessage, context: object = None) -> asyncio.Future[StubMessage]:
        """Send one message; the future gets the stub's reply (Log, Grow, Call, Control, Response... go aside).
        `context` (the requests an Execute runs) is what `running` reports until the reply arrives.

        Raises:
            StubDied: the stub is gone.
        """
        return self._submit(message, context, False)[0]

    def submit_awaited(
        self, message: HostMessage, context: object = None
    ) -> tuple[asyncio.Future[StubMessage], asyncio.Future[StubMessage]]:
        """`submit`, and a second future for the caller to await that gets the same reply: cancelling it leaves the
        first pending until the stub answers (`asyncio.shield(submit(...))` without its callbacks: this runs per
        batch).

        Raises:
            StubDied: the stub is gone.
        """
        reply, awaited = self._submit(message, context, True)
        assert awaited is not None
        return reply, awaited

    def _submit(
        self, message: HostMessage, context: object, awaited: bool
    ) -> tuple[asyncio.Future[StubMessage], asyncio.Future[StubMessage] | None]:
        if not self._alive:
            raise StubDied(self._death)
        assert self._loop is not None
        waiter: asyncio.Future[StubMessage] = self._loop.create_future()
        waiter.add_done_callback(_retrieve)
        pair = (waiter, self._loop.create_future() if awaited else None)
        self._waiters.append(pair)
        self._contexts.append(context)
        self.send(message)
        return pair

    async def call(self, message: HostMessage) -> StubMessage:
        """Send one message and wait for its reply; a cancelled caller leaves the reply pending.

        Raises:
            StubDied: the stub died before replying.
        """
        return await asyncio.shield(self.submit(message))

    def on_message(self, message: StubMessage | MetricMessage) -> None:
        """Aside messages are handled here; any other answers the oldest message still unanswered."""
        if type(message) is BatchResult and self._waiters:  # the reply to an Execute: the common case, asked first
            self._answer(message)
        elif type(message) is Log:
            log_model_line(self.label, message.level, message.text, message.file, message.line)
        elif type(message) is Grow:
            self._answer_growth(message)
        elif type(message) is Response:
            self.on_response(message)
        elif type(message) is ResponseGrow:
            self._answer_growth(message)
        elif type(message) is ReadyAnswer:
            self.on_ready_answer(message)
        elif type(message) in METRIC_MESSAGES:
            self._metrics.on_metric(message)  # type: ignore[arg-type]  # one of the metric kinds
        elif type(message) in CALL_MESSAGES:
            if self.on_call is None:
                self.abort("unexpected call")
            else:
                self.on_call(message)  # type: ignore[arg-type]  # one of the call kinds
        elif self._waiters:
            self._answer(message)  # type: ignore[arg-type]  # metric messages were handled above
        else:
            self.abort(f"unexpected message {type(message).__name__}")

    def _answer(self, message: StubMessage) -> None:
        """`message` answers the oldest message still unanswered."""
        self._contexts.popleft()
        for waiter in self._waiters.popleft():
            if waiter is not None and not waiter.done():
                waiter.set_result(message)

    def running(self) -> list[object]:
        """The contexts of the messages the stub has not answered yet (oldest first; None for non-Executes)."""
        return list(self._contexts)

    def _answer_growth(self, message: Grow | ResponseGrow) -> None:
        """Answer a stub's request for a bigger output or response region; a bad request stops it."""
        try:
            if type(message) is Grow:
                self.send(self.regions.grow_outputs(message.slot, message.size))
            elif self.on_response == self._unexpected_response:
                self.abort("bad response region request")
            else:
                self.send(self.regions.grow_responses(message.size))
        except ipc.ProtocolError as exc:
            self.abort(str(exc))
        except StubDied:
            pass  # the region could not be passed: the stub is stopped

    def _fail(self, reason: str) -> StubDied:
        """Stop the stub now; the error its caller raises."""
        self.abort(reason)
        return StubDied(self._death)

    def _unexpected_response(self, message: Response) -> None:
        self.abort("a response from a model that is not decoupled")

    def on_exit(self) -> None:
        """The process has exited: its death is handled once its channel's last messages are read (a forked stub's
        exit can arrive before them), or after `_DRAIN_S` if the channel stays open (a child of the stub has it)."""
        assert self._process is not None and self._loop is not None
        code = self._process.get_returncode()
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(None)
        self._exit_reason = f"exit code {code}" if code is None or code >= 0 else f"killed by signal {-code}"
        if self._control is None or self._control.is_closing():
            self.on_death(self._exit_reason)
        else:
            self._loop.call_later(_DRAIN_S, self.on_death, self._exit_reason)

    def channel_closed(self) -> None:
        self.on_death(self._exit_reason or "control channel closed")

    def abort(self, reason: str) -> None:
        """Stop the stub now (it broke the protocol, or its channel closed)."""
        if self._alive:
            logger.error("model instance '%s': stopping its stub process: %s", self.label, reason)
        self.on_death(reason)

    def on_death(self, reason: str) -> None:
        """Idempotent: fail the pending reply, close the channel, kill the process, tell the owner once."""
        if not self._alive:
            return
        self._alive = False
        self._death = reason
        waiters, self._waiters = self._waiters, deque()
        self._contexts.clear()
        if self._regions is not None:
            self._regions.drop_received()
        for pair in waiters:
            for waiter in pair:
                if waiter is not None and not waiter.done():
                    waiter.set_exception(StubDied(reason))
        if self._control is not None:
            self._control.abort()
        if self._process is not None and self._process.get_returncode() is None:
            self._process.kill()
        if self._stopping or (self._on_death is None and not waiters):
            return  # stopped on purpose, or a throw-away stub (auto-complete) exiting after its answer
        logger.error("model instance '%s': stub process died (%s)", self.label, reason)
        if self._on_death is not None:
            self._on_death(reason)

    async def stop(self, graceful: bool = True) -> None:
        """Finalize (if `graceful`), then end the process: close its channel, wait for it to exit, kill. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        if graceful and self._alive:
            try:
                await asyncio.wait_for(self.call(Finalize()), self._settings.timeout_s)
                logger.debug("model instance '%s': finalized", self.label)
            except (TimeoutError, StubDied) as exc:
                logger.warning("model instance '%s': finalize did not complete (%r)", self.label, exc)
        if self._control is not None:
            self._control.close()
        await self._reap()
        self._alive = False
        if self._regions is not None:
            self._regions.close()

    async def _reap(self) -> None:
        if self._process is None or self._exited is None:
            return
        # a stub ignores SIGTERM (bootstrap.py): without its channel it ends by itself, or it is killed
        for action, wait_s in ((None, self._settings.timeout_s), ("kill", None)):
            if action == "kill" and self._process.get_returncode() is None:
                self._process.kill()
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), wait_s)
                break
            except TimeoutError:
                logger.warning("model instance '%s': stub process did not exit in time", self.label)
        self._process.close()


def _retrieve(future: asyncio.Future[StubMessage]) -> None:
    """Mark a failed reply as seen even if its caller was cancelled (no 'never retrieved' noise)."""
    if not future.cancelled():
        future.exception()
