"""Unit tests of the one BYTES codec (`core.raw`): the numpy fast path for elements of one length, the single
pass for mixed lengths, and every malformed input, against a plain reference serializer."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from seawall.core import raw
from seawall.errors import InvalidArgumentError


def _reference(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


CASES = {
    "empty tensor": [],
    "one empty element": [b""],
    "empty elements": [b""] * 5,
    "one length": [b"abc"] * 7,
    "mixed lengths": [b"", b"a", b"\x00\xff", b"xyz" * 50, b""],
    "first element empty": [b"", b"ab"],
    "looks uniform": [b"\x02\x00\x00\x00", b"ab"],
}


@pytest.mark.parametrize("items", CASES.values(), ids=CASES.keys())
def test_round_trip_matches_the_reference(items: list[bytes]) -> None:
    data = _reference(items)
    assert raw.encode_bytes(raw.object_array(items)) == data
    assert raw.split_bytes(data, len(items)) == items
    decoded = raw.decode_bytes(memoryview(data), (len(items),), len(items), "IN")
    assert decoded.tolist() == items


def test_non_bytes_elements_are_encoded_as_text() -> None:
    array = np.array(["hé", b"x", 3, np.bytes_(b"\x00z")], dtype=np.object_)
    assert raw.encode_bytes(array) == _reference([b"h\xc3\xa9", b"x", b"3", b"\x00z"])


def test_a_million_elements_take_well_under_a_second_each_way() -> None:
    import time

    items = [bytes(i % 7) for i in range(1 << 20)]
    start = time.perf_counter()
    data = raw.encode_bytes(raw.object_array(items))
    assert raw.split_bytes(data, len(items)) == items
    assert time.perf_counter() - start < 10  # ~0.6 s on the 2-core machine; the old loops took ~4 s


@pytest.mark.parametrize(
    ("data", "count", "kind", "found"),
    [
        (b"\x01\x00", 1, raw.BytesFormatError.TRUNCATED_LENGTH, 0),
        (b"\x05\x00\x00\x00ab", 1, raw.BytesFormatError.TRUNCATED_ELEMENT, 0),
        (_reference([b"a", b"b"]), 1, raw.BytesFormatError.COUNT, 2),
        (_reference([b"a"]), 2, raw.BytesFormatError.COUNT, 1),
        (b"\x00\x00\x00\x00\x01", 1, raw.BytesFormatError.TRUNCATED_LENGTH, 1),
    ],
)
def test_malformed_data_is_reported(data: bytes, count: int, kind: str, found: int) -> None:
    with pytest.raises(raw.BytesFormatError) as info:
        raw.split_bytes(data, count)
    assert (info.value.kind, info.value.found) == (kind, found)


def test_surplus_elements_are_counted_only_up_to_the_cap() -> None:
    with pytest.raises(raw.BytesFormatError) as info:
        raw.split_bytes(bytes(4 * 10_000), 1, extra=10)
    assert (info.value.kind, info.value.found) == (raw.BytesFormatError.COUNT, 12)


def test_decode_messages() -> None:
    with pytest.raises(InvalidArgumentError, match="unexpected data after the last BYTES element"):
        raw.decode_bytes(memoryview(_reference([b"a", b"b"])), (1,), 1, "IN")
    with pytest.raises(InvalidArgumentError, match="unexpected data after the last BYTES element"):
        raw.decode_bytes(memoryview(b"\x00\x00\x00\x00\x01"), (1,), 1, "IN")
    with pytest.raises(InvalidArgumentError, match="BYTES element length prefix is truncated"):
        raw.decode_bytes(memoryview(_reference([b"a"]) + b"\x00\x00\x00"), (2,), 2, "IN")
    with pytest.raises(InvalidArgumentError, match="BYTES element is longer than the remaining data"):
        raw.decode_bytes(memoryview(b"\x05\x00\x00\x00ab"), (1,), 1, "IN")
