"""What one lean HTTP/2 connection may make the server hold, and its keepalive and connection-age settings: the
bounds `reader`, `window`, `liveness` and `http2` enforce (see docs/architecture.md); and `HeldBytes`, the request
bytes all connections of a listener hold at once.

Imports only `errors` (the refusal's text, the same as the HTTP listeners') and the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass

from seawall.errors import held_bytes_refusal


@dataclass(frozen=True)
class Http2Limits:
    """What one connection may make the server hold."""

    max_concurrent_streams: int = 1024  # streams open or still working after a reset (RST_STREAM)
    max_message_bytes: int = 64 * 1024 * 1024  # one gRPC message
    max_header_list_bytes: int = 16 * 1024  # decoded headers of one block, and the encoded block itself
    window_bytes: int = 4 * 1024 * 1024  # receive window per stream and per connection
    max_held_bytes: int = 256 * 1024 * 1024  # request bytes held at once, all connections (`HeldBytes`)
    control_frames_per_second: int = 1000  # SETTINGS, PING, RST_STREAM, PRIORITY, empty DATA: beyond → GOAWAY
    # grpc's keepalive and connection-age channel arguments (Triton's --grpc-* flags), in seconds; 0: off
    keepalive_time: float = 7200.0
    keepalive_timeout: float = 20.0
    keepalive_without_calls: bool = False
    max_pings_without_data: int = 2  # our pings with no DATA/HEADERS sent in between (0: unlimited)
    min_ping_interval: float = 300.0  # client pings closer than this without data are strikes
    max_ping_strikes: int = 2  # strikes beyond this: GOAWAY ENHANCE_YOUR_CALM (0: unlimited)
    max_age: float = 0.0
    max_age_grace: float = 0.0


class HeldBytes:
    """Request bytes the connections of one listener hold at once: a unary call's from their arrival until its
    answer has gone, a streaming call's until its handler takes each message. The stream windows do not bound
    them (a unary call's window reopens as its message arrives, up to the message size limit, on each of the
    concurrent streams of every connection). Touched on the event loop only."""

    __slots__ = ("limit", "held")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, count: int) -> bool:
        """Charge `count` bytes; False (nothing charged) when they would exceed the limit."""
        if self.held + count > self.limit:
            return False
        self.held += count
        return True

    def give_back(self, count: int) -> None:
        self.held -= count

    def refusal(self) -> str:
        return held_bytes_refusal(self.limit)
