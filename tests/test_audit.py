"""Every administrative call leaves one audit line: who, what, result."""

from __future__ import annotations

import logging

import pytest

import seawall
from seawall.errors import UnavailableError, UnsupportedError
from seawall.options import Options, RepositoryOptions
from tests.harness import EXAMPLES

OPTIONS = Options(repository=RepositoryOptions(paths=(str(EXAMPLES),)))


def _audit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "seawall.audit"]


async def test_admin_calls_are_audited_with_caller_and_result(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="seawall.audit")
    async with seawall.open_server(OPTIONS) as server:
        server.update_log_settings({"log_verbose_level": 1}, caller="peer=127.0.0.1:5000")
        with pytest.raises(UnsupportedError):
            server.update_log_settings({"log_file": "/root/.bashrc"}, caller="peer=127.0.0.1:5000 subject=CN=ops")
        with pytest.raises(UnavailableError):  # control mode none
            await server.load_model("add_sub", caller="peer=10.0.0.9:1")
    assert _audit_lines(caplog) == [
        'caller="peer=127.0.0.1:5000" action="update log settings" target="log_verbose_level" result=OK',
        'caller="peer=127.0.0.1:5000 subject=CN=ops" action="update log settings" target="log_file" result=UNSUPPORTED',
        'caller="peer=10.0.0.9:1" action="load" target="add_sub" result=UNAVAILABLE',
    ]
