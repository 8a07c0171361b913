"""Issue 9 finding 4: what model code in a python-backend stub can reach of the server. A probe model (written
here into a temporary repository) reports what it sees: environment, descriptors, NoNewPrivs/CapEff, the
restricted-API key file, the server's /proc/<pid>/environ|mem|cmdline and another model's directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from seawall.security import confinement
from tests.harness import ServerProcess, run_seawall, start_seawall

ENV_SECRET = "sekrit-env-value"
FILE_SECRET = "sekrit-file-value"
ARGV_SECRET = "sekrit-argv-value"
SECRET_VARIABLE = "SEAWALL_TEST_ADMIN_KEY"
REPOSITORY_KEY = {"admin-key": ENV_SECRET}

PROBE = """
import json, os, socket
import numpy as np
import triton_python_backend_utils as pb_utils

KEY_FILE = {key_file!r}
OTHER_MODEL = {other_model!r}


def attempt(action):
    try:
        return "ok:" + str(action())
    except OSError as exc:
        return "denied:" + type(exc).__name__


def read(path):
    with open(path, "rb") as file:
        return file.read(1 << 16).decode("latin-1")


def open_mem(pid):
    with open(f"/proc/{{pid}}/mem", "rb"):
        return "opened"


def write_other():
    with open(os.path.join(OTHER_MODEL, "planted.txt"), "w") as file:
        file.write("x")
    return "written"


def descriptors():
    found = {{}}
    for name in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{{name}}")
        except OSError:
            continue  # the listing's own descriptor
        if link.startswith("socket:"):
            with socket.socket(fileno=os.dup(int(name))) as sock:
                link += f" family={{int(sock.family)}}"
        found[int(name)] = link
    return found


def status():
    fields = {{}}
    with open("/proc/self/status") as file:
        for line in file:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return {{key: fields.get(key) for key in ("NoNewPrivs", "CapEff", "Uid", "Gid", "Groups")}}


def probe():
    ppid = os.getppid()
    return {{
        "environ": dict(os.environ),
        "fds": descriptors(),
        "status": status(),
        "key_file": attempt(lambda: read(KEY_FILE)),
        "parent_environ": attempt(lambda: read(f"/proc/{{ppid}}/environ")),
        "parent_cmdline": attempt(lambda: read(f"/proc/{{ppid}}/cmdline")),
        "parent_mem": attempt(lambda: open_mem(ppid)),
        "self_environ": attempt(lambda: read("/proc/self/environ")),
        "self_cmdline": attempt(lambda: read("/proc/self/cmdline")),
        "write_other": attempt(write_other),
    }}


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            if x[0] == 13:
                os._exit(3)  # a crash: the instance restarts
            report = json.dumps(probe())
            out = pb_utils.Tensor("REPORT", np.array([report.encode()], dtype=np.object_))
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
"""

CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "X" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [ {{ name: "REPORT" data_type: TYPE_STRING dims: [ 1 ] }} ]
instance_group [ {{ kind: KIND_CPU count: {count} }} ]
"""


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Path]:
    """A world-readable repository (the model user must read it) and a root-only 0600 key file."""
    root = Path(tempfile.mkdtemp(prefix="seawall-isolation-"))
    root.chmod(0o755)
    repository = root / "models"
    key_file = root / "keys"
    key_file.write_text(f"trace,logging:file-key={FILE_SECRET}\n")
    key_file.chmod(0o600)
    for name in ("probe", "other", "solo"):
        version = repository / name / "1"
        version.mkdir(parents=True)
        other = str(repository / ("other" if name == "probe" else "probe"))
        (version / "model.py").write_text(PROBE.format(key_file=str(key_file), other_model=other))
        count = 1 if name == "solo" else 2  # two stubs of a model: neither sees the other's descriptors
        (repository / name / "config.pbtxt").write_text(CONFIG.format(name=name, count=count))
    for path in (root, *root.rglob("*")):
        if path != key_file:
            path.chmod(0o755 if path.is_dir() else 0o644)
    yield root
    shutil.rmtree(root)


def _start(sandbox: Path, *extra: str) -> ServerProcess:
    return start_seawall(
        f"--http-restricted-api-env={SECRET_VARIABLE}",
        f"--http-restricted-api-file={sandbox / 'keys'}",
        f"--grpc-restricted-protocol=shared-memory:argv-key={ARGV_SECRET}",
        "--trace-config=triton,file=" + str(sandbox / "trace.json"),
        "--model-env=PASSED_THROUGH",
        "--model-env=SET_BY_OPERATOR=42",
        *extra,
        repository=sandbox / "models",
        env={
            SECRET_VARIABLE: f"model-repository,statistics:admin-key={ENV_SECRET}",
            "PASSED_THROUGH": "yes",
            "NOT_ALLOWED": "no",
            "AWS_SECRET_ACCESS_KEY": "cloud-secret",
            "LC_ALL": "C.UTF-8",
        },  # fmt: skip
    )


