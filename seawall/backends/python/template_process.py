"""The stub template ("zygote"): a process that has the interpreter, numpy, pb_utils and the stub's own modules
imported, and forks a stub for each request of the server (`--python-stub-start=fork`, the default). Its pages
are shared copy-on-write by every stub it forks, so a stub costs what it writes after the fork, not a whole
interpreter. The server's side is `template.py`.

Started by bootstrap.py (`bootstrap.py template <socket fd> <padding>`), which has closed every other descriptor
and made the template die with the server (PR_SET_PDEATHSIG). The template never runs model code and never maps
model data: it receives a stub's descriptors (control channel, fd socket, first regions, stdout and stderr pipes)
by SCM_RIGHTS, forks, closes them, and answers with the child's pid and a pidfd (so the server can signal a
process it did not fork, without a pid-reuse race); when a stub exits, the template reaps it and reports its
exit code. Each stub sets PR_SET_PDEATHSIG against the template, so stubs die with it, and it dies with the
server.

The child (`_become_stub`) closes the template's descriptors, reseeds numpy's global generator if the template
had it (Python's `random` reseeds itself at fork), rewrites its command line so `ps` names its model, version and
instance as a spawned stub's does, then confines itself exactly as a spawned stub (bootstrap's `confine`) before
the stub's first message is read. What the stubs still share is the template's address-space layout and hash
seed (docs/differences.md).

Protocol (SOCK_SEQPACKET, one JSON object per packet): server → template `{"id": n, "names": [...],
"user": [uid, gid], "sizes": [inputs, outputs]}` with six fds (control, fd socket, inputs, outputs, stdout,
stderr); template → server `{"ready": pid}` once, `{"id": n, "pid": p}` with a pidfd (or `{"id": n, "error":
text}`), `{"exit": p, "code": c}` (c as subprocess's returncode: negative for a signal).
"""

from __future__ import annotations

import gc
import json
import os
import selectors
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Sequence

#: the descriptors of one fork request, in this order
FD_NAMES = ("control", "fd_socket", "inputs", "outputs", "stdout", "stderr")
#: bytes of the template's command line kept free for a stub's names (its own padding argument)
TITLE_BYTES = 1024
_MAX_REQUEST = 1 << 16

#: confine(uid, gid, parent): bootstrap's switch to the model user, no new privileges, parent-death signal
Confine = Callable[[int, int, int], None]


def preload() -> None:
    """Import what every stub imports, so its pages are shared: numpy, pb_utils and the stub's modules."""
    import json as _json  # noqa: F401, PLC0415  # most model.py files import it

    import numpy  # noqa: F401, PLC0415

    from seawall.backends.python import stub  # noqa: F401, PLC0415
    from seawall.backends.python.user_model import PB_DIR, PB_MODULE  # noqa: PLC0415

    sys.path.insert(0, PB_DIR)
    try:
        __import__(PB_MODULE)
    finally:
        sys.path.remove(PB_DIR)  # the stub puts it back itself (stub._load_class)


#: the no-op model the template loads (and forgets) before forking: the stub's own loading path, no user code
_WARM_UP_MODEL = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]

    def execute(self, requests):
        return [pb_utils.InferenceResponse([]) for _ in requests]
"""


def warm_up(rounds: int = 8) -> None:
    """Run a stub's first steps a few times with a no-op model of Seawall's own (a channel, an Init decoded, the
    model file checked, compiled and imported, initialize called, Ready sent), so that CPython has specialised
    that code and filled its caches here: each forked stub then writes fewer of the pages it shares with the
    template (about 0.3 MiB). Every trace is undone (the module, its finder, sys.path); best effort."""
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    from seawall.backends.python import ipc, messages  # noqa: PLC0415
    from seawall.backends.python.stub import _Stub  # noqa: PLC0415
    from seawall.backends.python.stub_channel import Channel, map_region  # noqa: PLC0415

    meta_path, path = list(sys.meta_path), list(sys.path)
    root = tempfile.mkdtemp(prefix="seawall-template-")
    try:
        version_dir = os.path.join(root, "warm_up", "1")
        os.makedirs(version_dir)
        model_file = os.path.join(version_dir, "model.py")
        with open(model_file, "w") as file:
            file.write(_WARM_UP_MODEL)
        args = {"model_config": "{}", "model_name": "warm_up", "model_instance_name": "warm_up_0"}
        init = messages.Init("model", "warm_up", model_file, version_dir, os.path.dirname(version_dir), [], args, None)
        for _ in range(rounds):
            control, host = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            fds, host_fds = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            regions = [ipc.create_region(4096, None, ipc.INPUTS_SUFFIX), ipc.create_region(4096)]
            with control, host, fds, host_fds:
                channel = Channel(control, fds)
                host.sendall(messages.encode(init))
                stub = _Stub(channel, map_region(regions[0][0], 4096, True), map_region(regions[1][0], 4096, True))
                first = channel.receive()
                if type(first) is messages.Init:
                    stub._start(first)
            for _, memory in regions:
                memory.close()
            sys.meta_path[:] = meta_path
            sys.path[:] = path
            sys.modules.pop("model", None)
    except Exception:  # noqa: S110  # a template that could not warm up still forks correct stubs
        pass
    finally:
        sys.meta_path[:] = meta_path
        sys.path[:] = path
        sys.modules.pop("model", None)
        shutil.rmtree(root, ignore_errors=True)


def serve(sock_fd: int, confine: Confine) -> None:
    """The template's loop: fork on request, report exits; returns when the server closes the socket."""
    sock = socket.socket(fileno=sock_fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda number, frame: None)
    preload()
    warm_up()
    gc.collect()
    gc.freeze()  # the collector never walks (and so never writes to) the objects every stub shares
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    _send(sock, {"ready": os.getpid()})
    while True:
        for key, _ in selector.select():
            if key.fd == wake_r:
                while _drain(wake_r):
                    pass
                _reap(sock)
                continue
            try:
                data, fds, _, _ = socket.recv_fds(sock, _MAX_REQUEST, len(FD_NAMES))
            except InterruptedError:
                continue
            if not data:
                return  # the server is gone (or stopped the template); the stubs die with this process

            def close_loop() -> None:
                selector.close()
                os.close(wake_r)
                os.close(wake_w)

            _fork(sock, data, fds, confine, close_loop)


