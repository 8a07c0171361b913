"""Schemathesis hooks for tests/fuzz/schemathesis_run.py (loaded through SCHEMATHESIS_HOOKS).

`no_undocumented_server_error` replaces schemathesis's `not_a_server_error`, which fails on every 5xx: Seawall
answers some requests with a deliberate 501 (an unsupported feature, as Triton does: CUDA shared memory, a log
file set over the network) or 503 (model control that cannot load), and docs/openapi.yaml documents those per
operation. A 500, or any 5xx an operation does not document, is still a failure.
"""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.check
def no_undocumented_server_error(ctx: Any, response: Any, case: Any) -> None:
    status = response.status_code
    if status < 500:
        return
    documented = {str(code) for code in case.operation.definition.raw.get("responses", {})}
    if status == 500 or str(status) not in documented:
        raise AssertionError(f"server error {status} (not documented for this operation): {response.text[:300]}")
