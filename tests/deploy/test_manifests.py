"""The deployment manifests keep the least-privilege settings the secure deployment guide asks for (the Helm
chart, rendered and validated: test_helm.py)."""

from __future__ import annotations

import re
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_container_image_runs_as_an_unprivileged_user() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and not users[-1].startswith(("0", "root"))


def test_kserve_runtime_is_unprivileged() -> None:
    text = (DEPLOY / "kserve" / "clusterservingruntime.yaml").read_text()
    assert "kind: ClusterServingRuntime" in text
    assert "runAsNonRoot: true" in text and "allowPrivilegeEscalation: false" in text
