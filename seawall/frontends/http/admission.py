"""Which connections an HTTP listener takes: a cap on open connections and a smaller share per peer, so one
client cannot fill the listener and a health probe from elsewhere still gets through.

Imports only the standard library; `server` is the only user. Touched on the event loop only.
"""

from __future__ import annotations

import collections
import ipaddress


def peer_key(peer: object) -> str:
    """The share a connection counts against: its IPv4 address, or the /64 of an IPv6 address (one host may hold a
    whole /64); IPv4-mapped IPv6 addresses count as IPv4."""
    if not isinstance(peer, tuple) or not peer:
        return str(peer)
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return str(peer[0])
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ConnectionTable:
    """Counts the open connections of one listener, in total and per peer."""

    def __init__(self, max_connections: int, max_per_peer: int) -> None:
        self._max = max_connections
        self._max_per_peer = max_per_peer
        self._total = 0
        self._by_peer: collections.Counter[str] = collections.Counter()

    def admit(self, key: str) -> str:
        """Count a new connection from `key`; returns "" when admitted, else why it is refused."""
        if self._total >= self._max:
            return f"too many connections to this listener (limit {self._max}); retry later"
        if self._by_peer[key] >= self._max_per_peer:
            return f"too many connections from this address (limit {self._max_per_peer}); retry later"
        self._total += 1
        self._by_peer[key] += 1
        return ""

    def release(self, key: str) -> None:
        self._total -= 1
        self._by_peer[key] -= 1
        if self._by_peer[key] <= 0:
            del self._by_peer[key]
