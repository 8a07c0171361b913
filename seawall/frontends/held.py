"""The request bytes a server's listeners hold at once, one count with its limit per budget: the HTTP listeners'
bodies (`http.body.BodyBudget`, --http-max-inflight-body-bytes) and each lean gRPC listener's requests
(--grpc-max-inflight-request-bytes). Both refuse with the same words.

Imports only the standard library. Touched on the event loop only.
"""

from __future__ import annotations


class HeldBytes:
    """Bytes held at once against `limit`: charged as they are taken on, given back when let go."""

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
        """Why a request whose bytes did not fit was refused."""
        return f"the server holds too many request bytes at once (limit {self.limit} bytes); retry later"
