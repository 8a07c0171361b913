"""The one place where requests meet Seawall's security rules: API categories and their restrictions.

Imports `errors` and `options`. Every frontend asks `ApiPolicy.authorize` before it calls the core.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from seawall.errors import PermissionDeniedError
from seawall.options import API_CATEGORIES, Restriction

HeaderLookup = Callable[[str], "str | None"]

#: Stands for a missing header: no key hashes to it, and comparing it costs what comparing a digest costs.
_NO_HEADER = bytes(32)


class Keys:
    """The restrictions of one kind of listener (HTTP or gRPC). A key reload replaces `current` whole, in
    one assignment on the event loop, so a request sees the old keys or the new ones, never a mix."""

    def __init__(self, restrictions: tuple[Restriction, ...]) -> None:
        self.current = restrictions  # written by security.keyring on the event loop; read by every policy


def _digest(value: str) -> bytes:
    # comparing digests keeps the time independent of the key's length as well as of its content
    return hashlib.sha256(value.encode()).digest()


class ApiPolicy:
    """Maps each API category to the headers that unlock it (or to nothing: unrestricted).

    `header_prefix` is prepended to each key ("triton-grpc-protocol-" on gRPC); `noun` names the thing in
    the refusal, as Triton does ("API" on HTTP, "protocol" on gRPC). Several keys may unlock one category
    (lines of one key file, while a key is rotated); `restrictions` given as `Keys` follows their reloads.
    """

    def __init__(
        self, restrictions: tuple[Restriction, ...] | Keys, header_prefix: str = "", noun: str = "API"
    ) -> None:
        self._noun = noun
        self._prefix = header_prefix
        self._keys = restrictions if isinstance(restrictions, Keys) else Keys(restrictions)
        self._built_from: tuple[Restriction, ...] | None = None
        self._by_category: dict[str, tuple[tuple[str, bytes], ...]] = {}
        self._table()  # an unknown category fails here, at construction

    def _table(self) -> dict[str, tuple[tuple[str, bytes], ...]]:
        current = self._keys.current
        if current is not self._built_from:  # rebuilt once per key reload, not per request
            table: dict[str, list[tuple[str, bytes]]] = {}
            for restriction in current:
                header = self._prefix + restriction.key
                for category in restriction.categories:
                    if category not in API_CATEGORIES:
                        raise ValueError(f"unknown restricted {self._noun.lower()} '{category}'")
                    table.setdefault(category, []).append((header, _digest(restriction.value)))
            self._by_category = {category: tuple(guards) for category, guards in table.items()}
            self._built_from = current
        return self._by_category

    def is_restricted(self, category: str) -> bool:
        return category in self._table()

    def authorize(self, category: str, lookup: HeaderLookup) -> None:
        """Refuse unless the request carries one of the category's headers with its value.

        `lookup(name)` returns the request's header value for a lower-case name, or None. Every key of the
        category is compared, whichever matches, so the time taken does not tell which one did.

        Raises:
            PermissionDeniedError: the category is restricted and no header holds a right value.
        """
        guards = self._table().get(category)
        if guards is None:
            return
        matched = False
        for header, expected in guards:
            sent = lookup(header.lower())
            # compare_digest takes time independent of where the values differ; no early exit
            matched |= hmac.compare_digest(_NO_HEADER if sent is None else _digest(sent), expected)
        if not matched:
            raise PermissionDeniedError(f"This {self._noun} is restricted, expecting header '{guards[0][0]}'")
