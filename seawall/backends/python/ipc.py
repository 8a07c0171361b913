"""Tensor bytes between the python backend host and its stub processes: shared regions and tensors.

Imports only numpy, `core.raw` and `core.types`; the stub process imports this module too, so it stays light.
Tensor bytes live in anonymous shared memory (memfd), laid out at 64-byte aligned offsets and described by
`[name, datatype, shape, offset, nbytes]` lists; the control messages that carry those lists are in `messages`.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import mmap
import os
import struct
import weakref
from collections.abc import Sequence
from pickle import PickleBuffer  # its buffer forwarding only: nothing is pickled or unpickled
from typing import cast

import numpy as np

import seawall.core.raw as raw
from seawall.core.types import NUMPY_DTYPES, Tensor

#: Offsets of tensors inside a region are multiples of this (cache line; any numpy dtype is aligned).
ALIGNMENT = 64

_LENGTH = struct.Struct("<I")

#: What a tensor becomes on its way into a region: raw bytes of a fixed-size array, or serialized BYTES.
Payload = bytes | np.ndarray | memoryview
#: `[name, datatype, shape, offset, nbytes]` as sent in frames.
Descriptor = list[object]


class ProtocolError(Exception):
    """The peer sent something that is not a valid message or tensor descriptor."""


#: the memfd name of every region (what /proc/<pid>/fd and maps show); a slot's input regions add INPUTS_SUFFIX
REGION_NAME = "seawall-python-backend"
INPUTS_SUFFIX = "-inputs"


def create_region(size: int, owner: tuple[int, int] | None = None, suffix: str = "") -> tuple[int, mmap.mmap]:
    """An anonymous shared-memory region: (memfd, writable mapping). No name exists in /dev/shm.

    Mode 0600, owned by `owner` (uid, gid: the model user) when given. The caller passes the fd to the stub
    and then closes it; the mapping stays valid. `suffix` ends the memfd's name (INPUTS_SUFFIX for inputs).
    """
    fd = os.memfd_create(REGION_NAME + suffix, os.MFD_CLOEXEC)
    try:
        os.fchmod(fd, 0o600)
        if owner is not None:
            os.fchown(fd, *owner)
        os.ftruncate(fd, size)
        memory = mmap.mmap(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd, memory


#: BLS tensors of at most this many bytes in all (a call's inputs, or a response's outputs) travel inside their
#: message (base64) instead of in a sealed region of their own. A region costs a fixed ~90 µs a call here
#: (memfd_create, ftruncate, pwrite, seal, fd passing, fstat, mmap, munmap on both sides), base64 in the JSON
#: frame a cost that grows with the bytes: one round trip measured ~20 µs inline against ~93 µs by region at 64 B,
#: 103 against 93 µs at 4 KiB, 348 against 96 µs at 16 KiB (load average 11 on 2 cores: relative figures).
INLINE_BYTES = 4096
#: the longest inline text a message may carry (base64 of INLINE_BYTES)
INLINE_TEXT_MAX = 4 * ((INLINE_BYTES + 2) // 3)


def inline_text(offsets: Sequence[int], payloads: Sequence[Payload], size: int) -> str:
    """The `size` bytes a region holding `payloads` at `offsets` would hold, as a message carries them inline;
    "" when they are none, or too many to travel inline (over INLINE_BYTES: a region then carries them)."""
    if not 0 < size <= INLINE_BYTES:
        return ""
    data = bytearray(size)
    for offset, payload in zip(offsets, payloads, strict=True):
        length = len(payload)
        if length:
            data[offset : offset + length] = payload
    return base64.b64encode(data).decode("ascii")


def inline_region(text: str, size: int) -> bytearray:
    """The bytes a message carried inline (writable: a model may write into the arrays over them), read as a
    region is (`read_tensor` checks each descriptor against it).

    Raises:
        ProtocolError: not base64, larger than INLINE_BYTES, or not `size` bytes.
    """
    if size > INLINE_BYTES or len(text) > INLINE_TEXT_MAX:
        raise ProtocolError("inline tensor bytes larger than allowed")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("inline tensor bytes are not base64") from None
    if len(data) != size:
        raise ProtocolError("inline tensor bytes have the wrong size")
    return bytearray(data)


#: Seals of a region handed over whole (BLS calls): its size and its bytes can no longer change.
_CALL_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


def sealed_region(offsets: Sequence[int], payloads: Sequence[Payload], size: int) -> int:
    """A region of `size` bytes holding `payloads`, sealed: nobody can shrink, grow or write it any more, so
    the peer may map and read it without copying, and without fearing SIGBUS or bytes that change. Returns
    its fd (the caller sends it, then closes it).
    """
    fd = os.memfd_create("seawall-python-call", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, size)
        for offset, payload in zip(offsets, payloads, strict=True):
            _write_at(fd, offset, payload)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _CALL_SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_at(fd: int, offset: int, payload: Payload) -> None:
    """pwrite `payload` at `offset`: the kernel fills the new region's pages in one pass, about half the cost of
    faulting them in one by one through a mapping (64 MiB: ~45 ms instead of ~90 ms on a 4 KiB-page VM)."""
    view = memoryview(payload).cast("B")  # type: ignore[arg-type]  # ndarray is a buffer
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


#: Sealed regions mapped with `keep` (a BLS call's inputs, a BLS call's large outputs), by the id of their mapping:
#: a weak reference to the mapping, its fd and its address; the fd closes when the mapping dies. Arrays over one of
#: them go on to a stub as that region (`sealed_views`: the stub maps the same pages) instead of a copy.
_kept: dict[int, tuple[weakref.ref[mmap.mmap], int, int]] = {}


def map_sealed(fd: int, size: int, keep: bool = False) -> mmap.mmap:
    """Map (read-only) a region the peer sealed with `sealed_region`; closes `fd`, unless `keep`: then `fd` stays
    open for `sealed_views` while the mapping lives.

    Raises:
        ProtocolError: the region is not sealed or not `size` bytes long.
    """
    try:
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            actual = os.fstat(fd).st_size
        except OSError as exc:
            raise ProtocolError("a call region is not a sealed memfd") from exc
        if seals & _CALL_SEALS != _CALL_SEALS or actual != size or not size:
            raise ProtocolError("a call region is not sealed or has the wrong size")
        memory = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    except BaseException:
        os.close(fd)
        raise
    if not keep:
        os.close(fd)
        return memory
    key = id(memory)
    _kept[key] = (weakref.ref(memory), fd, _address(np.frombuffer(memory, np.uint8, 1)))
    weakref.finalize(memory, _forget, key, fd)
    return memory


def _forget(key: int, fd: int) -> None:
    del _kept[key]
    os.close(fd)


def sealed_views(arrays: Sequence[np.ndarray]) -> tuple[int, int, list[int]] | None:
    """When each of `arrays` is a C-contiguous, non-empty view of one kept sealed region: that region's fd (still
    owned here: dup it to pass it), its size, and the offset of each array in it; else None."""
    found: object = None
    fd = 0
    offsets: list[int] = []
    for array in arrays:
        if not array.size or not array.flags.c_contiguous:
            return None
        owner: object = array
        while type(owner) is np.ndarray:
            owner = cast(np.ndarray, owner).base
        if type(owner) is memoryview:
            owner = cast(memoryview, owner).obj
        # (compared by identity of the mapping: compiled, a tuple read from `_kept` is a new object each time)
        entry = _kept.get(id(owner))
        if entry is None or entry[0]() is not owner or (found is not None and owner is not found):
            return None
        found, fd = owner, entry[1]
        offsets.append(_address(array) - entry[2])
    return None if found is None else (fd, len(cast(mmap.mmap, found)), offsets)


def tensor_views(tensors: Sequence[Tensor]) -> tuple[int, int, list[int]] | None:
    """`sealed_views` of the tensors' arrays; None as soon as one is BYTES or not of its datatype's dtype (its
    bytes in a region would be a conversion, not a view)."""
    arrays = []
    for tensor in tensors:
        if tensor.datatype == "BYTES" or tensor.data.dtype != NUMPY_DTYPES[tensor.datatype]:
            return None
        arrays.append(tensor.data)
    return sealed_views(arrays)


def read_sealed(memory: mmap.mmap, descriptors: Sequence[Sequence[object]]) -> list[tuple[str, str, np.ndarray]]:
    """`read_tensor(copy=True)` of each descriptor, the fixed-size tensors copied into one new sealed region
    (kept: `sealed_views`) instead of the heap, so that a BLS call's large outputs go back to the calling stub as
    that region, without a second copy. The arrays are read-only.

    Raises:
        ProtocolError: a descriptor is malformed, out of the region's bounds or inconsistent.
    """
    tensors = [read_tensor(memory, descriptor, False) for descriptor in descriptors]
    fixed = [i for i, (_, datatype, array) in enumerate(tensors) if datatype != "BYTES" and array.size]
    if not fixed:
        return tensors  # BYTES and empty tensors are new arrays already
    payloads: list[Payload] = [tensors[i][2].data.cast("B") for i in fixed]
    offsets, size = layout(payloads)
    region = map_sealed(sealed_region(offsets, payloads, size), size, keep=True)
    for i, offset in zip(fixed, offsets, strict=True):
        name, datatype, array = tensors[i]
        view = np.frombuffer(region, array.dtype, array.size, offset)
        tensors[i] = (name, datatype, view.reshape(array.shape))
    return tensors


def _address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


def grown_size(needed: int, current: int, growth: int) -> int:
    """The next region size: at least `needed`, a whole number of `growth` steps above `current`."""
    size = max(current, 1)
    step = max(growth, 1)
    if needed > size:
        size += ((needed - size + step - 1) // step) * step
    return size


def align(offset: int) -> int:
    return (offset + ALIGNMENT - 1) & ~(ALIGNMENT - 1)


def serialize_bytes(array: np.ndarray) -> bytes:
    """Triton's BYTES serialization: each element as a u32 little-endian length followed by its bytes."""
    return raw.encode_bytes(array)


