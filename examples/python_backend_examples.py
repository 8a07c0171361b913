"""Runs NVIDIA's python_backend `examples/` unchanged against Seawall and prints a pass/fail table per example.

    python examples/python_backend_examples.py --python-backend=PATH [--only=add_sub,bls] [--keep]

PATH is a python_backend checkout: a work tree, or a bare git directory (its `examples/` is exported with
`git archive HEAD examples`). Nothing of it is copied into this repository: each example's model.py and
config.pbtxt are laid out in a temporary model repository as its README says, Seawall serves it, and the
example's own client runs as it is. The clients talk to localhost:8000/8001/8002, so each example runs in a
network namespace of its own when `unshare -n` works (root), else on those ports of this machine (they must be
free). torch and jax, which the pytorch, bls and jax examples import, are installed into this interpreter's
environment first (CPU builds only: a local `+cpu` wheel, else PyTorch's CPU index); an example whose package
cannot be installed is reported as skipped with the reason. `make examples PYTHON_BACKEND=PATH` runs this.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORTS = ("--http-port=8000", "--grpc-port=8001", "--metrics-port=8002")
CLIENT_TIMEOUT_S = 300
START_TIMEOUT_S = 180


@dataclass(frozen=True)
class Example:
    """One example: models as (name, model file, config file or None: auto-completed), clients, packages."""

    name: str
    models: tuple[tuple[str, str, str | None], ...]
    clients: tuple[str, ...]
    packages: tuple[str, ...] = ()


_ADD_SUB = ("add_sub", "add_sub/model.py", "add_sub/config.pbtxt")
_PYTORCH = ("pytorch", "pytorch/model.py", "pytorch/config.pbtxt")
_SQUARE = ("square_int32", "decoupled/square_model.py", "decoupled/square_config.pbtxt")
EXAMPLES = (
    Example("add_sub", (_ADD_SUB,), ("add_sub/client.py",)),
    Example(
        "auto_complete",
        (
            ("nobatch_auto_complete", "auto_complete/nobatch_model.py", None),
            ("batch_auto_complete", "auto_complete/batch_model.py", None),
        ),
        ("auto_complete/client.py",),
    ),
    Example(
        "bls",
        (
            _ADD_SUB,
            _PYTORCH,
            ("bls_sync", "bls/sync_model.py", "bls/sync_config.pbtxt"),
            ("bls_async", "bls/async_model.py", "bls/async_config.pbtxt"),
        ),
        ("bls/sync_client.py", "bls/async_client.py"),
        ("torch",),
    ),
    Example(
        "bls_decoupled",
        (
            _SQUARE,
            ("bls_decoupled_sync", "bls_decoupled/sync_model.py", "bls_decoupled/sync_config.pbtxt"),
            ("bls_decoupled_async", "bls_decoupled/async_model.py", "bls_decoupled/async_config.pbtxt"),
        ),
        ("bls_decoupled/sync_client.py", "bls_decoupled/async_client.py"),
    ),
    Example(
        "custom_metrics",
        (("custom_metrics", "custom_metrics/model.py", "custom_metrics/config.pbtxt"),),
        ("custom_metrics/client.py",),
    ),
    Example(
        "decoupled",
        (("repeat_int32", "decoupled/repeat_model.py", "decoupled/repeat_config.pbtxt"), _SQUARE),
        ("decoupled/repeat_client.py", "decoupled/square_client.py"),
    ),
    Example("jax", (("jax", "jax/model.py", "jax/config.pbtxt"),), ("jax/client.py",), ("jax",)),
    Example("pytorch", (_PYTORCH,), ("pytorch/client.py",), ("torch",)),
)


@dataclass
class Result:
    example: str
    status: str  # PASS, FAIL, SKIP
    detail: str = ""
    seconds: float = 0.0
    log: list[str] = field(default_factory=list)


def export_examples(checkout: Path, into: Path) -> Path:
    """The `examples/` directory of `checkout` (a work tree, or a bare git directory exported with git archive)."""
    if (checkout / "examples").is_dir():
        return checkout / "examples"
    if (checkout / "HEAD").is_file() and (checkout / "objects").is_dir():
        archive = subprocess.run(
            ["git", f"--git-dir={checkout}", "archive", "HEAD", "examples"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
        return into / "examples"
    raise SystemExit(f"{checkout} is neither a python_backend work tree nor a bare git directory")


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", *args], capture_output=True, text=True, timeout=1800
    )


def install(package: str) -> str:
    """Install `package` (CPU build) into this environment; "" when it imports, else why not."""
    module = {"torch": "torch", "jax": "jax"}[package]
    probe = [sys.executable, "-c", f"import {module}"]
    if subprocess.run(probe, capture_output=True).returncode == 0:
        return ""
    if package == "torch":
        # a local +cpu wheel (pip's find-links) with its dependencies from the index; else PyTorch's CPU index;
        # never the CUDA build the default index has (several GB)
        local = _pip("--no-index", "--no-deps", "torch")
        if local.returncode == 0:
            version = subprocess.run(
                [sys.executable, "-c", "import importlib.metadata as m; print(m.version('torch'))"],
                capture_output=True,
                text=True,
            ).stdout.strip()
            _pip(f"torch=={version}")
            if subprocess.run(probe, capture_output=True).returncode == 0:
                return ""
        attempts = [("--index-url", "https://download.pytorch.org/whl/cpu", "torch")]
    else:
        attempts = [("jax[cpu]",), ("jax", "jaxlib")]
    errors = []
    for attempt in attempts:
        done = _pip(*attempt)
        if done.returncode == 0 and subprocess.run(probe, capture_output=True).returncode == 0:
            return ""
        lines = (done.stderr or done.stdout).strip().splitlines()
        errors.append(lines[-1] if lines else f"exit {done.returncode}")
    return f"cannot install a CPU build of {package}: " + "; ".join(errors)


def lay_out(example: Example, sources: Path, repository: Path) -> None:
    """The model repository the example's README describes."""
    for name, model_file, config in example.models:
        version = repository / name / "1"
        version.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources / model_file, version / "model.py")
        if config is not None:
            shutil.copyfile(sources / config, repository / name / "config.pbtxt")


