"""The checks of single fields of a received stub-protocol frame (what a peer sent, checked field by field): each
returns the value when it has the expected type and range, else raises `ProtocolError`. `message_decoding`
composes them into one check per message kind.

Imports `ipc` and `message_kinds`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from seawall.backends.python.ipc import INLINE_TEXT_MAX, ProtocolError
from seawall.backends.python.message_kinds import NON_FINITE

_N = TypeVar("_N", bound=tuple[object, ...])


def natural(value: object) -> int:
    """A non-negative integer."""
    if type(value) is not int or value < 0:
        raise ProtocolError("expected a non-negative integer")
    return value


def string(value: object) -> str:
    """A string."""
    if type(value) is not str:
        raise ProtocolError("expected a string")
    return value


def boolean(value: object) -> bool:
    if type(value) is not bool:
        raise ProtocolError("expected a boolean")
    return value


def array(value: object) -> list[object]:
    """A list (its items unchecked)."""
    if type(value) is not list:
        raise ProtocolError("expected a list")
    return value


def descriptors(value: object) -> list[object]:
    """A list of tensor descriptors, each a list (its fields are checked when its tensor is read)."""
    items = array(value)
    for descriptor in items:
        if type(descriptor) is not list:
            raise ProtocolError("bad tensor descriptor")
    return items


def mapping(value: object) -> dict[str, object]:
    """An object (its values unchecked)."""
    if type(value) is not dict:
        raise ProtocolError("expected an object")
    return value


def check_fields(fields: list[object], count: int) -> list[object]:
    """A frame's fields after its kind: exactly `count` of them."""
    if len(fields) != count:
        raise ProtocolError("wrong number of fields")
    return fields


def check_fields_inline(fields: list[object], count: int) -> list[object]:
    """`count` fields and a trailing `inline` one, which a message with no inline bytes may leave out ("")."""
    return [*fields, ""] if len(fields) == count else check_fields(fields, count + 1)


def build(kind: type[_N], fields: Sequence[object]) -> _N:
    """A NamedTuple from checked fields without its Python-level __new__ (per request on the hot path)."""
    return tuple.__new__(kind, fields)


def naturals(*values: object) -> None:
    """`natural` of each of `values`, without building a result (the hot path's form)."""
    for value in values:
        if type(value) is not int or value < 0:
            raise ProtocolError("expected a non-negative integer")


def inline_text(text: object) -> str:
    """A message's inline tensor bytes (base64): a string no longer than the largest inline size needs; its
    content and its size against the message's `size` are checked where it is decoded (`ipc.inline_region`)."""
    if type(text) is not str or len(text) > INLINE_TEXT_MAX:
        raise ProtocolError("bad inline tensor bytes")
    return text


def number(value: object) -> float | str:
    """A metric's number: an int, a float, or the name of a non-finite one (`message_kinds.wire_float`)."""
    if (type(value) is float or type(value) is int) or (type(value) is str and value in NON_FINITE):
        return value
    raise ProtocolError("expected a number")