def _probe(server: ServerProcess, value: int = 0, model: str = "probe") -> dict[str, object]:
    client = httpclient.InferenceServerClient(server.http)
    try:
        tensor = httpclient.InferInput("X", [1], "INT32")
        tensor.set_data_from_numpy(np.array([value], dtype=np.int32))
        result = client.infer(model, [tensor])
        report = result.as_numpy("REPORT")
        assert report is not None
        return json.loads(report[0])  # type: ignore[no-any-return]
    finally:
        client.close()


@pytest.fixture(scope="module")
def as_root(sandbox: Path) -> Iterator[ServerProcess]:
    server = _start(sandbox)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def as_nobody(sandbox: Path) -> Iterator[ServerProcess]:
    server = _start(sandbox, "--model-user=nobody")
    yield server
    server.stop()


def _assert_confined_without_user(found: dict[str, object], sandbox: Path) -> None:
    environ = found["environ"]
    assert isinstance(environ, dict)
    assert SECRET_VARIABLE not in environ
    assert not any(secret in value for value in environ.values() for secret in (ENV_SECRET, "cloud-secret"))
    assert "NOT_ALLOWED" not in environ and "AWS_SECRET_ACCESS_KEY" not in environ
    assert environ["PASSED_THROUGH"] == "yes" and environ["SET_BY_OPERATOR"] == "42"
    assert environ["LC_ALL"] == "C.UTF-8"
    # numpy's BLAS on one thread unless the operator chose (template.STUB_DEFAULTS)
    assert environ["OPENBLAS_NUM_THREADS"] == os.environ.get("OPENBLAS_NUM_THREADS", "1")
    fds = found["fds"]
    assert isinstance(fds, dict)
    # stdin, stdout, stderr, the stub's two channel sockets (AF_UNIX = 1) and its own regions (mmap keeps a dup)
    assert sorted(int(fd) for fd in fds)[:3] == [0, 1, 2]
    extra = [link for fd, link in fds.items() if int(fd) > 2]
    sockets = [link for link in extra if link.startswith("socket:")]
    assert len(sockets) == 2 and all(link.endswith("family=1") for link in sockets), fds
    regions = {"/memfd:seawall-python-backend (deleted)", "/memfd:seawall-python-backend-inputs (deleted)"}
    assert all(link in regions for link in extra if link not in sockets), fds
    assert not any(str(sandbox) in link for link in fds.values())
    status = found["status"]
    assert isinstance(status, dict)
    assert status["NoNewPrivs"] == "1"
    for name in ("parent_environ", "parent_cmdline"):  # wiped even where they can be read
        text = str(found[name])
        assert ENV_SECRET not in text and ARGV_SECRET not in text, name


def test_stub_environment_descriptors_and_no_new_privs_as_root(as_root: ServerProcess, sandbox: Path) -> None:
    found = _probe(as_root)
    _assert_confined_without_user(found, sandbox)
    assert (
        "security: --model-user: not set: python-backend model code runs as root with every capability" in as_root.log()
    )
    assert as_root.is_ready()


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_the_operators_blas_threads_win_over_the_stub_default(sandbox: Path, start: str) -> None:
    server = _start(sandbox, "--model-env=OPENBLAS_NUM_THREADS=3", f"--python-stub-start={start}")
    try:
        environ = _probe(server)["environ"]
        assert isinstance(environ, dict)
        assert environ["OPENBLAS_NUM_THREADS"] == "3"
    finally:
        server.stop()


def test_model_user_cannot_read_secrets_or_the_server(as_nobody: ServerProcess, sandbox: Path) -> None:
    (sandbox / "models" / "other" / "planted.txt").unlink(missing_ok=True)  # root stubs may write it
    found = _probe(as_nobody)
    _assert_confined_without_user(found, sandbox)
    status = found["status"]
    assert isinstance(status, dict)
    assert status["Uid"] == "65534\t65534\t65534\t65534" and status["Gid"].split()[0] == "65534"
    assert status["Groups"] == "" and status["CapEff"] == "0000000000000000"
    assert found["key_file"] == "denied:PermissionError"
    assert found["parent_environ"] == "denied:PermissionError"
    assert found["parent_mem"] == "denied:PermissionError"
    assert found["write_other"] == "denied:PermissionError"
    assert str(found["parent_cmdline"]).startswith("ok:")  # Linux shows every cmdline to every user (wiped above)
    assert found["environ"]["HOME"] == "/nonexistent" and found["environ"]["USER"] == "nobody"  # type: ignore[index]
    assert not (sandbox / "models" / "other" / "planted.txt").exists()
    assert "--model-user: not set" not in as_nobody.log()
    assert as_nobody.is_ready()


