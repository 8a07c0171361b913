"""The checksum repository agent: SHA-256 pins for every file of a model, checked before any code runs."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from seawall.core.repoagent import run_agents
from seawall.errors import InvalidArgumentError, UnsupportedError
from tests.harness import EXAMPLES


def _pinned_model(tmp_path: Path) -> tuple[Path, model_config_pb2.ModelConfig]:
    model = tmp_path / "add_sub"
    shutil.copytree(EXAMPLES / "add_sub", model, ignore=shutil.ignore_patterns("__pycache__"))
    digest = hashlib.sha256((model / "1" / "model.py").read_bytes()).hexdigest()
    config = text_format.Parse(
        'model_repository_agents { agents [{ name: "checksum", parameters { key: "SHA256:1/model.py" '
        f'value: "{digest}" }} }}] }}',
        model_config_pb2.ModelConfig(),
    )
    return model, config


def test_pinned_files_pass(tmp_path: Path) -> None:
    model, config = _pinned_model(tmp_path)
    run_agents(config, str(model))


def test_a_changed_file_fails(tmp_path: Path) -> None:
    model, config = _pinned_model(tmp_path)
    with open(model / "1" / "model.py", "a") as file:
        file.write("\nimport os  # planted\n")
    with pytest.raises(InvalidArgumentError, match="file '1/model.py' does not match its SHA256 pin"):
        run_agents(config, str(model))


def test_an_unpinned_file_fails(tmp_path: Path) -> None:
    model, config = _pinned_model(tmp_path)
    (model / "1" / "helper.py").write_text("print('planted')")
    with pytest.raises(InvalidArgumentError, match="file '1/helper.py' has no SHA256 pin"):
        run_agents(config, str(model))


def test_a_missing_pinned_file_fails(tmp_path: Path) -> None:
    model, config = _pinned_model(tmp_path)
    os.remove(model / "1" / "model.py")
    with pytest.raises(InvalidArgumentError, match="pinned file '1/model.py' is missing"):
        run_agents(config, str(model))


def test_a_linked_version_directory_fails(tmp_path: Path) -> None:
    model, config = _pinned_model(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(model / "1", elsewhere)
    os.symlink(elsewhere, model / "1")
    with pytest.raises(InvalidArgumentError, match="directory '1' is a link"):
        run_agents(config, str(model))


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("MD5:1/model.py", "unsupported algorithm 'MD5'"),
        ("SHA256:../x", "inside the model directory"),
        ("SHA256:/etc/passwd", "inside the model directory"),
    ],
)
def test_malformed_pins_fail(tmp_path: Path, key: str, message: str) -> None:
    model, _ = _pinned_model(tmp_path)
    config = text_format.Parse(
        f'model_repository_agents {{ agents [{{ name: "checksum", parameters {{ key: "{key}" value: "00" }} }}] }}',
        model_config_pb2.ModelConfig(),
    )
    with pytest.raises(InvalidArgumentError, match=message):
        run_agents(config, str(model))


def test_unknown_agents_are_refused(tmp_path: Path) -> None:
    config = text_format.Parse(
        'model_repository_agents { agents [{ name: "decrypt" }] }', model_config_pb2.ModelConfig()
    )
    with pytest.raises(UnsupportedError, match="repository agent 'decrypt' is not available"):
        run_agents(config, str(tmp_path))
