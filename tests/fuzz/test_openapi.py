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