def _ready() -> bool:
    try:
        with urllib.request.urlopen("http://localhost:8000/v2/health/ready", timeout=5) as reply:
            return bool(reply.status == 200)
    except Exception:
        return False


def serve_and_run(example: Example, sources: Path, work: Path) -> Result:
    """Start Seawall on the example's repository (ports 8000-8002), run its clients, stop it."""
    repository = work / example.name / "models"
    lay_out(example, sources, repository)
    log_path = work / example.name / "seawall.log"
    started = time.monotonic()
    argv = [sys.executable, "-m", "seawall", f"--model-repository={repository}", *PORTS]
    with open(log_path, "w") as log:
        server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready():
            if server.poll() is not None or time.monotonic() > deadline:
                return Result(example.name, "FAIL", "Seawall did not start: " + _last_error(log_path), 0.0)
            time.sleep(0.2)
        for client in example.clients:
            try:
                done = subprocess.run(
                    [sys.executable, str(sources / client)],
                    capture_output=True,
                    text=True,
                    timeout=CLIENT_TIMEOUT_S,
                    cwd=work / example.name,
                )
            except subprocess.TimeoutExpired:
                return Result(example.name, "FAIL", f"{client}: no answer in {CLIENT_TIMEOUT_S} s", _since(started))
            if done.returncode != 0:
                output = (done.stdout + done.stderr).strip().splitlines()
                detail = output[-1] if output else f"exit {done.returncode}"
                return Result(example.name, "FAIL", f"{client}: {detail}", _since(started), output[-20:])
        return Result(example.name, "PASS", ", ".join(example.clients), _since(started))
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _since(started: float) -> float:
    return round(time.monotonic() - started, 1)


def _last_error(log_path: Path) -> str:
    """Why the server did not start: the first model that failed to load, else the last error line."""
    lines = log_path.read_text(errors="replace").splitlines()
    for line in lines:
        if "failed to load '" in line:
            return line.split("] ", 1)[-1][:300]
    errors = [line for line in lines if line.startswith("E") or "error" in line.lower()]
    return (errors or lines or ["(no output)"])[-1][:300]


def run_isolated(example: Example, sources: Path, work: Path) -> Result:
    """`serve_and_run` in a network namespace of its own (localhost:8000 is then ours), when `unshare` works."""
    inner = [sys.executable, __file__, "--inner", example.name, f"--sources={sources}", f"--work={work}"]
    unshare = shutil.which("unshare")
    if unshare is not None:
        script = 'ip link set lo up 2>/dev/null || true; exec "$@"'
        probe = subprocess.run([unshare, "-n", "true"], capture_output=True)
        if probe.returncode == 0:
            done = subprocess.run([unshare, "-n", "sh", "-c", script, "sh", *inner], capture_output=True, text=True)
            try:
                return Result(**json.loads(done.stdout.strip().splitlines()[-1]))
            except (IndexError, ValueError, TypeError):
                return Result(example.name, "FAIL", f"runner failed: {done.stderr.strip()[-300:]}")
    return serve_and_run(example, sources, work)


def table(results: list[Result]) -> str:
    width = max(len(r.example) for r in results)
    rows = [f"{'example'.ljust(width)}  result  seconds  detail", f"{'-' * width}  ------  -------  ------"]
    for r in results:
        rows.append(f"{r.example.ljust(width)}  {r.status.ljust(6)}  {str(r.seconds).rjust(7)}  {r.detail}")
    passed = sum(r.status == "PASS" for r in results)
    rows.append(f"{passed}/{len(results)} passed")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--python-backend", type=Path, help="python_backend work tree or bare git directory")
    parser.add_argument("--only", default="", help="comma-separated example names (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary repositories and logs")
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    parser.add_argument("--sources", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    by_name = {example.name: example for example in EXAMPLES}
    if args.inner:
        result = serve_and_run(by_name[args.inner], args.sources, args.work)
        print(json.dumps(result.__dict__))
        return 0
    if args.python_backend is None:
        print(
            "python_backend examples: skipped (give a checkout: make examples PYTHON_BACKEND=/path/to/python_backend)"
        )
        return 0
    chosen = [by_name[name] for name in args.only.split(",") if name] if args.only else list(EXAMPLES)
    work = Path(tempfile.mkdtemp(prefix="seawall-examples-"))
    try:
        sources = export_examples(args.python_backend.resolve(), work)
        missing = {package: install(package) for package in sorted({p for e in chosen for p in e.packages})}
        results = []
        for example in chosen:
            reasons = [missing[p] for p in example.packages if missing[p]]
            if reasons:
                results.append(Result(example.name, "SKIP", "; ".join(reasons)))
                continue
            print(f"running {example.name} ...", flush=True)
            result = run_isolated(example, sources, work)
            results.append(result)
            for line in result.log:
                print(f"  {example.name} | {line}")
        print(table(results))
        return 0 if all(r.status != "FAIL" for r in results) else 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
