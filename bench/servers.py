"""Start the three servers under test (Seawall, Triton, MLServer) and read their process trees from /proc.

Start-to-ready is measured the same way for all three: from just before the process is spawned to the first
200 from GET /v2/health/ready (polled every 10 ms). CPU and PSS are summed over the whole process tree
(Python backend stubs and MLServer's inference workers included).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
MODELS = BENCH / "models"
#: Seawall only: add_sub opted into in-process execution under these names (Triton has no such mode; the
#: report compares them with its add_sub), made from bench/models/add_sub by `in_process_repository`.
IN_PROCESS_MODES = {"add_sub_inprocess": "true", "add_sub_inline": "inline"}
MLSERVER_DIR = BENCH / "mlserver"
MLSERVER_VENV = BENCH / ".venv-mlserver"
MLSERVER_PINS = ("mlserver==1.7.1", "uvloop<0.21")  # mlserver 1.7.1's workers fail on uvloop >= 0.21
TRITON_SCRIPT = Path(os.environ.get("SEAWALL_TRITON", ROOT.parent / "shared" / "tools" / "tritonserver"))
TRITON_VENV = Path(os.environ.get("SEAWALL_TRITON_VENV", Path.home() / ".cache" / "seawall" / "triton-reference"))
SERVERS = ("seawall", "triton", "mlserver")
_TICK = os.sysconf("SC_CLK_TCK")
_READY = re.compile(r"Seawall ready: (.*)$")


@dataclass
class Server:
    """A server process under test: its addresses, start-to-ready time and captured output."""

    name: str
    process: subprocess.Popen[bytes]
    http: str = ""
    grpc: str = ""
    start_seconds: float = 0.0
    lines: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _free_port() -> int:
    # Triton and MLServer cannot bind port 0 and report it; Seawall does (read from its ready line).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_mlserver() -> Path:
    """Create MLServer's own venv (bench/.venv-mlserver) on first use; return its `mlserver` executable."""
    exe = MLSERVER_VENV / "bin" / "mlserver"
    stamp = MLSERVER_VENV / ".installed"
    if not stamp.exists():
        print("bench: installing MLServer into bench/.venv-mlserver (one time)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(MLSERVER_VENV)], check=True)
        pip = [str(MLSERVER_VENV / "bin" / "pip"), "install", "-q", *MLSERVER_PINS]
        subprocess.run(pip, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stamp.touch()
    return exe


def _triton_command() -> tuple[list[str], dict[str, str]]:
    """The tritonserver binary and environment, as the shared wrapper script would exec them.

    Calling the binary directly keeps the wrapper's own start-up (flock, two Python calls) out of Triton's
    start-to-ready time. Falls back to the wrapper (which installs Triton on first use).
    """
    stub_dir = TRITON_VENV / "triton-backends"
    python = TRITON_VENV / "bin" / "python"
    if not (TRITON_VENV / ".installed").exists() or not (stub_dir / "python").is_dir():
        return [str(TRITON_SCRIPT)], dict(os.environ)
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip())
    root = site / "pytriton" / "tritonserver"
    env = dict(os.environ)
    env["PATH"] = f"{TRITON_VENV / 'bin'}:{env.get('PATH', '')}"
    env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(site / "nvidia_pytriton.libs"), env.get("LD_LIBRARY_PATH")]))
    argv = [str(root / "bin" / "tritonserver"), f"--backend-directory={stub_dir}", f"--cache-directory={root}/caches"]
    return argv, env


def _drain(server: Server, seen_ready: threading.Event) -> None:
    assert server.process.stdout is not None
    for raw in server.process.stdout:
        line = raw.decode(errors="replace").rstrip("\n")
        server.lines.append(line)
        match = _READY.search(line)
        if match and not seen_ready.is_set():
            addresses = dict(item.partition("=")[::2] for item in match.group(1).split())
            server.http, server.grpc = addresses["http"], addresses["grpc"]
            seen_ready.set()
    seen_ready.set()


