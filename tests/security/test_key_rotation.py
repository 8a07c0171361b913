"""Restricted-API keys rotate without a restart (issue 9, finding 8): key files are re-read when they change and
on SIGHUP, for every listener that uses them; several keys may be valid at once; a bad file keeps the old keys;
every reload is audited without a value; key files others could read or replace are reported."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from seawall.options import GrpcOptions, HttpOptions, Options, RepositoryOptions, Restriction
from seawall.security.policy import ApiPolicy
from seawall.security.report import assess
from tests.harness import EXAMPLES, ServerProcess, http_call, http_request, start_seawall

OLD, NEW, NEWER = "old-secret-1", "new-secret-2", "newer-secret-3"
RESTART = "restart the server to change which APIs are restricted"
REFUSAL = {"error": "This API is restricted, expecting header 'admin-key'"}


def _write(path: Path, *values: str, category: str = "metadata") -> None:
    """Replace the key file the way an operator should: a private temporary file, then an atomic rename."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text("".join(f"{category}:admin-key={value}\n" for value in values))
    temporary.chmod(0o600)
    os.replace(temporary, path)


def _http_ok(server: ServerProcess, key: str) -> bool:
    status, _, reply = http_request(server, "GET", "/v2", None, {"admin-key": key}, timeout=10)
    assert status == 200 or (status, json.loads(reply)) == (403, REFUSAL), (status, reply)
    return status == 200


def _grpc_ok(server: ServerProcess, key: str) -> bool:
    client = grpcclient.InferenceServerClient(server.grpc)
    try:
        client.get_server_metadata(headers={"triton-grpc-protocol-admin-key": key})
        return True
    except InferenceServerException as exc:
        assert exc.status() == "StatusCode.UNAVAILABLE", exc
        assert exc.message() == "This protocol is restricted, expecting header 'triton-grpc-protocol-admin-key'"
        return False
    finally:
        client.close()


def _works(server: ServerProcess, key: str) -> bool:
    """Whether `key` opens both listeners (outside a reload: one file, both swapped together)."""
    http, grpc = _http_ok(server, key), _grpc_ok(server, key)
    assert http == grpc, (key, http, grpc)
    return http


def _state(server: ServerProcess, key: str) -> tuple[bool, bool]:
    """(HTTP, gRPC) acceptance of `key`; the two may differ while a reload lands between the two probes."""
    return _http_ok(server, key), _grpc_ok(server, key)


def _eventually(check: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def _reloads(server: ServerProcess) -> list[str]:
    return [line for line in server.lines if " AUDIT " in line and 'action="reload restricted-API keys"' in line]


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    _write(path, OLD)
    return path


@pytest.fixture
def server(keys: Path) -> Iterator[ServerProcess]:
    process = start_seawall(f"--http-restricted-api-file={keys}", f"--grpc-restricted-protocol-file={keys}")
    yield process
    process.stop()


def test_a_rewritten_key_file_rotates_the_keys_with_an_overlap(server: ServerProcess, keys: Path) -> None:
    assert _works(server, OLD) and not _works(server, NEW)
    _write(keys, OLD, NEW)  # both keys valid during the rotation
    assert _eventually(lambda: _state(server, NEW) == (True, True))
    assert _works(server, OLD)
    _write(keys, NEW)  # the old key is withdrawn
    assert _eventually(lambda: _state(server, OLD) == (False, False))
    assert _works(server, NEW) and not _works(server, "")
    reloads = _reloads(server)
    assert len(reloads) == 2, server.log()
    assert reloads[0].endswith(
        f'caller="key file change" action="reload restricted-API keys" target="{keys}" result=OK keys=2'
    )
    assert reloads[1].endswith("result=OK keys=1")
    assert not any(secret in server.log() for secret in (OLD, NEW))
    assert http_request(server, "GET", "/v2/health/ready")[0] == 200


def test_sighup_rereads_a_file_changed_in_place(server: ServerProcess, keys: Path) -> None:
    before = keys.stat()
    keys.write_text(f"metadata:admin-key={NEW[:-1]}X\n")  # same size, same inode
    os.utime(keys, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the same mtime: only SIGHUP notices
    time.sleep(2.5)  # longer than the watch's poll period
    assert _works(server, OLD)
    server.process.send_signal(signal.SIGHUP)
    assert _eventually(lambda: _state(server, f"{NEW[:-1]}X") == (True, True))
    assert not _works(server, OLD)
    assert _reloads(server)[-1].endswith(
        f'caller="SIGHUP" action="reload restricted-API keys" target="{keys}" result=OK keys=1'
    )
    assert server.process.poll() is None and http_request(server, "GET", "/v2/health/ready")[0] == 200


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (
            f"metadata:admin-key={NEW}\nnot a restriction {NEWER}\n",
            "{keys}:2: format is '<config name>:<setting>=<value>'",
        ),
        (f"metadata:admin-key={NEW}\nno-such-api:k={NEWER}\n", "unknown restricted api 'no-such-api'"),
        (
            "# all keys removed\n",
            "the file now restricts nothing instead of metadata; " + RESTART,
        ),
        (
            f"inference:admin-key={NEW}\n",
            "the file now restricts inference instead of metadata; " + RESTART,
        ),
        (b"metadata:admin-key=\xff\xfe\n", "cannot read {keys}: not UTF-8 text"),
        (None, "cannot read {keys}: No such file or directory"),
    ],
    ids=["malformed-line", "unknown-category", "empty", "other-category", "not-utf8", "removed"],
)
def test_a_bad_key_file_keeps_the_old_keys(
    server: ServerProcess, keys: Path, content: str | bytes | None, reason: str
) -> None:
    if content is None:
        keys.unlink()
    elif isinstance(content, bytes):
        keys.with_suffix(".tmp").write_bytes(content)
        os.replace(keys.with_suffix(".tmp"), keys)
    else:
        keys.with_suffix(".tmp").write_text(content)
        os.replace(keys.with_suffix(".tmp"), keys)
    expected = f"restricted-API keys from {keys} not reloaded, the previous keys stay: {reason.format(keys=keys)}"
    assert _eventually(lambda: any(expected in line for line in server.lines)), server.log()
    assert _works(server, OLD) and not _works(server, NEW)
    assert _reloads(server)[-1].endswith(f'target="{keys}" result=REFUSED keys=0')
    assert NEW not in server.log() and NEWER not in server.log()
    _write(keys, NEW)  # a good file afterwards is taken
    assert _eventually(lambda: _state(server, NEW) == (True, True))
    assert not _works(server, OLD)