def deserialize_bytes(data: bytes, count: int | None = None) -> np.ndarray:
    """Parse length-prefixed elements into a 1-D object array of `bytes`.

    Raises:
        ValueError: a length runs past the end, or the element count is not `count`.
    """
    if count is None:
        count = _count_elements(data)
    try:
        return raw.object_array(raw.split_bytes(data, count))
    except raw.BytesFormatError as exc:
        if exc.kind == raw.BytesFormatError.TRUNCATED_LENGTH:
            raise ValueError("truncated BYTES element length") from None
        if exc.kind == raw.BytesFormatError.TRUNCATED_ELEMENT:
            raise ValueError("BYTES element runs past the end of the tensor") from None
        raise ValueError(f"expected {count} BYTES elements, found {exc.found}") from None


def _count_elements(data: bytes) -> int:
    """How many elements serialized BYTES `data` holds (its lengths are checked when it is split)."""
    offset, found, end = 0, 0, len(data)
    while offset + _LENGTH.size <= end:
        offset += _LENGTH.size + _LENGTH.unpack_from(data, offset)[0]
        found += 1
    return found if offset == end else found + 1


def to_payload(datatype: str, array: np.ndarray) -> Payload:
    """The bytes of one tensor as they go into a region (fixed-size arrays are not copied here)."""
    if datatype == "BYTES":
        return serialize_bytes(array)
    dtype = NUMPY_DTYPES[datatype]
    if array.dtype != dtype:
        array = array.astype(dtype)
    if not array.size:
        return b""
    if array.ndim and array.flags.c_contiguous:
        return array.data.cast("B")  # a byte view of the array itself, not a copy
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def layout(payloads: Sequence[Payload], start: int = 0) -> tuple[list[int], int]:
    """Aligned offsets for `payloads` from `start`, and the total size they need."""
    offsets: list[int] = []
    end = start
    for payload in payloads:
        offset = align(end)
        offsets.append(offset)
        end = offset + len(payload)
    return offsets, end