def test_model_user_stub_restarts_after_a_crash(as_nobody: ServerProcess) -> None:
    before = _probe(as_nobody, model="solo")
    with pytest.raises(InferenceServerException):
        _probe(as_nobody, 13, model="solo")  # its only stub exits
    deadline = time.monotonic() + 60
    while "model instance 'solo_0_0': stub process died" not in as_nobody.log():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    while True:  # the next request waits for the new stub
        try:
            found = _probe(as_nobody, model="solo")
            break
        except InferenceServerException:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert found["status"] == before["status"] and found["status"]["Uid"].split()[0] == "65534"  # type: ignore[index]
    assert found["status"]["NoNewPrivs"] == "1"  # type: ignore[index]
    assert as_nobody.is_ready()


def _write_model(repository: Path, name: str, extra_config: str = "") -> Path:
    version = repository / name / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(PROBE.format(key_file="/nonexistent", other_model="/nonexistent"))
    (repository / name / "config.pbtxt").write_text(CONFIG.format(name=name, count=1) + extra_config)
    for path in (repository, *repository.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return version / "model.py"


def test_model_user_refuses_in_process_models(sandbox: Path) -> None:
    repository = sandbox / "in_process"
    _write_model(repository, "inproc", 'parameters { key: "SEAWALL_IN_PROCESS" value { string_value: "true" } }\n')
    result = run_seawall(f"--model-repository={repository}", "--model-user=nobody", "--http-port=0", "--grpc-port=0")
    assert result.returncode == 1
    assert (
        "model 'inproc' asks to run in the server process (parameter SEAWALL_IN_PROCESS), but --model-user is set: "
        "model code runs only in stub processes, as that user"
    ) in result.stdout + result.stderr


def test_model_file_the_model_user_cannot_read_is_a_clear_load_error(sandbox: Path) -> None:
    repository = sandbox / "unreadable"
    model_file = _write_model(repository, "private")
    model_file.chmod(0o600)
    result = run_seawall(f"--model-repository={repository}", "--model-user=nobody", "--http-port=0", "--grpc-port=0")
    assert result.returncode == 1
    assert (
        "failed to load model 'private': auto-complete of model 'private' failed: the model user (uid 65534) "
        f"cannot read {model_file.relative_to(repository)}"
    ) in result.stdout


def test_security_report_flags_root_model_code_and_secrets_on_argv(sandbox: Path) -> None:
    repository = f"--model-repository={sandbox / 'models'}"
    risky = run_seawall("--security-report", repository, "--http-restricted-api=inference:k=v")
    assert risky.returncode == 1
    assert (
        "  --model-user: not set: python-backend model code runs as root with every capability (it can read every "
        "secret file and the server's memory); give stubs an unprivileged user (stubs still share the kernel, network "
        "and world-readable files with the server: no seccomp, namespaces or cgroups)"
    ) in risky.stdout.splitlines()
    assert (
        "  --http-restricted-api: a secret on the command line: other local users and every model read it in ps or "
        "/proc/<pid>/cmdline before the server wipes it at start-up; use the -file or -env form"
    ) in risky.stdout.splitlines()
    confined = run_seawall("--security-report", repository, "--model-user=nobody")
    assert "--model-user" not in confined.stdout and "--http-restricted-api" not in confined.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model-user=root"], 'Bad option: "--model-user".\nthe model user must not be root (uid 0 or gid 0)'),
        (["--model-user=0:65534"], 'Bad option: "--model-user".\nthe model user must not be root (uid 0 or gid 0)'),
        (["--model-user=no-such-user-here"], 'Bad option: "--model-user".\nno such user: no-such-user-here'),
        (["--model-env=1BAD"], "Bad option: \"--model-env\".\n'1BAD' is not an environment variable name"),
        (
            [f"--http-restricted-api-env={SECRET_VARIABLE}", f"--model-env={SECRET_VARIABLE}"],
            f'Bad option: "--model-env".\n{SECRET_VARIABLE} holds a restricted-API secret: model code never gets it',
        ),
    ],
)
def test_bad_model_isolation_flags_are_refused(sandbox: Path, flags: list[str], message: str) -> None:
    result = run_seawall(f"--model-repository={sandbox / 'models'}", *flags, env={SECRET_VARIABLE: "inference:k=v"})
    assert result.returncode == 1
    assert result.stderr.strip() == message


