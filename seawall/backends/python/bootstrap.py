"""Entry script of a stub process (run by path): confines the process, imports the `seawall` package this file
belongs to, then runs `stub.main`.

`seawall/__init__.py` is lazy (it imports nothing), so the stub loads only what `stub.py` needs (`ipc`,
`core.types`, `errors`, ...; tests/test_layering.py states the list), never the server, its frontends or grpc.
The package is imported from this file's own directory, not from whatever `sys.path` finds first, so the stub
always runs the code of the server that started it.
Confinement comes before model code: first every descriptor but the stub's own is closed; once the stub's own
modules are imported, the process becomes the model user (argv's uid/gid; -1 keeps the server's) and sets
PR_SET_NO_NEW_PRIVS and PR_SET_DUMPABLE 0. The host cannot have the event loop's spawn do this: uvloop's
subprocess_exec neither closes inherited descriptors nor changes users (see docs/differences.md).
A stub ignores SIGTERM and SIGINT: the server owns its lifetime (finalize, then exit; or the end of its channel
when the server is gone), so a signal sent to the whole process group (systemd's KillMode=control-group,
`timeout`, Ctrl-C) cannot kill the workers before the server has drained its requests. And the kernel kills a
stub when the server process ends, however it ends (PR_SET_PDEATHSIG), so no worker outlives a server that
exits at its --exit-timeout-secs or is killed.
`bootstrap.py template <socket fd> <padding>` starts the stub template instead (template_process.py,
--python-stub-start=fork): the same closing of descriptors and parent-death signal; each stub it forks then
calls `confine` itself, against the template.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Any

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
#: argv positions: 1-6 are the stub's channel (see stub.py), then the uid and gid to run as.
_USER_ARG = 7


def _close_inherited(keep: set[int]) -> None:
    """Close every descriptor above stderr that is not in `keep` (listening sockets, logs, secrets, ...)."""
    try:
        found = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        found = list(range(3, os.sysconf("SC_OPEN_MAX")))
    for fd in found:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the directory listing's own descriptor, already closed


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return int(_libc().prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


@functools.cache
def _libc() -> Any:
    """The C library, looked up once: a stub forked from the template reuses the template's (its pages stay shared)."""
    import ctypes  # noqa: PLC0415  # only on Linux, and only here

    return ctypes.CDLL(None, use_errno=True)


def confine(uid: int, gid: int, parent: int) -> None:
    """Drop to uid/gid (-1: keep the server's; no supplementary groups), then no new privileges, not dumpable,
    and killed when `parent` (the server, or the stub template) ends."""
    if uid >= 0:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        if os.getuid() != uid or os.geteuid() != uid:
            raise SystemExit("seawall stub: could not become the model user")
    if not _prctl(_PR_SET_NO_NEW_PRIVS, 1) and sys.platform.startswith("linux"):
        raise SystemExit("seawall stub: PR_SET_NO_NEW_PRIVS failed")
    _prctl(_PR_SET_DUMPABLE, 0)  # other stubs of the same user cannot read this one's memory
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # after the switch of user, which clears it
    if os.getppid() != parent:
        raise SystemExit("seawall stub: the server is gone")


def _import_own_package(package_dir: str) -> None:
    """Import the real `seawall` package from `package_dir` (importlib's recipe for importing a source file)."""
    import importlib.util  # noqa: PLC0415  # only here, after the descriptors are closed

    spec = importlib.util.spec_from_file_location(
        "seawall", os.path.join(package_dir, "__init__.py"), submodule_search_locations=[package_dir]
    )
    if spec is None or spec.loader is None:
        raise SystemExit("seawall stub: cannot import the seawall package")
    package = importlib.util.module_from_spec(spec)
    sys.modules["seawall"] = package
    spec.loader.exec_module(package)


def _run() -> None:
    server = os.getppid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    template = sys.argv[1] == "template"
    _close_inherited({int(sys.argv[2])} if template else {int(sys.argv[i]) for i in (1, 2, 3, 5)})
    if "seawall" not in sys.modules:
        _import_own_package(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    if template:  # the stub template (template_process.py): it forks the stubs, which confine themselves
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        _prctl(_PR_SET_DUMPABLE, 0)  # it passes every stub's descriptors: no stub of its user may trace it
        if os.getppid() != server:
            raise SystemExit("seawall stub template: the server is gone")
        from seawall.backends.python.template_process import serve  # noqa: PLC0415

        serve(int(sys.argv[2]), confine)
        return
    # the stub's own code (and the modules it needs) is imported before the switch to the model user, who may
    # not be able to read the Python installation; no model code has run yet
    import json  # noqa: F401, PLC0415  # most model.py files import it

    from seawall.backends.python.stub import main

    confine(int(sys.argv[_USER_ARG]), int(sys.argv[_USER_ARG + 1]), server)
    main(sys.argv)


if __name__ == "__main__":
    _run()
