"""The deployment manifests keep the least-privilege settings the secure deployment guide asks for."""

from __future__ import annotations

import re
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_container_image_runs_as_an_unprivileged_user() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and not users[-1].startswith(("0", "root"))


def test_helm_deployment_is_least_privilege() -> None:
    text = (DEPLOY / "helm" / "seawall" / "templates" / "deployment.yaml").read_text()
    for setting in (
        "runAsNonRoot: true",
        "allowPrivilegeEscalation: false",
        "readOnlyRootFilesystem: true",
        'capabilities: {drop: ["ALL"]}',
        "seccompProfile: {type: RuntimeDefault}",
        "automountServiceAccountToken: false",
        "path: /v2/health/live",
        "path: /v2/health/ready",
        "readOnly: true",
    ):
        assert setting in text, setting
    # the restricted-API secret comes from a mounted file, never from the command line
    assert "--http-restricted-api-file=" in text
    assert not re.search(r"--http-restricted-api=", text)


def test_kserve_runtime_is_unprivileged() -> None:
    text = (DEPLOY / "kserve" / "clusterservingruntime.yaml").read_text()
    assert "kind: ClusterServingRuntime" in text
    assert "runAsNonRoot: true" in text and "allowPrivilegeEscalation: false" in text