def write_payloads(memory: mmap.mmap, offsets: Sequence[int], payloads: Sequence[Payload]) -> None:
    """Copy each payload into the region at its offset (one memcpy per tensor, no syscalls)."""
    for offset, payload in zip(offsets, payloads, strict=True):
        size = len(payload)
        if size:
            memory[offset : offset + size] = payload  # type: ignore[assignment]  # ndarray is a buffer


class InputView:
    """One batch's hold on a slot's input region (stub side): the model's input arrays are views made through it,
    and `release` tells, once the batch is done, whether the model still holds one of them.

    numpy wraps the buffer it views in a memoryview of its own; given a memoryview, that wrapper shares its
    managed buffer, so `memoryview.release()` would succeed while arrays still point into the region. A
    PickleBuffer forwards each export to `memory` instead: every array numpy makes through `source` (and every
    slice, reshape, memoryview or object that keeps such an array alive) holds one export of `memory` until it dies.
    """

    __slots__ = ("memory", "source")

    def __init__(self, region: mmap.mmap) -> None:
        # `region` is mapped shared and writable: the model may write into its inputs, as on Triton
        self.memory = memoryview(region)  # what descriptors are checked against and BYTES are read from
        self.source = PickleBuffer(self.memory)  # what numpy views

    def release(self) -> bool:
        """End the batch's hold (call it once nothing of the batch is referenced here any more); True if the model
        still holds something over the region: its bytes must then never be written again. A model's garbage
        that is not yet collected (a reference cycle) counts as held: that costs a region, never data.

        A model may have written into its inputs (as on Triton): the region is mapped shared and writable, so
        such writes land in the host's region, which the host never reads (the next batch's descriptors point
        only at bytes the host wrote for that batch): nothing is undone here."""
        self.source.release()
        try:
            self.memory.release()
        except BufferError:
            return True
        return False