def _drain(fd: int) -> bool:
    try:
        return bool(os.read(fd, 512))
    except BlockingIOError:
        return False


def _send(sock: socket.socket, message: dict[str, object], fds: Sequence[int] = ()) -> None:
    socket.send_fds(sock, [json.dumps(message).encode()], list(fds))


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(sock, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def _fork(sock: socket.socket, data: bytes, fds: list[int], confine: Confine, close_loop: Callable[[], object]) -> None:
    request_id: object = None
    try:
        request = json.loads(data)
        request_id = request["id"]
        names = [str(name) for name in request["names"]]
        uid, gid = (int(number) for number in request["user"])
        sizes = [int(size) for size in request["sizes"]]
        if len(fds) != len(FD_NAMES) or len(sizes) != 2:
            raise ValueError("a fork request needs six descriptors and two sizes")
    except (ValueError, KeyError, TypeError) as exc:
        for fd in fds:
            os.close(fd)
        _send(sock, {"id": request_id, "error": f"bad fork request: {exc}"})
        return
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            close_loop()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            sock.close()
            _become_stub(fds, sizes, names, uid, gid, parent, confine)
            code = 0
        except SystemExit as exc:
            if exc.code not in (None, 0):
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    try:
        pidfd = os.pidfd_open(pid)  # not reaped yet (only this loop reaps): it is this child, not a reused pid
    except OSError as exc:
        _send(sock, {"id": request_id, "error": f"pidfd_open failed: {exc}"})
        return
    finally:
        for fd in fds:
            os.close(fd)
    try:
        _send(sock, {"id": request_id, "pid": pid}, [pidfd])
    finally:
        os.close(pidfd)


def _become_stub(
    fds: list[int], sizes: list[int], names: list[str], uid: int, gid: int, parent: int, confine: Confine
) -> None:
    """In the forked child: become the stub (its own output, title, random state and confinement), then serve."""
    control, fd_socket, inputs, outputs, stdout, stderr = fds
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    os.close(stdout)
    os.close(stderr)
    keep = {control, fd_socket, inputs, outputs}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own descriptor
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()  # from the OS's entropy, not the template's seed
    set_title(names)
    sys.argv = [sys.argv[0], *names]  # what model code sees, as in a spawned stub (without its fd numbers)
    confine(uid, gid, parent)
    from seawall.backends.python.stub import serve as serve_stub  # noqa: PLC0415  # already imported

    serve_stub(control, fd_socket, inputs, sizes[0], outputs, sizes[1])


def set_title(names: Sequence[str]) -> None:
    """Rewrite this process's command line (/proc/<pid>/cmdline, what `ps` shows) in place: the interpreter's
    arguments up to bootstrap.py, then `names` (cut to the template's padding)."""
    try:
        stat, cmdline = _read("/proc/self/stat"), _read("/proc/self/cmdline")  # no io objects: fewer pages written
        fields = stat.rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start and arg_end (fields 48 and 49 of stat(5))
        argv = cmdline.split(b"\0")
    except (OSError, IndexError, ValueError):
        return
    head = argv[: next((i + 1 for i, arg in enumerate(argv) if arg.endswith(b"bootstrap.py")), 1)]
    title = b"\0".join([*head, *(name.encode() for name in names)])[: end - start - 1]
    try:
        memory = os.open("/proc/self/mem", os.O_RDWR)  # not ctypes: its first call writes more shared pages
        try:
            os.pwrite(memory, title.ljust(end - start, b"\0"), start)
        finally:
            os.close(memory)
    except OSError:
        pass  # the title stays the template's


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)
