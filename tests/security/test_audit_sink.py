"""Audit lines cannot be switched off or forged: their own sink, untouched by the logging extension (issue 9,
finding 5), and every field quoted, so a client certificate subject cannot add fields or lines (issue 9, Also)."""

from __future__ import annotations

import http.client
import json
import logging
import re
import ssl
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
import trustme
from tritonclient.utils import InferenceServerException

import seawall
from seawall.errors import UnsupportedError
from seawall.options import Options, RepositoryOptions
from tests.harness import EXAMPLES, ServerProcess, http_request, run_seawall, start_seawall

_QUOTED = r'"(?:[^"\\]|\\.)*"'
#: The one shape of an audit line; a forged field or a second line cannot match it.
AUDIT = re.compile(
    rf"^\S+ AUDIT \d+\] caller=(?P<caller>{_QUOTED}) action=(?P<action>{_QUOTED}) "
    rf"target=(?P<target>{_QUOTED}) result=(?P<result>[A-Z_]+)(?P<counts>( [a-z_]+=\d+)*)$"
)
SILENCE = {"log_info": False, "log_warning": False, "log_error": False, "log_verbose_level": 0}
#: A certificate subject that tries to end the caller field, add a result and start a new line.
HOSTILE = 'evil" result=OK action="load'
HOSTILE_UNIT = "ops\nI1204 forged] caller=in-process result=OK"


def _fields(line: str) -> dict[str, str]:
    match = AUDIT.match(line)
    assert match is not None, line
    fields = {name: json.loads(match.group(name)) for name in ("caller", "action", "target")}
    return {**fields, "result": match.group("result")}


def _audit(server: ServerProcess, count: int) -> list[dict[str, str]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [line for line in server.lines if " AUDIT " in line]
        if len(lines) >= count:
            break
        time.sleep(0.05)
    return [_fields(line) for line in server.lines if " AUDIT " in line]


def _post(server: ServerProcess, path: str, body: object) -> tuple[int, object]:
    status, _, reply = http_request(server, "POST", path, json.dumps(body).encode(), {}, timeout=10)
    return status, json.loads(reply) if reply else None


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = start_seawall("--model-control-mode=explicit", "--allow-unrestricted-model-repository=true")
    yield process
    process.stop()


def test_http_clients_cannot_silence_or_reformat_the_audit_log(server: ServerProcess) -> None:
    before = len(_audit(server, 0))
    status, settings = _post(server, "/v2/logging", {**SILENCE, "log_format": "ISO8601"})
    assert status == 200 and isinstance(settings, dict) and settings["log_info"] is False
    assert _post(server, "/v2/trace/setting", {"trace_rate": "5"})[0] == 200
    assert _post(server, "/v2/repository/models/no_such_model/load", {})[0] == 404
    assert _post(server, "/v2/repository/models/no_such_model/unload", {})[0] == 200
    assert _post(server, "/v2/systemsharedmemory/region/r/register", {"key": "/k", "byte_size": 8})[0] == 501
    lines = _audit(server, before + 5)[before:]
    assert [(f["action"], f["target"], f["result"]) for f in lines] == [
        ("update log settings", "log_error,log_format,log_info,log_verbose_level,log_warning", "OK"),
        ("update trace settings", "<global>", "OK"),
        ("load", "no_such_model", "NOT_FOUND"),
        ("unload", "no_such_model", "OK"),
        ("register system shared memory", "r", "UNSUPPORTED"),
    ]
    assert all(f["caller"].startswith("peer=127.0.0.1:") for f in lines)
    assert _post(server, "/v2/logging", {"log_info": True, "log_warning": True, "log_error": True})[0] == 200
    assert http_request(server, "GET", "/v2/health/ready", b"", {})[0] == 200
    # that restore is audited too: wait for its line, or the next test may count it as one of its own
    assert len(_audit(server, before + 6)) == before + 6


def test_grpc_clients_cannot_silence_the_audit_log(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc)
    try:
        before = len(_audit(server, 0))
        client.update_log_settings({**SILENCE, "log_format": "default"})
        client.update_trace_settings(settings={"trace_rate": "7"})
        with pytest.raises(InferenceServerException):
            client.load_model("no_such_model")
        client.unload_model("no_such_model")
        lines = _audit(server, before + 4)[before:]
        assert [(f["action"], f["result"]) for f in lines] == [
            ("update log settings", "OK"),
            ("update trace settings", "OK"),
            ("load", "NOT_FOUND"),
            ("unload", "OK"),
        ]
        assert all(f["caller"].startswith("peer=ipv4:127.0.0.1:") for f in lines)
        client.update_log_settings({"log_info": True, "log_warning": True, "log_error": True})
        assert client.is_server_ready()
    finally:
        client.close()


def test_the_audit_log_file_is_private_and_separate(tmp_path: Path) -> None:
    audit_file = tmp_path / "audit.log"
    process = start_seawall(f"--audit-log-file={audit_file}")
    try:
        assert _post(process, "/v2/logging", SILENCE)[0] == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not audit_file.read_text():
            time.sleep(0.05)
    finally:
        process.stop()
    assert stat.S_IMODE(audit_file.stat().st_mode) == 0o600
    lines = audit_file.read_text().splitlines()
    assert [_fields(line)["action"] for line in lines] == ["update log settings"]
    assert not any(" AUDIT " in line for line in process.lines)


def test_the_audit_log_file_is_never_opened_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    link = tmp_path / "audit.log"
    link.symlink_to(target)
    done = run_seawall(f"--model-repository={EXAMPLES}", f"--audit-log-file={link}", "--http-port=0")
    assert done.returncode == 1
    assert "error: cannot open --log-file or --audit-log-file:" in done.stderr
    assert target.read_text() == ""


async def test_a_caller_cannot_forge_audit_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="seawall.audit")
    async with seawall.open_server(Options(repository=RepositoryOptions(paths=(str(EXAMPLES),)))) as server:
        with pytest.raises(UnsupportedError):
            server.update_log_settings({"log_file": "x"}, caller=f"peer=p subject={HOSTILE_UNIT}")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "seawall.audit"]
    assert "\n" not in line
    fields = _fields(f"t AUDIT 1] {line}")
    assert fields == {
        "caller": f"peer=p subject={HOSTILE_UNIT}",
        "action": "update log settings",
        "target": "log_file",
        "result": "UNSUPPORTED",
    }


