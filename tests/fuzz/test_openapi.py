"""docs/openapi.yaml describes exactly the HTTP routes Seawall serves (seawall/frontends/http/routes.py)."""

from __future__ import annotations

import re

import yaml

from seawall.frontends.http.routes import ROUTES
from tests.harness import ROOT

DOCUMENT = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
VALUES = {"model": "m", "version": "1", "region": "r"}


def _concrete(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: VALUES[m.group(1)], template)


def _served(path: str, method: str) -> bool:
    return any(method in route.methods and re.fullmatch(route.pattern, path) for route in ROUTES)


def test_every_documented_operation_is_served() -> None:
    for template, item in DOCUMENT["paths"].items():
        for method in item:
            if method in ("get", "post"):
                assert _served(_concrete(template), method.upper()), (method, template)


def test_every_served_route_is_documented() -> None:
    documented = {
        (m.upper(), _concrete(t)) for t, item in DOCUMENT["paths"].items() for m in item if m in ("get", "post")
    }
    for route in ROUTES:
        for method in route.methods:
            assert any(m == method and re.fullmatch(route.pattern, p) for m, p in documented), (method, route.pattern)


def test_every_inference_route_documents_the_429_with_retry_after() -> None:
    """Backpressure (--max-inflight-requests, a full max_queue_size) answers an inference route 429 with
    Retry-After (tests/e2e/test_backpressure.py sends each documented route and gets it)."""
    overloaded = DOCUMENT["components"]["responses"]["Overloaded"]
    assert overloaded["headers"]["Retry-After"] == {
        "description": "seconds to wait before retrying",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
    inference = {t for t, item in DOCUMENT["paths"].items() if "inference" in item.get("post", {}).get("tags", [])}
    endings = ("/infer", "/generate", "/generate_stream")
    assert inference == {t for t in DOCUMENT["paths"] if t.endswith(endings)} and len(inference) == 6
    for template in inference:
        assert DOCUMENT["paths"][template]["post"]["responses"]["429"] == {"$ref": "#/components/responses/Overloaded"}
    others = [(t, m) for t, item in DOCUMENT["paths"].items() for m, op in item.items() if m in ("get", "post")]
    assert all("429" not in DOCUMENT["paths"][t][m].get("responses", {}) for t, m in others if t not in inference)