def test_in_process_models_see_no_secret_in_the_servers_environment(sandbox: Path) -> None:
    """In-process model code is the server: no isolation, but the secrets are gone from its environment and
    its /proc/self/environ and cmdline all the same."""
    repository = sandbox / "in_process_root"
    _write_model(repository, "probe", 'parameters { key: "SEAWALL_IN_PROCESS" value { string_value: "true" } }\n')
    server = start_seawall(
        f"--http-restricted-api-env={SECRET_VARIABLE}",
        f"--grpc-restricted-protocol=shared-memory:argv-key={ARGV_SECRET}",
        "--http-restricted-api",
        "trace:k=second-argv-secret",
        repository=repository,
        env={SECRET_VARIABLE: f"model-repository,statistics:admin-key={ENV_SECRET}"},
    )
    try:
        found = _probe(server)
        assert SECRET_VARIABLE not in found["environ"]  # type: ignore[operator]
        for name in ("self_environ", "self_cmdline"):
            text = str(found[name])
            assert text.startswith("ok:") and ENV_SECRET not in text and ARGV_SECRET not in text, name
            assert "second-argv-secret" not in text, name
        wiped = "*" * len(f"shared-memory:argv-key={ARGV_SECRET}")
        assert f"\0--grpc-restricted-protocol={wiped}\0" in str(found["self_cmdline"])
        assert "\0--http-restricted-api\0" + "*" * len("trace:k=second-argv-secret") in str(found["self_cmdline"])
        assert server.is_ready()
    finally:
        server.stop()


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv")
@pytest.mark.parametrize("non_dumpable", [False, True])
def test_non_dumpable_server_hides_environ_and_mem_from_its_own_uid(non_dumpable: bool) -> None:
    """What a stub of the server's own uid (no --model-user, server not root) meets: processes of one uid without
    capabilities, one of them made non-dumpable as the server makes itself at start-up."""
    no_caps = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"]
    hardening = "confinement.make_non_dumpable()" if non_dumpable else "True"
    code = f"import time\nfrom seawall.security import confinement\nassert {hardening}\nprint('ready', flush=True)\n"
    code += "time.sleep(30)"
    with subprocess.Popen([*no_caps, sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as target:
        try:
            assert target.stdout is not None and target.stdout.readline() == "ready\n"
            for name in ("environ", "mem"):  # mem: opened, then reading address 0 fails; or not opened at all
                read = subprocess.run([*no_caps, "head", "-c", "1", f"/proc/{target.pid}/{name}"], capture_output=True)
                assert (b"Permission denied" in read.stderr) == non_dumpable, (name, read)
        finally:
            target.kill()


def test_a_python_installation_the_model_user_cannot_read_is_named(sandbox: Path, as_nobody: ServerProcess) -> None:
    nobody = confinement.resolve_model_user("nobody")
    hidden = sandbox / "home"
    (hidden / "lib" / "python3").mkdir(parents=True)
    (hidden / "lib").chmod(0o755)
    (hidden / "lib" / "python3").chmod(0o755)
    hidden.chmod(0o700)  # like a pyenv under /root
    assert confinement.unreadable_path(nobody, [str(hidden / "lib" / "python3")]) == str(hidden)
    hidden.chmod(0o711)  # traversable: enough for the directories above
    assert confinement.unreadable_path(nobody, [str(hidden / "lib" / "python3")]) is None
    (hidden / "lib" / "python3").chmod(0o711)  # the installation itself must be listable
    assert confinement.unreadable_path(nobody, [str(hidden / "lib" / "python3")]) == str(hidden / "lib" / "python3")
    paths = sorted({sysconfig.get_paths()[name] for name in ("stdlib", "platstdlib", "purelib", "platlib")})
    expected = confinement.unreadable_path(nobody, paths)  # /root/.pyenv/... on the CI machine: /root is 0700
    warning = f"--model-user: nobody cannot read {expected}, part of the Python installation: model code can import"
    assert (warning in as_nobody.log()) == (expected is not None)


def test_stub_environment_is_an_allowlist() -> None:
    environ = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LC_ALL": "C",
        "OMP_NUM_THREADS": "2",
        "MKL_NUM_THREADS": "2",
        "PYTHONPATH": "/srv/lib",
        "AWS_SECRET_ACCESS_KEY": "x",
        "HTTPS_PROXY": "http://user:pw@proxy",
        "ADMIN_KEY": "inference:k=v",
        "WANTED": "w",
    }
    chosen = dict(confinement.stub_environment(environ, ["WANTED", "ABSENT", "SET=1=2"], {"ADMIN_KEY"}, None))
    assert chosen == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LC_ALL": "C",
        "OMP_NUM_THREADS": "2",
        "MKL_NUM_THREADS": "2",
        "PYTHONPATH": "/srv/lib",
        "WANTED": "w",
        "SET": "1=2",
    }
    nobody = confinement.resolve_model_user("nobody")
    as_nobody = dict(confinement.stub_environment(environ, [], set(), nobody))
    assert (as_nobody["HOME"], as_nobody["USER"], as_nobody["LOGNAME"]) == (nobody.home, "nobody", "nobody")
    assert confinement.resolve_model_user("65534") == nobody
    assert confinement.resolve_model_user("65534:65534") == nobody
