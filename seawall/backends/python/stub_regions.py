"""The host's side of one stub's shared regions: each slot's input and output region, a decoupled model's response
region, and the descriptors that travel over the stub's fd socket (one tagged fd per message, both ways).

Imports `ipc` and `messages`. `StubProcess` (process.py) owns one (`process.regions`); every method runs on the
event loop thread.
"""

from __future__ import annotations

import mmap
import os
import socket
from collections.abc import Callable

from seawall.backends.python import ipc
from seawall.backends.python.messages import OutputRegion, ResponseRegion
from seawall.backends.python.stub_launch import StubDied

#: Largest region a stub may ask for (its outputs of one batch); beyond this the batch fails.
MAX_REGION_BYTES = 1 << 34
#: Region fds a stub may have sent ahead of the messages that use them (BLS calls); more breaks the protocol.
MAX_PENDING_FDS = 64


class StubRegions:
    """`inputs[slot]`/`outputs[slot]` are the host's mappings of each slot's two regions (the host writes inputs,
    the stub writes outputs); `responses` is a decoupled model's response region, made when the stub asks.

    `fail(reason)` stops the stub and returns the StubDied to raise: a descriptor that cannot be passed ends it.
    """

    def __init__(
        self,
        fd_socket: socket.socket,
        user: tuple[int, int] | None,
        default_bytes: int,
        growth_bytes: int,
        fail: Callable[[str], StubDied],
    ) -> None:
        self._fd_socket = fd_socket
        self._user = user
        self._default = default_bytes
        self._growth = growth_bytes
        self._fail = fail
        self._stub_fds: dict[bytes, int] = {}  # region fds the stub sent (BLS calls), by tag, until used
        self.inputs: list[mmap.mmap] = []
        self.outputs: list[mmap.mmap] = []
        self.responses: mmap.mmap | None = None

    def first_slot(self) -> tuple[int, int]:
        """Slot 0's regions, made before the stub starts: their fds (for its command line's descriptors; the
        caller closes them once the stub has them)."""
        in_fd, inputs = ipc.create_region(self._default, self._user, ipc.INPUTS_SUFFIX)
        out_fd, outputs = ipc.create_region(self._default, self._user)
        self.inputs, self.outputs = [inputs], [outputs]
        return in_fd, out_fd

    def open_slot(self, needed: int) -> tuple[int, int, int]:
        """Regions for one more slot, inputs of `needed` bytes or more: its index and both sizes, for the Execute
        that announces them (one fd per tag and Execute: the stub maps the first it finds with the size announced).

        Raises:
            StubDied: the fds could not be passed (the stub is then stopped).
        """
        slot = len(self.inputs)
        inputs_size = ipc.grown_size(needed, self._default, self._growth)
        inputs = self._pass_region(inputs_size, b"i%d" % slot, ipc.INPUTS_SUFFIX)
        try:
            outputs = self._pass_region(self._default, b"o%d" % slot)
        except StubDied:
            inputs.close()
            raise
        self.inputs.append(inputs)
        self.outputs.append(outputs)
        return slot, inputs_size, self._default

    def replace_inputs(self, slot: int, size: int) -> None:
        """Give the stub a new input region for `slot` (bigger, or fresh because the model kept views of the old
        one: this side never writes the old one again); the next Execute must announce `size`.

        Raises:
            StubDied: the fd could not be passed (the stub is then stopped).
        """
        memory = self._pass_region(size, b"i%d" % slot, ipc.INPUTS_SUFFIX)
        self.inputs[slot].close()
        self.inputs[slot] = memory

    def hand_inputs(self, slot: int, fd: int) -> None:
        """Give the stub a call's sealed region (`fd`, not closed here) as `slot`'s inputs for one batch: the stub
        maps it copy-on-write; this side's region of the slot is replaced before the slot's next copied batch.

        Raises:
            StubDied: the fd could not be passed (the stub is then stopped).
        """
        self.pass_call_region(os.dup(fd), b"i%d" % slot)

    def grow_outputs(self, slot: int, requested: int) -> OutputRegion:
        """A bigger output region for `slot` (the stub's Grow): the answer to send, size 0 when it would be too big.

        Raises:
            ipc.ProtocolError: no such slot, or no growth asked.
            StubDied: the fd could not be passed (the stub is then stopped).
        """
        if not slot < len(self.outputs) or requested <= len(self.outputs[slot]):
            raise ipc.ProtocolError("bad output region request")
        size = ipc.grown_size(requested, len(self.outputs[slot]), self._growth)
        if size > MAX_REGION_BYTES:
            return OutputRegion(slot, 0)
        memory = self._pass_region(size, b"o%d" % slot)
        self.outputs[slot].close()
        self.outputs[slot] = memory
        return OutputRegion(slot, size)

    def grow_responses(self, requested: int) -> ResponseRegion:
        """A new response region of at least `requested` bytes (the stub has no response in flight): the answer
        to send, size 0 when it would be too big.

        Raises:
            ipc.ProtocolError: no growth asked.
            StubDied: the fd could not be passed (the stub is then stopped).
        """
        current = len(self.responses) if self.responses is not None else 0
        if requested <= current:
            raise ipc.ProtocolError("bad response region request")
        size = max(ipc.grown_size(requested, current, self._growth), self._default)
        if size > MAX_REGION_BYTES:
            return ResponseRegion(0)
        memory = self._pass_region(size, b"r")
        if self.responses is not None:
            self.responses.close()
        self.responses = memory
        return ResponseRegion(size)

    def receive_fd(self, tag: bytes) -> int:
        """The region fd the stub sent under `tag` (before the message that uses it); the caller owns it.

        Raises:
            ipc.ProtocolError: no such fd has arrived, or the stub sent too many.
        """
        while tag not in self._stub_fds:
            try:
                data, fds, _, _ = socket.recv_fds(self._fd_socket, 64, 1)
            except (BlockingIOError, InterruptedError):
                raise ipc.ProtocolError("a call's region did not arrive before the call") from None
            if len(fds) != 1 or data in self._stub_fds or len(self._stub_fds) >= MAX_PENDING_FDS:
                for fd in fds:
                    os.close(fd)
                raise ipc.ProtocolError("bad region fd from the stub")
            self._stub_fds[data] = fds[0]
        return self._stub_fds.pop(tag)

    def pass_call_region(self, fd: int, tag: bytes) -> None:
        """Hand the stub a sealed region (a call's outputs) under `tag`; closes `fd`.

        Raises:
            StubDied: the fd could not be passed (the stub is then stopped).
        """
        try:
            socket.send_fds(self._fd_socket, [tag], [fd])
        except OSError as exc:  # includes a full socket: the stub is not reading its fd socket
            raise self._fail(f"cannot pass a shared region: {exc}") from exc
        finally:
            os.close(fd)

    def _pass_region(self, size: int, tag: bytes, suffix: str = "") -> mmap.mmap:
        fd, memory = ipc.create_region(size, self._user, suffix)
        try:
            self.pass_call_region(fd, tag)
        except StubDied:
            memory.close()
            raise
        return memory

    def drop_received(self) -> None:
        """Close the fds the stub sent that no message used (it died, or stopped)."""
        for fd in self._stub_fds.values():
            os.close(fd)
        self._stub_fds.clear()

    def close(self) -> None:
        """Unmap every region and close the fd socket (the stub has exited)."""
        self._fd_socket.close()
        self.drop_received()
        for memory in (*self.inputs, *self.outputs, *([self.responses] if self.responses is not None else [])):
            memory.close()
        self.inputs, self.outputs, self.responses = [], [], None
