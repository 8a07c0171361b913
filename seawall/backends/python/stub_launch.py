"""How a stub process comes to exist: spawned as a fresh interpreter running bootstrap.py
(`--python-stub-start=spawn`), or forked by the stub template (`fork`, template.py). Either way the stub gets the
same four descriptors (control channel, fd socket, slot 0's input and output regions), the same environment and
user, and the host the same handle: `get_returncode()`, `kill()`, `close()`, and its owner's `on_exit()` once it
has exited; its stdout and stderr lines go to its owner's log.

Also the settings a stub starts with (`StubSettings`) and `StubDied`. Imports `process_io` and `template`;
`StubProcess` (process.py) is the only caller. Event loop thread only.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from seawall.backends.python.process_io import PipeProtocol, ReadPipeProtocol
from seawall.backends.python.template import BOOTSTRAP, StubTemplate, with_defaults

if TYPE_CHECKING:
    from seawall.backends.python.process import StubProcess


@dataclass(frozen=True, slots=True)
class StubSettings:
    """The python backend's --backend-config settings, parsed."""

    shm_default_bytes: int = 1 << 20
    shm_growth_bytes: int = 1 << 20
    timeout_s: float = 30.0
    user: tuple[int, int] | None = None  # (uid, gid) the stub runs as (--model-user); None: the server's
    environment: tuple[tuple[str, str], ...] = ()  # the stub's environment (cli.py's allowlist; template.STUB_DEFAULTS)
    template: StubTemplate | None = field(default=None, compare=False)  # forks the stubs; None: spawn each


class StubDied(Exception):
    """The stub process is gone (crashed, exited or was killed); `args[0]` is the reason for logs."""


class ProcessHandle(Protocol):
    """What the host does with a stub's process (asyncio's subprocess transport is one)."""

    def get_returncode(self) -> int | None: ...

    def kill(self) -> None: ...

    def close(self) -> None: ...


async def launch(
    owner: StubProcess, settings: StubSettings, ends: Sequence[int], size: int, names: Sequence[str]
) -> ProcessHandle:
    """Start the stub with `ends` (control, fd socket, inputs, outputs: the caller closes its copies).

    Raises:
        TemplateError: the template could not fork it (fork).
        OSError: the interpreter could not be started (spawn).
    """
    user = settings.user or (-1, -1)
    if settings.template is not None:
        return await _fork(owner, settings.template, ends, size, names, user)
    control, fd_socket, inputs, outputs = ends
    argv = [sys.executable, "-P", "-B", "-u", BOOTSTRAP, str(control), str(fd_socket), str(inputs), str(size)]
    argv += [str(outputs), str(size), *(str(number) for number in user), *names]
    process, _ = await asyncio.get_running_loop().subprocess_exec(
        lambda: PipeProtocol(owner),
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=tuple(ends),
        close_fds=True,
        env=with_defaults(settings.environment),
    )
    return process


async def _fork(
    owner: StubProcess,
    template: StubTemplate,
    ends: Sequence[int],
    size: int,
    names: Sequence[str],
    user: Sequence[int],
) -> ProcessHandle:
    loop = asyncio.get_running_loop()
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        child = await template.fork((*ends, out_write, err_write), (size, size), names, user)
    except BaseException:
        os.close(out_read)
        os.close(err_read)
        raise
    finally:
        os.close(out_write)
        os.close(err_write)
    for fd, read_end in ((1, out_read), (2, err_read)):
        pipe = open(read_end, "rb", buffering=0)  # noqa: SIM115  # the transport owns and closes it
        transport, _ = await loop.connect_read_pipe(lambda fd=fd: ReadPipeProtocol(owner, fd), pipe)  # type: ignore[misc]
        child.pipes.append(transport)
    child.watch(owner.on_exit)
    return child