# ------------------------------------------------------------------------------------- mutual TLS


@pytest.fixture(scope="module")
def hostile_pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    authority = trustme.CA()
    server_cert = authority.issue_cert("127.0.0.1", "localhost")
    client = authority.issue_cert("client@example.test", common_name=HOSTILE, organization_unit_name="a\nb")
    blobs = {
        "ca": authority.cert_pem,
        "server_cert": server_cert.cert_chain_pems[0],
        "server_key": server_cert.private_key_pem,
        "client_cert": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
    }
    paths = {name: folder / f"{name}.pem" for name in blobs}
    for name, blob in blobs.items():
        blob.write_to_path(str(paths[name]))
    return paths


def test_a_certificate_subject_cannot_forge_audit_fields(hostile_pki: dict[str, Path]) -> None:
    flags = [
        f"--{listener}-{name}={hostile_pki[key]}"
        for listener in ("http", "grpc")
        for name, key in (("server-cert", "server_cert"), ("server-key", "server_key"), ("root-cert", "ca"))
    ]
    process = start_seawall("--http-use-ssl-mutual=true", "--grpc-use-ssl-mutual=true", *flags, "--allow-metrics=false")
    try:
        context = ssl.create_default_context(cafile=str(hostile_pki["ca"]))
        context.load_cert_chain(str(hostile_pki["client_cert"]), str(hostile_pki["client_key"]))
        host, port = process.http.rsplit(":", 1)
        connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
        connection.request("POST", "/v2/logging", json.dumps({"log_file": "/tmp/x"}))
        reply = connection.getresponse()
        assert (reply.status, json.loads(reply.read())) == (
            501,
            {"error": "log file location can not be updated through network protocol"},
        )
        connection.close()
        client = grpcclient.InferenceServerClient(
            process.grpc,
            ssl=True,
            root_certificates=str(hostile_pki["ca"]),
            private_key=str(hostile_pki["client_key"]),
            certificate_chain=str(hostile_pki["client_cert"]),
        )
        try:
            with pytest.raises(InferenceServerException):
                client.update_log_settings({"log_file": "/tmp/x"})
            assert client.is_server_ready()
        finally:
            client.close()
        lines = _audit(process, 2)
    finally:
        process.stop()
    assert len(lines) == 2, process.log()
    for fields in lines:
        assert fields["result"] == "UNSUPPORTED" and fields["action"] == "update log settings"
    http_line, grpc_line = lines
    assert http_line["caller"].endswith(f",organizationalUnitName=a\nb,commonName={HOSTILE}")  # verbatim, quoted
    assert 'subject=CN=evil\\" result=OK action=\\"load,OU=a\\0Ab,' in grpc_line["caller"]  # RFC 4514 form
    assert not any(line.startswith("b") for line in process.lines)  # the newline did not start a line
