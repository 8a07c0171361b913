"""The iterator `InferenceRequest.exec(decoupled=True)` returns (and `await async_exec(decoupled=True)` gives), in a
stub and in process: the called model's responses in order, the last one final (an empty response when the model
ended its stream without data), errors as responses with `has_error()`, as Triton's ResponseIterator.

Imports nothing of Seawall (the stub loads it: it stays light). Where the responses come from is the caller's:
`next_response()` blocks until the next one and returns it with its final flag.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

UserObject = Any
_END = object()  # what `_next_or_end` returns at the end (StopIteration cannot cross a future)


class ResponseIterator:
    """Iterable (again, once finished: from its first response, as Triton's) and async iterable; `cancel()`
    cancels the call while it has not ended. Dropped before its final response: `drop` is called (it must not
    block or take locks: it may run inside any code, as `__del__` does)."""

    def __init__(
        self,
        next_response: Callable[[], tuple[UserObject, bool]],
        cancel: Callable[[], None],
        drop: Callable[[], None],
        executor: Callable[[], Executor | None],
    ) -> None:
        self._next_response = next_response
        self._cancel = cancel
        self._drop = drop
        self._executor = executor  # where `async for` waits for the next response (None: asyncio's default)
        self._lock = threading.Lock()  # one thread takes the next response at a time
        self._responses: list[UserObject] = []
        self._index = 0
        self._finished = False
        self._cancelled = False

    def __iter__(self) -> ResponseIterator:
        if self._finished and self._index >= len(self._responses):
            self._index = 0
        return self

    def __next__(self) -> UserObject:
        found = self._next_or_end()
        if found is _END:
            raise StopIteration
        return found

    def _next_or_end(self) -> UserObject:
        with self._lock:
            if self._finished:
                if self._index < len(self._responses):
                    self._index += 1
                    return self._responses[self._index - 1]
                return _END
            response, final = self._next_response()
            self._responses.append(response)
            if final:
                self._finished = True
                self._index = len(self._responses)
            return response

    def __aiter__(self) -> ResponseIterator:
        return self.__iter__()

    async def __anext__(self) -> UserObject:
        import asyncio  # only models that iterate asynchronously pay for it

        if self._finished:
            found = self._next_or_end()
        else:
            found = await asyncio.get_running_loop().run_in_executor(self._executor(), self._next_or_end)
        if found is _END:
            raise StopAsyncIteration
        return found

    def cancel(self) -> None:
        """Cancel the call: the called model sees `is_cancelled()`, and the iterator ends with a CANCELLED
        error response (after the responses that had already arrived)."""
        if not self._finished and not self._cancelled:
            self._cancelled = True
            self._cancel()

    def __del__(self) -> None:
        if not getattr(self, "_finished", True):
            self._finished = True
            try:
                self._drop()
            except Exception:
                pass  # the channel is gone (the stub is exiting)
