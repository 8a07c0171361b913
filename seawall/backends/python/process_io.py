"""What a stub process writes that the host reads as it comes: its control socket's frames (`ControlProtocol`), its
stdout/stderr lines (`PipeProtocol`), and the log lines of model code, escaped (`escape_log`, `log_model_line`).

Imports `ipc` and `messages`; `StubProcess` (process.py) owns the protocols.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from seawall.backends.python import ipc, messages

if TYPE_CHECKING:
    from seawall.backends.python.process import StubProcess

logger = logging.getLogger(__name__)

_MAX_LOG_LINE = 8192
_LOG_LEVELS = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR, 3: logging.DEBUG}


def escape_log(text: str) -> str:
    """Make text from model code safe for one log line: no control characters, bounded length."""
    if len(text) > _MAX_LOG_LINE:
        text = text[:_MAX_LOG_LINE] + "...(truncated)"
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")


def log_model_line(label: str, level: int, text: str, file: str, line: int) -> None:
    """One pb_utils.Logger line, as Triton prints it: `<file>:<line>] <text>` with the model file's name and
    line (the instance's name instead when the stub logs for itself); every part is escaped."""
    python_level = _LOG_LEVELS.get(level, logging.INFO)
    if not file:
        logger.log(python_level, "model instance '%s': %s", label, escape_log(text))
        return
    if logger.isEnabledFor(python_level):
        name = escape_log(os.path.basename(file))
        logger.handle(logger.makeRecord(logger.name, python_level, name, line, "%s", (escape_log(text),), None))


class ControlProtocol(asyncio.Protocol):
    """Decodes the stub's frames on the control socket and hands each message to its StubProcess."""

    def __init__(self, owner: StubProcess) -> None:
        self._owner = owner
        self._decoder = messages.FrameDecoder(messages.decode_stub_message)

    def data_received(self, data: bytes) -> None:
        try:
            received = self._decoder.feed(data)
        except ipc.ProtocolError as exc:
            self._owner.abort(f"protocol violation: {exc}")
            return
        for message in received:
            self._owner.on_message(message)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner.channel_closed()


def log_output(label: str, fd: int, line: bytes) -> None:
    """One line a stub wrote to its stdout (`fd` 1) or stderr, escaped, in the server's log."""
    level = logging.INFO if fd == 1 else logging.WARNING
    text = escape_log(line.decode("utf-8", "replace").rstrip("\r"))
    logger.log(level, "model instance '%s' %s: %s", label, "stdout" if fd == 1 else "stderr", text)


class _Lines:
    """Splits one output stream of a stub into lines for its owner's log (bounded: a long line is cut)."""

    def __init__(self, owner: StubProcess) -> None:
        self._owner = owner
        self._partial: dict[int, bytes] = {}

    def feed(self, fd: int, data: bytes) -> None:
        buffered = self._partial.get(fd, b"") + data
        *lines, rest = buffered.split(b"\n")
        if len(rest) > _MAX_LOG_LINE:
            lines.append(rest)
            rest = b""
        self._partial[fd] = rest
        for line in lines:
            log_output(self._owner.label, fd, line)

    def end(self, fd: int) -> None:
        rest = self._partial.pop(fd, b"")
        if rest:
            log_output(self._owner.label, fd, rest)


class PipeProtocol(asyncio.SubprocessProtocol):
    """A spawned stub's stdout/stderr, logged line by line (escaped), and its exit."""

    def __init__(self, owner: StubProcess) -> None:
        self._owner = owner
        self._lines = _Lines(owner)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._lines.feed(fd, data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._lines.end(fd)

    def process_exited(self) -> None:
        self._owner.on_exit()


class ReadPipeProtocol(asyncio.Protocol):
    """A forked stub's stdout (`fd` 1) or stderr (2): it is not the server's child, so each is a plain pipe."""

    def __init__(self, owner: StubProcess, fd: int) -> None:
        self._fd = fd
        self._lines = _Lines(owner)

    def data_received(self, data: bytes) -> None:
        self._lines.feed(self._fd, data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lines.end(self._fd)
