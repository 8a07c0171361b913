"""The response cache: the interface a cache implements, the built-in `local` LRU cache, and how the core
turns a request into a key and a response into bytes (and back).

Imports numpy, `core.raw`, `core.stats`, `core.types`, `errors`. A cache stores opaque bytes under opaque keys, so a
cache plugin never sees Seawall's types; nothing here knows a transport.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from seawall.core import raw
from seawall.core.stats import StatsRecorder
from seawall.core.types import InferRequest, InferResponse, ParamValue, Tensor, element_count
from seawall.errors import InternalError, InvalidArgumentError

logger = logging.getLogger(__name__)

#: request parameters that change when or how a request is scheduled, never what the model answers
_SCHEDULING_PARAMETERS = frozenset(("timeout", "priority", "sequence_id", "sequence_start", "sequence_end"))
_HEADER = struct.Struct("<Q")
#: what an entry of the local cache costs besides its key and value bytes (dictionary and list slots)
ENTRY_OVERHEAD = 64


class ResponseCache(Protocol):
    """Where responses are kept. Called on the server's event loop thread: both calls must return quickly.

    A cache may drop any entry at any time; `lookup` then answers None and the model runs again.
    """

    def lookup(self, key: bytes) -> bytes | None:
        """The value stored under `key`, or None."""
        ...

    def insert(self, key: bytes, value: bytes) -> None:
        """Store `value` under `key` (or decide not to, e.g. when it does not fit)."""
        ...


class LocalCache:
    """Triton's `local` cache: an in-process LRU bounded by the bytes of its keys and values.

    Thread-safe (one lock), so one cache may serve several servers of one process.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()  # oldest first; guarded by _lock
        self._lock = threading.Lock()
        self.used = 0  # bytes held, overhead included; guarded by _lock
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def lookup(self, key: bytes) -> bytes | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def insert(self, key: bytes, value: bytes) -> None:
        cost = len(key) + len(value) + ENTRY_OVERHEAD
        if cost > self.size:
            return  # would evict everything and still not fit
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.used -= len(key) + len(old) + ENTRY_OVERHEAD
            while self.used + cost > self.size:
                evicted_key, evicted = self._entries.popitem(last=False)
                self.used -= len(evicted_key) + len(evicted) + ENTRY_OVERHEAD
                self.evictions += 1
            self._entries[key] = value
            self.used += cost

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def create_local_cache(settings: Mapping[str, str]) -> LocalCache:
    """The `local` cache of `--cache-config local,size=<bytes>`.

    Raises:
        InvalidArgumentError: `size` is missing, or not a positive number of bytes (Triton's wording where it has one).
    """
    if "size" not in settings:
        raise InvalidArgumentError("Failed to initialize LocalCache: config didn't contain a valid 'size' field.")
    unknown = sorted(set(settings) - {"size"})
    if unknown:
        raise InvalidArgumentError(f"Failed to initialize LocalCache: unknown setting '{unknown[0][:64]}'")
    text = settings["size"]
    if not text.isascii() or not text.isdigit() or int(text) == 0 or int(text) >= 2**63:
        raise InvalidArgumentError(
            f"Failed to initialize LocalCache: 'size' must be a positive number of bytes. Got {text[:64]}"
        )
    return LocalCache(int(text))


# ---------------------------------------------------------------------------------------------- keys


def request_key(request: InferRequest, version: int) -> bytes:
    """A SHA-256 over everything that decides the response: model, version, every input's name, datatype,
    shape, parameters and bytes, the requested outputs with their parameters, and the request's parameters
    (scheduling ones excepted)."""
    digest = hashlib.sha256()

    def add(part: bytes) -> None:
        digest.update(_HEADER.pack(len(part)))
        digest.update(part)

    add(request.model_name.encode())
    add(str(version).encode())
    add(_parameters_text(request.parameters, _SCHEDULING_PARAMETERS))
    for tensor in sorted(request.inputs, key=lambda t: t.name):
        add(tensor.name.encode())
        add(tensor.datatype.encode())
        add(json.dumps(tensor.shape).encode())
        add(_parameters_text(tensor.parameters))
        add(bytes(raw.encode(tensor)))
    for output in sorted(request.outputs, key=lambda o: o.name):
        add(output.name.encode())
        add(_parameters_text(output.parameters))
    return digest.digest()


def _parameters_text(parameters: Mapping[str, ParamValue], skipped: frozenset[str] = frozenset()) -> bytes:
    # the value's type is part of the key: 1, 1.0, True and "1" are different parameters
    items = sorted((k, type(v).__name__, v) for k, v in parameters.items() if k not in skipped)
    return json.dumps(items).encode()


# ---------------------------------------------------------------------------------------------- values


def encode_response(response: InferResponse) -> bytes:
    """A response's outputs and parameters as one bytes value: a length-prefixed JSON header, then the raw
    bytes of each output in order."""
    payloads = [bytes(raw.encode(t)) for t in response.outputs]
    header = {
        "parameters": response.parameters,
        "outputs": [
            [t.name, t.datatype, list(t.shape), t.parameters, len(p)]
            for t, p in zip(response.outputs, payloads, strict=True)
        ],
    }
    head = json.dumps(header).encode()
    return b"".join((_HEADER.pack(len(head)), head, *payloads))


def decode_response(value: bytes, model_name: str, model_version: str) -> InferResponse:
    """The response `encode_response` stored (its arrays are read-only views of `value`).

    Raises:
        InternalError: `value` is not what `encode_response` wrote (a cache returned foreign data).
    """
    try:
        view = memoryview(value)
        (length,) = _HEADER.unpack_from(view, 0)
        position = _HEADER.size + length
        header = json.loads(bytes(view[_HEADER.size : position]))
        outputs: list[Tensor] = []
        for name, datatype, shape, parameters, size in header["outputs"]:
            dims = tuple(int(d) for d in shape)
            chunk = view[position : position + size]
            position += size
            data = raw.decode(chunk, datatype, dims, element_count(dims), name, model_name)
            outputs.append(Tensor(name, datatype, dims, data, dict(parameters)))
        if position != len(view):
            raise ValueError("trailing bytes")
        return InferResponse(model_name, model_version, outputs, parameters=dict(header["parameters"]))
    except (ValueError, KeyError, TypeError, struct.error, InvalidArgumentError) as exc:
        raise InternalError("the response cache returned a malformed entry") from exc


async def infer_cached(
    cache: ResponseCache,
    request: InferRequest,
    version: int,
    stats: StatsRecorder,
    execute: Callable[[], Awaitable[InferResponse]],
) -> InferResponse:
    """The cached response to `request`, or the one `execute()` produces (then stored); statistics as Triton
    counts them. A failing cache is a miss.
    """
    started = time.monotonic_ns()
    key = request_key(request, version)
    try:
        value = cache.lookup(key)
        hit = None if value is None else decode_response(value, request.model_name, str(version))
    except Exception:
        logger.exception("response cache lookup for model '%s' failed", request.model_name)
        hit = None
    looked_up = time.monotonic_ns()
    if hit is not None:
        stats.record_cache_hit(looked_up - started, looked_up - started)
        return hit
    response = await execute()
    inserting = time.monotonic_ns()
    try:
        cache.insert(key, encode_response(response))
    except Exception:
        logger.exception("response cache insert for model '%s' failed", request.model_name)
    stats.record_cache_miss(looked_up - started + time.monotonic_ns() - inserting)
    return response
