"""Triton's JSON trace file (triton mode, level TIMESTAMPS): the records of each traced request, buffered and
written to the file named at start-up.

Imports `core.trace`. The path never comes from a request: it is the start-up `trace_file`. Files are created
0600 without following a symlink, and written only at the flush points (rare), on the event loop thread.
"""

from __future__ import annotations

import json
import logging
import os
import time

from seawall.core.trace import TraceSettings

logger = logging.getLogger(__name__)

#: Traces held in memory at most when log_frequency is 0 (Triton holds them all until shutdown); beyond it
#: they go to the next indexed file.
MAX_BUFFERED_TRACES = 10_000


class Trace:
    """One traced request: its id, model, version, request id, and the (activity, ns) timestamps taken so far."""

    __slots__ = ("id", "model", "version", "request_id", "stamps", "log_frequency")

    def __init__(self, trace_id: int, model: str, version: int, request_id: str, log_frequency: int) -> None:
        self.id = trace_id
        self.model = model
        self.version = version
        self.request_id = request_id
        self.log_frequency = log_frequency
        self.stamps: list[tuple[str, int]] = []

    def stamp(self, activity: str) -> None:
        """Record `activity` (REQUEST_START, QUEUE_START, ...) now, on the monotonic clock in ns (as Triton)."""
        self.stamps.append((activity, time.monotonic_ns()))

    def records(self) -> list[str]:
        """Triton's objects for this trace: the model record, then one object per timestamp."""
        head: dict[str, object] = {"id": self.id, "model_name": self.model, "model_version": self.version}
        if self.request_id:
            head["request_id"] = self.request_id
        lines = [json.dumps(head, separators=(",", ":"))]
        for activity, ns in self.stamps:
            lines.append(
                json.dumps({"id": self.id, "timestamps": [{"name": activity, "ns": ns}]}, separators=(",", ":"))
            )
        return lines


class TraceFile:
    """Samples requests through `settings` and writes their traces to the start-up file. Event loop thread only.

    Flushes as Triton does: to `<file>.<n>` when the trace count is used up or every log_frequency traces,
    and whatever is left at `close()` (to `<file>` itself when log_frequency is 0).
    """

    def __init__(self, settings: TraceSettings) -> None:
        self._settings = settings
        self._path = settings.get()["trace_file"][0]  # fixed at start-up
        self._next_id = 1
        self._index = 0  # the next <file>.<n>
        self._buffer: list[str] = []  # JSON objects of finished traces not yet written
        self._buffered = 0  # traces in the buffer

    def begin(self, model: str, version: int, request_id: str) -> Trace | None:
        """A new trace with REQUEST_START taken, when this request is sampled; else None."""
        settings = self._settings.sample(model) if self._settings.is_on() and self._path else None
        if settings is None:
            return None
        trace = Trace(self._next_id, model, version, request_id, int(settings["log_frequency"][0]))
        self._next_id += 1
        trace.stamp("REQUEST_START")
        return trace

    def end(self, trace: Trace) -> None:
        """Take REQUEST_END and buffer the trace; write a file when a flush point is reached."""
        trace.stamp("REQUEST_END")
        self._buffer.extend(trace.records())
        self._buffered += 1
        limit = trace.log_frequency or MAX_BUFFERED_TRACES
        if self._buffered >= limit or self._settings.exhausted(trace.model):
            self._write(indexed=True)

    def close(self) -> None:
        """Write the traces still buffered; idempotent."""
        if self._buffered:
            frequency = int(self._settings.get()["log_frequency"][0])
            self._write(indexed=frequency != 0 or self._index > 0)

    def _write(self, indexed: bool) -> None:
        path = f"{self._path}.{self._index}" if indexed else self._path
        if indexed:
            self._index += 1
        text = "[" + ",".join(self._buffer) + "]"
        self._buffer, self._buffered = [], 0
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
        except OSError as error:
            logger.error("failed creating trace file: %s", error.strerror or "unknown reason")