def read_tensor(
    memory: mmap.mmap | bytearray | memoryview, descriptor: Sequence[object], copy: bool, source: object = None
) -> tuple[str, str, np.ndarray]:
    """Validate a descriptor against the region and return (name, datatype, array).

    Fixed-size tensors are views of the region unless `copy` (made through `source`, a buffer over `memory`, when
    given: `InputView.source`); BYTES are always parsed into new objects.

    Raises:
        ProtocolError: the descriptor is malformed, out of the region's bounds or inconsistent.
    """
    if len(descriptor) != 5:
        raise ProtocolError("bad tensor descriptor")
    name, datatype, shape, offset, nbytes = descriptor
    if type(name) is not str or type(datatype) is not str or datatype not in NUMPY_DTYPES:
        raise ProtocolError("bad tensor name or datatype")
    if type(shape) is not list:
        raise ProtocolError(f"bad shape for tensor '{name}'")
    count = 1
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise ProtocolError(f"bad shape for tensor '{name}'")
        count *= dim
    if type(offset) is not int or type(nbytes) is not int or offset < 0 or nbytes < 0:
        raise ProtocolError(f"bad offset for tensor '{name}'")
    if offset + nbytes > len(memory):
        raise ProtocolError(f"tensor '{name}' lies outside the shared region")
    if datatype == "BYTES":
        try:
            flat = deserialize_bytes(bytes(memory[offset : offset + nbytes]), count)  # bytes(bytes): the same object
        except ValueError as exc:
            raise ProtocolError(f"tensor '{name}': {exc}") from exc
        return name, datatype, flat.reshape(shape)
    dtype = NUMPY_DTYPES[datatype]
    if count * dtype.itemsize != nbytes:
        raise ProtocolError(f"tensor '{name}' has {nbytes} bytes, its shape needs {count * dtype.itemsize}")
    if count == 0:
        return name, datatype, np.empty(shape, dtype=dtype)
    buffer = memory if source is None else source
    array = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset)  # type: ignore[call-overload]
    if len(shape) != 1:  # 1-D: frombuffer's shape is (count,) already
        array = array.reshape(shape)
    return name, datatype, array.copy() if copy else array
