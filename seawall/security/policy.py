"""The one place where requests meet Seawall's security rules: API categories and their restrictions.

Imports `errors` and `options`. Every frontend asks `ApiPolicy.authorize` before it calls the core.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from seawall.errors import PermissionDeniedError
from seawall.options import API_CATEGORIES, Restriction

HeaderLookup = Callable[[str], "str | None"]


class ApiPolicy:
    """Maps each API category to the header that unlocks it (or to nothing: unrestricted).

    `header_prefix` is prepended to each key ("triton-grpc-protocol-" on gRPC); `noun` names the thing in
    the refusal, as Triton does ("API" on HTTP, "protocol" on gRPC).
    """

    def __init__(self, restrictions: tuple[Restriction, ...], header_prefix: str = "", noun: str = "API") -> None:
        self._noun = noun
        self._by_category: dict[str, tuple[str, bytes]] = {}
        for restriction in restrictions:
            header = header_prefix + restriction.key
            for category in restriction.categories:
                if category not in API_CATEGORIES:
                    raise ValueError(f"unknown restricted {noun.lower()} '{category}'")
                self._by_category[category] = (header, restriction.value.encode())

    def is_restricted(self, category: str) -> bool:
        return category in self._by_category

    def authorize(self, category: str, lookup: HeaderLookup) -> None:
        """Refuse unless the request carries the category's header with the right value.

        `lookup(name)` returns the request's header value for a lower-case name, or None.

        Raises:
            PermissionDeniedError: the category is restricted and the header is missing or wrong.
        """
        guard = self._by_category.get(category)
        if guard is None:
            return
        header, expected = guard
        sent = lookup(header.lower())
        # compare_digest takes time independent of where the values differ
        if sent is None or not hmac.compare_digest(sent.encode(), expected):
            raise PermissionDeniedError(f"This {self._noun} is restricted, expecting header '{header}'")