def test_every_http_listener_uses_the_rotated_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    _write(keys, OLD, category="health")
    process = start_seawall(
        f"--http-restricted-api-file={keys}",
        "--allow-sagemaker=true",
        "--sagemaker-port=0",
        "--allow-vertex-ai=true",
        "--vertex-ai-port=0",
        "--vertex-ai-default-model=add_sub",
        env={"AIP_PREDICT_ROUTE": "/predict", "AIP_HEALTH_ROUTE": "/health"},
    )
    probes = [
        (process.http, "/v2/health/live"),
        (process.addresses["sagemaker"], "/ping"),
        (process.addresses["vertex"], "/health"),
    ]

    def statuses(key: str) -> list[int]:
        return [http_call(address, "GET", path, None, {"admin-key": key}, 10)[0] for address, path in probes]

    try:
        assert statuses(OLD) == [200, 200, 200] and statuses(NEW) == [403, 403, 403]
        _write(keys, NEW, category="health")
        assert _eventually(lambda: statuses(NEW) == [200, 200, 200]), process.log()
        assert statuses(OLD) == [403, 403, 403]
    finally:
        process.stop()


def test_command_line_and_file_keys_for_one_category_are_refused(tmp_path: Path) -> None:
    from tests.harness import run_seawall

    keys = tmp_path / "keys"
    _write(keys, OLD, NEW)  # two keys for one category in one file: accepted
    done = run_seawall(f"--model-repository={EXAMPLES}", f"--http-restricted-api-file={keys}", "--security-report")
    assert "multiple config groups" not in done.stderr
    done = run_seawall(
        f"--model-repository={EXAMPLES}",
        f"--http-restricted-api-file={keys}",
        f"--http-restricted-api=metadata:b={NEWER}",
    )
    assert done.returncode == 1
    assert done.stderr.strip().endswith("restricted api 'metadata' can not be specified in multiple config groups")


def test_every_key_of_a_category_is_compared_whichever_matches() -> None:
    first, second = (Restriction(("metadata",), key, value, source="/k") for key, value in (("a", OLD), ("b", NEW)))
    policy = ApiPolicy((first, second))
    asked: list[str] = []

    def lookup(name: str) -> str | None:
        asked.append(name)
        return {"a": OLD, "b": "wrong"}.get(name)

    policy.authorize("metadata", lookup)  # the first key matches; the second is still compared
    assert asked == ["a", "b"]


def _options(keys: Path) -> Options:
    restriction = Restriction(("metadata", "logging"), "admin-key", OLD, source=str(keys))
    return Options(
        repository=RepositoryOptions(paths=(str(keys.parent),)),
        http=HttpOptions(restricted=(restriction,)),
        grpc=GrpcOptions(allow=False),
    )


def test_key_files_others_can_read_or_replace_are_reported(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    keys = tmp_path / "keys"
    _write(keys, OLD)
    me = os.geteuid()

    def key_findings() -> list[tuple[str, str]]:
        return [(f.setting, f.risk) for f in assess(_options(keys), euid=me) if "-file=" in f.setting]

    assert key_findings() == []
    keys.chmod(0o644)
    assert key_findings() == [
        (
            f"--http-restricted-api-file={keys}",
            "the key file is readable or writable by group or others (mode 0644); chmod 600 it",
        )
    ]
    keys.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(keys)
    linked = [(f.setting, f.risk) for f in assess(_options(link), euid=me) if "-file=" in f.setting]
    assert linked == [
        (
            f"--http-restricted-api-file={link}",
            "the key file is a symbolic link: whoever can change the link chooses the keys",
        )
    ]
    tmp_path.chmod(0o777)
    assert key_findings()[0][1].startswith("the key file can be replaced: ")
    tmp_path.chmod(0o700)
    if me == 0:
        os.chown(keys, 4321, -1)
        assert key_findings()[0][1] == "the key file is owned by another user (uid 4321)"


def test_an_open_logging_api_next_to_restricted_ones_is_reported(tmp_path: Path) -> None:
    restricted = Restriction(("model-repository",), "k", "v")
    options = Options(
        repository=RepositoryOptions(paths=(str(tmp_path),)),
        http=HttpOptions(restricted=(restricted,)),
        grpc=GrpcOptions(restricted=(Restriction(("model-repository", "logging"), "k", "v"),)),
    )
    findings = [(f.setting, f.risk) for f in assess(options, euid=1000)]
    assert (
        "--http-restricted-api without logging",
        "any client can change log levels and formats while other APIs are restricted",
    ) in findings
    assert not any(setting.startswith("--grpc-restricted-protocol") for setting, _ in findings)
