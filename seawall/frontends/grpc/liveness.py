"""Whether a lean HTTP/2 connection is alive and behaving, as grpc core's channel arguments define it (Triton's
--grpc-keepalive-* and connection-age flags): our keepalive PINGs and their timeout, the peer's PINGs counted as
strikes, the budget of control frames per second (SETTINGS, PING, RST_STREAM, PRIORITY floods), the maximum age.

Bookkeeping on `time.monotonic()` (and the PING acknowledgement); `http2.Http2Connection` sends and closes.
Imports only the standard library and `frames`.
"""

from __future__ import annotations

import enum
import time
from typing import TYPE_CHECKING

from seawall.frontends.grpc.frames import (
    ACK,
    ENHANCE_YOUR_CALM,
    FRAME_SIZE_ERROR,
    PING,
    PROTOCOL_ERROR,
    ConnectionError_,
    Payload,
    frame,
)

if TYPE_CHECKING:
    from seawall.frontends.grpc.limits import Http2Limits


class Due(enum.Enum):
    """What a connection must do now (`Liveness.due`)."""

    GO_AWAY = "max_age"  # the connection is old: GOAWAY NO_ERROR, calls drain
    CLOSE = "close"  # its drain after max_age is over, or our PING went unanswered
    PING = "ping"  # time for a keepalive PING


class Liveness:
    """The keepalive and abuse counters of one connection."""

    def __init__(self, limits: Http2Limits) -> None:
        self.limits = limits
        now = time.monotonic()
        self._opened = self._pinged = self._control_epoch = now
        self._control = 0
        self._ping_out: float | None = None  # when our unanswered keepalive PING was sent
        self._pings_without_data = 0
        self._peer_ping: float | None = None
        self._data_since_ping = False
        self._strikes = 0
        self._age_deadline: float | None = None

    def due(self, now: float, going_away: bool, calls: bool) -> Due | None:
        """What is due at `now` (called about every 100 ms); `calls`: the connection has streams."""
        limits = self.limits
        if limits.max_age and not going_away and now - self._opened > limits.max_age:
            self._age_deadline = now + limits.max_age_grace if limits.max_age_grace else None
            return Due.GO_AWAY
        if self._age_deadline is not None and now > self._age_deadline:
            return Due.CLOSE
        if not limits.keepalive_time:
            return None
        if self._ping_out is not None:
            return Due.CLOSE if now - self._ping_out > limits.keepalive_timeout else None  # the peer stopped answering
        if (
            now - self._pinged >= limits.keepalive_time
            and (calls or limits.keepalive_without_calls)
            and not (limits.max_pings_without_data and self._pings_without_data >= limits.max_pings_without_data)
        ):
            self._ping_out = self._pinged = now
            self._pings_without_data += 1
            return Due.PING
        return None

    def ping(self, flags: int, stream_id: int, payload: Payload) -> bytes | None:
        """A PING frame from the peer: the acknowledgement to send, or None (it acknowledged ours).

        Raises:
            ConnectionError_: a malformed PING, or one control frame or ping strike too many.
        """
        self.control_frame()
        if len(payload) != 8 or stream_id:
            raise ConnectionError_(FRAME_SIZE_ERROR if len(payload) != 8 else PROTOCOL_ERROR, "bad PING")
        if flags & ACK:
            self.pinged_back()
            return None
        self.peer_ping()
        return frame(PING, ACK, 0, payload)

    def pinged_back(self) -> None:
        """The peer acknowledged our PING."""
        self._ping_out = None
        self._pinged = time.monotonic()

    def sent_data(self) -> None:
        """As grpc core: sending data resets our keepalive count and the peer's ping strikes."""
        self._pings_without_data = self._strikes = 0
        self._data_since_ping = True

    def received_data(self) -> None:
        """The peer sent HEADERS or DATA: its next PING is no strike."""
        self._data_since_ping = True
        self._strikes = 0

    def peer_ping(self) -> None:
        """The peer sent a PING: closer than min_ping_interval to its last one with no data in between, a strike.

        Raises:
            ConnectionError_: too many strikes (GOAWAY ENHANCE_YOUR_CALM "too_many_pings", as grpc core).
        """
        now = time.monotonic()
        limits = self.limits
        if (
            self._peer_ping is not None
            and not self._data_since_ping
            and now - self._peer_ping < limits.min_ping_interval
        ):
            self._strikes += 1
            if limits.max_ping_strikes and self._strikes > limits.max_ping_strikes:
                raise ConnectionError_(ENHANCE_YOUR_CALM, "too_many_pings")
        self._peer_ping, self._data_since_ping = now, False

    def control_frame(self) -> None:
        """Count one control frame against the per-second budget.

        Raises:
            ConnectionError_: over budget (GOAWAY ENHANCE_YOUR_CALM).
        """
        now = time.monotonic()
        if now - self._control_epoch >= 1.0:
            self._control_epoch, self._control = now, 0
        self._control += 1
        if self._control > self.limits.control_frames_per_second:
            raise ConnectionError_(ENHANCE_YOUR_CALM, "too many control frames")