def is_ready(address: str) -> bool:
    """GET /v2/health/ready == 200."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        connection.request("GET", "/v2/health/ready")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def in_process_repository() -> Path:
    """A repository of add_sub copies with SEAWALL_IN_PROCESS set (gitignored, rewritten on every start)."""
    root = BENCH / "results" / "raw" / "models_inprocess"
    source = MODELS / "add_sub"
    config = (source / "config.pbtxt").read_text()
    for name, mode in IN_PROCESS_MODES.items():
        version = root / name / "1"
        version.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / "1" / "model.py", version / "model.py")
        text = config.replace('name: "add_sub"', f'name: "{name}"')
        text += f'parameters {{ key: "SEAWALL_IN_PROCESS" value {{ string_value: "{mode}" }} }}\n'
        (root / name / "config.pbtxt").write_text(text)
    return root


def start(
    name: str,
    timeout: float = 180,
    repository: Path | None = None,
    args: tuple[str, ...] = (),
    python: Path | None = None,
) -> Server:
    """Start server `name` on loopback with bench/models (or bench/mlserver), or Seawall or Triton with
    `repository` and extra flags `args`; return once it is ready. `python`: the interpreter whose installed
    Seawall runs (another checkout's virtual environment, for A/B runs); default this checkout's.

    Raises RuntimeError with the server's output when it exits or is not ready in time.
    """
    env, cwd = dict(os.environ), ROOT
    ports = {"http": _free_port(), "grpc": _free_port(), "metrics": _free_port()}
    repositories = [MODELS, in_process_repository()] if repository is None else [repository]
    if name == "seawall":
        argv = [str(python or ROOT / ".venv" / "bin" / "python"), "-m", "seawall"]
        cwd = python.parents[2] if python is not None else ROOT  # `-m` imports from the working directory first
        argv += [f"--model-repository={path}" for path in repositories]
        argv += ["--http-port=0", "--grpc-port=0", "--metrics-port=0", *args]
    elif name == "triton":
        argv, env = _triton_command()
        argv += [f"--model-repository={repositories[0]}", "--http-address=127.0.0.1", "--grpc-address=127.0.0.1"]
        argv += [f"--{key}-port={port}" for key, port in ports.items()]
        argv += list(args)
    elif name == "mlserver":
        argv, cwd = [str(ensure_mlserver()), "start", "."], MLSERVER_DIR
        env.update({"MLSERVER_HOST": "127.0.0.1", **{f"MLSERVER_{k.upper()}_PORT": str(p) for k, p in ports.items()}})
    else:
        raise ValueError(f"unknown server {name}")
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    server = Server(name, process)
    if name != "seawall":
        server.http, server.grpc = f"127.0.0.1:{ports['http']}", f"127.0.0.1:{ports['grpc']}"
    seen_ready = threading.Event()
    threading.Thread(target=_drain, args=(server, seen_ready), daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if server.http and is_ready(server.http):
            server.start_seconds = time.perf_counter() - started
            return server
        time.sleep(0.01)
    server.stop()
    tail = "\n".join(server.lines[-40:])
    raise RuntimeError(f"{name} not ready (exit {process.returncode}):\n{tail}")


def tree_pids(root: int) -> list[int]:
    """`root` and all its descendants (from /proc/*/stat parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included), in seconds.

    Raises:
        OSError: the process is gone.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15 of proc(5))


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of every process in the tree (threads included), in seconds."""
    total = 0.0
    for pid in tree_pids(root):
        try:
            total += cpu_seconds(pid)
        except OSError:
            continue
    return total


def thread_split(root: int) -> dict[str, list[float]]:
    """utime and stime (seconds) and voluntary context switches of the tree, by role: the server's main thread
    ("loop"), its other threads ("threads": in-process models, runtimes, offload), and every other process of
    the tree ("stubs")."""
    split = {role: [0.0, 0.0, 0.0] for role in ("loop", "threads", "stubs")}
    for pid in tree_pids(root):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            switches = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M)
            role = "stubs" if pid != root else "loop" if int(tid) == root else "threads"
            entry = split[role]
            entry[0] += int(fields[11]) / _TICK
            entry[1] += int(fields[12]) / _TICK
            entry[2] += int(switches.group(1)) if switches else 0
    return split


def tree_pss_bytes(root: int) -> int:
    """Proportional set size of the whole tree (shared pages split among the processes sharing them)."""
    total = 0
    for pid in tree_pids(root):
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        match = re.search(r"^Pss:\s+(\d+) kB", rollup, re.M)
        total += int(match.group(1)) * 1024 if match else 0
    return total


class PssSampler:
    """Samples the tree's PSS every `interval` seconds in a thread; `peak` is the largest sample."""

    def __init__(self, root: int, interval: float = 0.5) -> None:
        self._root, self._interval = root, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = 0

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, tree_pss_bytes(self._root))

    def __enter__(self) -> PssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
