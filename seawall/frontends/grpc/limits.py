"""What one lean HTTP/2 connection may make the server hold, and its keepalive and connection-age settings: the
bounds `reader`, `window`, `liveness` and `http2` enforce (see docs/architecture.md). Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass


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
