"""The stub's serving loop for an `async def execute` model (not decoupled): batches run as tasks of the model's
event loop. Split from stub.py, whose `_Stub` owns the regions and the model; only async models import this (and
asyncio).
"""

from __future__ import annotations

import asyncio
import time
import traceback
from typing import TYPE_CHECKING

from seawall.backends.python import ipc
from seawall.backends.python.messages import BatchFailed, BatchResult, Execute, Finalize, Finalized, StubMessage
from seawall.backends.python.user_model import BatchError, UserModel, describe

if TYPE_CHECKING:
    from seawall.backends.python.stub import _Stub


def serve_async(stub: _Stub, model: UserModel) -> None:
    """An `async def execute` model: each batch runs as a task of the model's event loop, so one batch's
    awaits (BLS calls, I/O) overlap another's; results still go out in the order the batches came, as the
    host expects (a finished batch waits for the earlier ones)."""
    loop = model.event_loop()
    channel = stub._channel
    tasks: set[asyncio.Task[None]] = set()
    done: asyncio.Future[bool] = loop.create_future()  # True: Finalize came; False: the host has gone

    def process() -> None:
        while (message := channel.take()) is not None:
            if type(message) is Execute:
                stub._order.append(message.seq)
                task = loop.create_task(_execute_async(stub, model, message))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif type(message) is Finalize and not done.done():
                done.set_result(True)
        if channel.is_closed and not done.done():
            done.set_result(False)

    def readable() -> None:
        try:
            channel.read_available()
        except (OSError, ipc.ProtocolError):  # the host has gone (or broke the protocol): stop serving
            loop.remove_reader(channel.fileno())
            if not done.done():
                done.set_result(False)
            return
        process()

    channel.on_frames = lambda: loop.call_soon_threadsafe(process)
    loop.add_reader(channel.fileno(), readable)
    try:
        process()
        finalize = loop.run_until_complete(done)
        loop.remove_reader(channel.fileno())  # no-op if already removed
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    finally:
        channel.on_frames = None
    if finalize:
        stub._finalize()
        channel.send(Finalized())


async def _execute_async(stub: _Stub, model: UserModel, message: Execute) -> None:
    seq = message.seq
    result: StubMessage
    if not stub._cancels.begin(seq, len(message.requests)):
        stub._cancels.end(seq)
        result = stub._skip_cancelled(message)
    else:
        try:
            slot, inputs = stub._open_batch(message)
            result = stub._close_batch(await _run(stub, model, message, slot, inputs), inputs)
        except Exception as exc:  # the batch's regions could not be mapped
            result = BatchFailed(seq, describe(exc), traceback.format_exc())
        finally:
            stub._cancels.end(seq)
    stub._finished[seq] = result
    while stub._order and stub._order[0] in stub._finished:
        stub._channel.send(stub._finished.pop(stub._order.popleft()))


async def _run(
    stub: _Stub, model: UserModel, message: Execute, slot: int, inputs: ipc.InputView
) -> BatchResult | BatchFailed:
    """As `_Stub._run`: the batch's requests and responses die with this coroutine."""
    seq = message.seq
    try:
        started = time.monotonic_ns()
        requests = [stub._request(model, inputs, header, seq, i) for i, header in enumerate(message.requests)]
        responses = await model.execute_async(requests)
        entries = stub._write_responses(slot, requests, responses)
        return BatchResult(seq, entries, started, time.monotonic_ns())
    except BatchError as exc:
        return BatchFailed(seq, str(exc), "")
    except Exception as exc:
        return BatchFailed(seq, describe(exc), traceback.format_exc())
