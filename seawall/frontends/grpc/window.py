"""The receiving side's flow control for the lean HTTP/2 stack (RFC 9113 5.2, 6.9): how much of the windows the
server gave the peer (`Http2Limits.window_bytes`, for the connection and for each stream) it has used, and when
WINDOW_UPDATE frames reopen them. A peer that sends more than a stream's window is a connection error.

`http2.Http2Connection` tells it what arrived and what a call took; the frames go to the connection's `Output`.
Imports only the standard library, `frames` and `output`.
"""

from __future__ import annotations

from seawall.frontends.grpc.frames import FLOW_CONTROL_ERROR, WINDOW_UPDATE, ConnectionError_, Stream, frame
from seawall.frontends.grpc.output import Output

#: the window every HTTP/2 connection and stream starts with (RFC 9113 6.9.2)
DEFAULT_WINDOW = 65535


class ReceiveWindow:
    """One connection's receive windows, each `window_bytes` large; reopened in batches (half a window, or a
    quarter for what a streaming call has taken), never one update per frame."""

    def __init__(self, window_bytes: int, output: Output) -> None:
        self._window = window_bytes
        self._output = output
        self._unacked = 0  # bytes of DATA received on the connection and not yet given back

    def opening(self) -> bytes:
        """The WINDOW_UPDATE that widens the connection's window from its default to `window_bytes` (the streams'
        windows are widened by SETTINGS_INITIAL_WINDOW_SIZE)."""
        return frame(WINDOW_UPDATE, 0, 0, (self._window - DEFAULT_WINDOW).to_bytes(4, "big"))

    def received(self, size: int) -> None:
        """A DATA frame of `size` bytes (padding included) came, on whatever stream: it used the connection's
        window, which is given back at once for a stream refused or reset (its data is dropped)."""
        self._unacked += size
        if self._unacked >= self._window // 2:
            self._give_back(0, self._unacked)
            self._unacked = 0

    def stream_received(self, stream: Stream, size: int, padding: int) -> None:
        """`size` bytes of a DATA frame, `padding` of them padding (never taken by the call), came on `stream`.

        Raises:
            ConnectionError_: the peer sent more than the stream's window (FLOW_CONTROL_ERROR).
        """
        stream.unacked += size
        stream.consumed += padding
        if stream.unacked > self._window:
            raise ConnectionError_(FLOW_CONTROL_ERROR, "stream window exceeded")

    def unary_arriving(self, stream: Stream) -> None:
        """Part of a unary call's request came: its window reopens at once (the message size limit bounds it)."""
        if stream.unacked >= self._window // 2:
            self._give_back(stream.id, stream.unacked)
            stream.unacked = 0

    def message_arriving(self, stream: Stream, buffered: int) -> None:
        """A streaming call holds `buffered` bytes of a message not yet whole. From half a window on, every byte
        received is given back (the message size limit bounds them), or a message larger than the window would
        never complete; the bytes not yet taken are then credited ahead: taking them (in order) gives nothing
        back again."""
        if buffered < self._window // 2 or stream.unacked < self._window // 2:
            return
        self._give_back(stream.id, stream.unacked)
        stream.ahead += stream.unacked - stream.consumed
        stream.unacked = stream.consumed = 0

    def consumed(self, stream: Stream, size: int) -> bool:
        """A streaming call took `size` bytes: reopen the peer's window by as much, in batches. True when a
        WINDOW_UPDATE was queued (to be flushed)."""
        repaid = min(stream.ahead, size)  # bytes already given back while their message arrived
        stream.ahead -= repaid
        stream.consumed += size - repaid
        if stream.consumed < self._window // 4 or stream.ended or stream.cancelled:
            return False
        self._give_back(stream.id, stream.consumed)
        stream.unacked -= stream.consumed
        stream.consumed = 0
        return True

    def _give_back(self, stream_id: int, size: int) -> None:
        """Reopen the peer's window by `size` bytes: the connection's (stream 0) or a stream's."""
        self._output.add(frame(WINDOW_UPDATE, 0, stream_id, size.to_bytes(4, "big")))
