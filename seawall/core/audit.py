"""The audit record: one line per administrative call or key reload, every field quoted so none can be forged.

Imports only `errors`. Lines go to the `seawall.audit` logger; the command line gives that logger its
own sink, which the logging extension's run-time settings never touch.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator

from seawall.errors import SeawallError

audit_logger = logging.getLogger("seawall.audit")

#: Longest text kept of one field: a field is a name or an address, never a payload.
_MAX_FIELD = 256


def quote(text: str) -> str:
    """`text` as a JSON string: ASCII only, quotes, backslashes and every control character escaped."""
    return json.dumps(text[:_MAX_FIELD], ensure_ascii=True).replace("\x7f", "\\u007f")


def audit_line(caller: str, action: str, target: str, result: str, **counts: int) -> str:
    """`caller="..." action="..." target="..." result=<CODE>[ name=<int>...]`: strings JSON-quoted, `result`
    a code name from a closed set, counts plain integers. A quoted value cannot end early, so a certificate
    subject holding `" result=OK` or a newline stays inside its field."""
    fields = f"caller={quote(caller or 'in-process')} action={quote(action)} target={quote(target)}"
    extra = "".join(f" {name}={int(value)}" for name, value in counts.items())
    return f"{fields} result={result}{extra}"


def record(caller: str, action: str, target: str, result: str, **counts: int) -> None:
    """Write one audit line (see `audit_line`)."""
    audit_logger.info("%s", audit_line(caller, action, target, result, **counts))


@contextlib.contextmanager
def audited(caller: str, action: str, target: str) -> Iterator[None]:
    """Audit the administrative call run inside: who, what, and the result (`OK` or the error's code name)."""
    try:
        yield
    except SeawallError as error:
        record(caller, action, target[:128], error.code.name)
        raise
    record(caller, action, target[:128], "OK")
