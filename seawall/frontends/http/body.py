"""Request bodies of the HTTP listeners: the reader that collects one body within `Limits`, and the budget that
bounds the bytes of all bodies a server holds at once.

Imports only `options`, `held` and the standard library; `server` builds the budget, the frontends decode large JSON
documents under its `json_gate`.
"""

from __future__ import annotations

import asyncio
import zlib

from seawall.frontends.held import HeldBytes
from seawall.options import Limits

#: Below this many decompressed bytes the ratio limit is not applied (tiny bodies compress absurdly well).
_RATIO_FLOOR = 1 << 20
#: Seconds a client refused for lack of body memory is asked to wait before retrying.
RETRY_AFTER_SECS = 1


class Refusal(Exception):
    """A request refused while it is being read: status, message for the `{"error": ...}` body, extra headers."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.headers = headers or []


class BodyBudget:
    """Bytes of request bodies held at once by the HTTP listeners of one server: being received, queued or being
    answered. One per server, shared by its listeners; touched on the event loop only.

    `json_gate`: one JSON document larger than `offload.HEAVY_BODY_BYTES` is parsed and decoded at a time, all
    listeners together (`offload.run_alone`). Parsing holds 15-36 times the document's bytes until its values are
    tensors (orjson; Triton's parser ~5 times): 256 MiB of bodies decoded at once would need up to 9 GiB. Parsing
    holds the GIL, so documents decoded one after the other finish no later than together.
    """

    def __init__(self, limit: int) -> None:
        self._bytes = HeldBytes(limit)
        self.json_gate = asyncio.Lock()

    @property
    def held(self) -> int:
        return self._bytes.held

    def reserve(self, count: int) -> None:
        """Take `count` bytes.

        Raises:
            Refusal: 503 with Retry-After, the bodies in flight would exceed the limit.
        """
        if not self._bytes.take(count):
            raise Refusal(503, self._bytes.refusal(), [("Retry-After", str(RETRY_AFTER_SECS))])

    def release(self, count: int) -> None:
        self._bytes.give_back(count)


class BodyReader:
    """Collects one request body within the limits, decompressing gzip/deflate incrementally; every byte kept is
    charged to the budget first (`charged` is what the request holds until it is answered)."""

    def __init__(self, limits: Limits, encoding: str, budget: BodyBudget, declared: int) -> None:
        self._limits = limits
        self._budget = budget
        self._parts: list[bytes] = []
        self._size = 0  # decoded bytes kept
        self._wire = 0  # bytes received
        self._chunks = 0
        self._inflater = None
        if encoding in ("gzip", "x-gzip"):
            self._inflater = zlib.decompressobj(wbits=31)
        elif encoding == "deflate":
            self._inflater = zlib.decompressobj(wbits=15)
        self.charged = 0
        if declared and self._inflater is None:
            budget.reserve(declared)  # a plain body of known length: refused before its first byte
            self.charged = declared

    def chunk(self) -> None:
        self._chunks += 1
        if self._chunks > self._limits.max_chunks:
            raise Refusal(413, f"request body has more than {self._limits.max_chunks} chunks")

    def feed(self, data: bytes) -> None:
        self._wire += len(data)
        if self._inflater is None:
            self._keep(data)
            return
        budget = self._limits.max_request_bytes - self._size
        try:
            out = self._inflater.decompress(data, budget + 1)
        except zlib.error:
            raise Refusal(400, "failed to decompress the request body") from None
        self._keep(out)
        ratio_cap = self._limits.max_decompression_ratio * self._wire
        if self._size > _RATIO_FLOOR and self._size > ratio_cap:
            raise Refusal(413, "decompressed request body exceeds the allowed compression ratio")

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limits.max_request_bytes:
            raise Refusal(413, f"request body exceeds the limit of {self._limits.max_request_bytes} bytes")
        if self._size > self.charged:
            self._budget.reserve(self._size - self.charged)
            self.charged = self._size
        if data:
            self._parts.append(data)

    def body(self) -> bytes:
        if self._inflater is not None and not self._inflater.eof and self._wire:
            raise Refusal(400, "failed to decompress the request body: truncated data")
        parts, self._parts = self._parts, []
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)
