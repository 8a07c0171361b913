"""The onnxruntime backend under server settings: --disable-auto-complete-config (and the deprecated
--strict-model-config), --max-model-size, and a server where onnxruntime cannot be imported."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests import onnx_models as m
from tests.harness import ServerProcess, http_request, run_seawall, start_seawall


def _reasons(server: ServerProcess) -> dict[str, tuple[str, str]]:
    status, _, body = http_request(server, "POST", "/v2/repository/index")
    assert status == 200
    return {e["name"]: (e.get("state", ""), e.get("reason", "")) for e in json.loads(body)}


def _add_sub_works(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(server.http)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        tensor = httpclient.InferInput(name, [4], "FP32")
        tensor.set_data_from_numpy(np.ones(4, dtype=np.float32))
        inputs.append(tensor)
    np.testing.assert_array_equal(client.infer("onnx_add_sub", inputs).as_numpy("OUTPUT0"), np.full(4, 2.0))
    assert http_request(server, "GET", "/v2/health/live")[0] == 200


@pytest.mark.parametrize("flag", ["--disable-auto-complete-config", "--strict-model-config=true"])
def test_without_auto_complete_the_config_is_checked_against_the_model_as_given(tmp_path: Path, flag: str) -> None:
    m.write(tmp_path, "onnx_add_sub", m.add_sub(["n"]), m.ADD_SUB_CONFIG.format(name="onnx_add_sub", extra=""))
    m.write(tmp_path, "partial", m.matmul(), 'name: "partial"\nbackend: "onnxruntime"\nmax_batch_size: 8\n')
    server = start_seawall("--exit-on-error=false", flag, repository=tmp_path)
    try:
        assert _reasons(server)["partial"] == (
            "UNAVAILABLE",
            "unable to load model 'partial', configuration expects 0 inputs, model provides 1",
        )
        _add_sub_works(server)
    finally:
        server.stop()


def test_a_model_larger_than_max_model_size_fails_its_load_external_data_counted(tmp_path: Path) -> None:
    add_sub = m.add_sub(["n"])
    m.write(tmp_path, "onnx_add_sub", add_sub, m.ADD_SUB_CONFIG.format(name="onnx_add_sub", extra=""))
    version = m.write(tmp_path, "ext", m.matmul("weights.bin"), m.MATMUL_CONFIG.format(name="ext", extra=""))
    (version / "weights.bin").write_bytes(m.WEIGHTS.tobytes())
    m.write(tmp_path, "big", m.add_sub(["n", "m", "k"]), None)
    limit = max(len(add_sub.SerializeToString()), (version / "model.onnx").stat().st_size) + 8
    assert (tmp_path / "big" / "1" / "model.onnx").stat().st_size > limit
    server = start_seawall("--exit-on-error=false", f"--max-model-size={limit}", repository=tmp_path)
    try:
        reasons = _reasons(server)
        assert reasons["ext"] == (
            "UNAVAILABLE",
            "model 'ext' is larger than --max-model-size allows (reading file '1/weights.bin')",
        )
        assert reasons["big"] == (
            "UNAVAILABLE",
            "model 'big' is larger than --max-model-size allows (reading file '1/model.onnx')",
        )
        _add_sub_works(server)
    finally:
        server.stop()


def test_without_onnxruntime_an_onnx_model_fails_naming_the_extra_to_install(tmp_path: Path) -> None:
    """A module named onnxruntime that cannot be imported shadows the installed one; python models still serve."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "onnxruntime.py").write_text("raise ImportError('onnxruntime is not installed here')\n")
    repository = tmp_path / "models"
    m.write(repository, "onnx_add_sub", m.add_sub(["n"]), m.ADD_SUB_CONFIG.format(name="onnx_add_sub", extra=""))
    server = start_seawall("--exit-on-error=false", repository=repository, env={"PYTHONPATH": str(shadow)})
    try:
        assert _reasons(server)["onnx_add_sub"] == (
            "UNAVAILABLE",
            "backend 'onnxruntime' needs packages that are not installed: install seawall[onnx]",
        )
        assert http_request(server, "GET", "/v2/health/live")[0] == 200
    finally:
        server.stop()


def test_the_security_report_and_the_start_up_table_list_the_backends_available(tmp_path: Path) -> None:
    available = "python, onnxruntime" + (", pytorch" if importlib.util.find_spec("torch") else "")
    done = run_seawall(f"--model-repository={tmp_path}", "--security-report")
    assert done.stdout.splitlines()[-1] == f"backends available: {available}"
    m.write(tmp_path, "onnx_add_sub", m.add_sub(["n"]), m.ADD_SUB_CONFIG.format(name="onnx_add_sub", extra=""))
    server = start_seawall(repository=tmp_path)
    try:
        rows = [line for line in server.log().splitlines() if "| backends " in line]
        assert len(rows) == 1 and rows[0].split("|")[2].strip() == available
    finally:
        server.stop()


def test_explicit_control_loads_unloads_and_loads_an_onnx_model_sent_through_the_load_api(tmp_path: Path) -> None:
    m.write(tmp_path, "onnx_add_sub", m.add_sub(["n"]), m.ADD_SUB_CONFIG.format(name="onnx_add_sub", extra=""))
    server = start_seawall(
        "--model-control-mode=explicit", "--allow-unrestricted-model-repository=true", repository=tmp_path
    )
    try:
        client = httpclient.InferenceServerClient(server.http)
        client.load_model("onnx_add_sub")
        _add_sub_works(server)
        client.unload_model("onnx_add_sub")
        assert not client.is_model_ready("onnx_add_sub")
        config = json.dumps({"name": "sent", "backend": "onnxruntime", "max_batch_size": 8})
        client.load_model("sent", config=config, files={"file:1/model.onnx": m.matmul().SerializeToString()})
        tensor = httpclient.InferInput("X", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        np.testing.assert_allclose(client.infer("sent", [tensor]).as_numpy("Y"), np.ones((1, 4)) @ m.WEIGHTS)
        assert client.get_model_config("sent")["input"][0]["dims"] == [4]
        client.load_model("onnx_add_sub")
        _add_sub_works(server)
    finally:
        server.stop()
