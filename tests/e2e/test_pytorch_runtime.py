"""The pytorch backend when torch is missing or too old: that model fails its load naming what to install, and
the server serves the others. A module named torch on PYTHONPATH stands in for the installation (torch itself is
not needed to run these)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import onnx_models as m
from tests.harness import http_request, start_seawall

CONFIG = """
name: "pt"
platform: "pytorch_libtorch"
max_batch_size: 0
input [ { name: "INPUT__0", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [ { name: "OUTPUT__0", data_type: TYPE_FP32, dims: [ 4 ] } ]
"""


@pytest.mark.parametrize(
    ("torch_module", "reason"),
    [
        (
            "raise ImportError('torch is not installed here')\n",
            "backend 'pytorch' needs packages that are not installed: install seawall[torch]",
        ),
        (
            "__version__ = '2.5.1+cpu'\n",
            "backend 'pytorch' needs torch 2.6 or later (CVE-2025-32434); this installation has 2.5.1+cpu",
        ),
    ],
)
def test_a_torchscript_model_without_a_usable_torch_fails_naming_the_fix(
    tmp_path: Path, torch_module: str, reason: str
) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "torch.py").write_text(torch_module)
    repository = tmp_path / "models"
    (repository / "pt" / "1").mkdir(parents=True)
    (repository / "pt" / "1" / "model.pt").write_bytes(b"PK not read")
    (repository / "pt" / "config.pbtxt").write_text(CONFIG)
    m.write(repository, "onnx_add_sub", m.add_sub(["n"]), m.ADD_SUB_CONFIG.format(name="onnx_add_sub", extra=""))
    server = start_seawall("--exit-on-error=false", repository=repository, env={"PYTHONPATH": str(shadow)})
    try:
        status, _, body = http_request(server, "POST", "/v2/repository/index")
        entries = {e["name"]: e for e in json.loads(body)}
        assert (entries["pt"]["state"], entries["pt"]["reason"]) == ("UNAVAILABLE", reason)
        assert entries["onnx_add_sub"]["state"] == "READY"
        assert http_request(server, "GET", "/v2/health/live")[0] == 200
    finally:
        server.stop()
