"""config.pbtxt parsing, Triton's defaults, validation and the JSON form of /config."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from seawall.core import model_config
from seawall.errors import InvalidArgumentError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"


def _parse(text: str, name: str = "m") -> model_config_pb2.ModelConfig:
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    model_config.complete_defaults(config, name)
    return config


def test_add_sub_config_prints_as_triton_does() -> None:
    config = model_config.read_config(str(EXAMPLES / "add_sub"))
    assert config is not None
    model_config.complete_defaults(config, "add_sub")
    model_config.validate(config, "add_sub")
    data = model_config.config_to_dict(config)
    assert list(data)[:8] == [
        "name",
        "platform",
        "backend",
        "runtime",
        "version_policy",
        "max_batch_size",
        "input",
        "output",
    ]
    assert data["version_policy"] == {"latest": {"num_versions": 1}}
    assert data["input"][0]["dims"] == [4]  # int64 as a number, not a string
    assert data["instance_group"] == [
        {
            "name": "add_sub_0",
            "kind": "KIND_CPU",
            "count": 1,
            "gpus": [],
            "secondary_devices": [],
            "profile": [],
            "passive": False,
            "host_policy": "",
        }
    ]
    assert data["default_model_filename"] == "model.py"
    assert data["optimization"]["input_pinned_memory"] == {"enable": True}


def test_defaults_name_an_implicit_instance_group_after_the_model() -> None:
    config = _parse('backend: "python"')
    assert [(g.name, g.count) for g in config.instance_group] == [("m", 1)]


def test_dynamic_batching_prefers_max_batch_size() -> None:
    config = _parse('backend: "python" max_batch_size: 16 dynamic_batching {}')
    assert list(config.dynamic_batching.preferred_batch_size) == [16]


def test_config_name_selects_an_alternative_file(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "config.pbtxt").write_text('backend: "python" max_batch_size: 1')
    (tmp_path / "configs" / "big.pbtxt").write_text('backend: "python" max_batch_size: 64')
    assert model_config.read_config(str(tmp_path), "big").max_batch_size == 64
    assert model_config.read_config(str(tmp_path), "absent").max_batch_size == 1
    assert model_config.read_config(str(tmp_path)).max_batch_size == 1


def test_a_broken_config_is_refused_with_the_parser_reason(tmp_path: Path) -> None:
    (tmp_path / "config.pbtxt").write_text("max_batch_size: banana")
    with pytest.raises(InvalidArgumentError, match="failed to parse model configuration"):
        model_config.read_config(str(tmp_path))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name: "other" backend: "python"', "does not match directory"),
        ('backend: "python" max_batch_size: -1', "'max_batch_size' must be non-negative"),
        ("max_batch_size: 1", "unexpected platform type"),
        ('backend: "python" input [{ name: "A" dims: [1] }]', "must specify 'data_type'"),
        (
            'backend: "python" input [{ name: "A" data_type: TYPE_FP32 dims: [1] },'
            '{ name: "A" data_type: TYPE_FP32 dims: [1] }]',
            "declared more than once",
        ),
        ('backend: "python" input [{ name: "A" data_type: TYPE_FP32 dims: [-2] }]', "dimension must be"),
        (
            'backend: "python" output [{ name: "A" data_type: TYPE_FP32 dims: [1] label_filename: "../x" }]',
            "relative path inside the model directory",
        ),
        ('backend: "python" default_model_filename: "/etc/passwd"', "relative path inside"),
        ('backend: "python" model_operations { op_library_filename: "x.so" }', "model_operations"),
    ],
)
def test_invalid_configs_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        model_config.validate(_parse(text), "m")


def test_spec_compiles_datatypes_to_api_names() -> None:
    config = _parse(
        'backend: "python" max_batch_size: 2 input [{ name: "S" data_type: TYPE_STRING dims: [-1] optional: true },'
        '{ name: "F" data_type: TYPE_FP16 dims: [3] }] output [{ name: "O" data_type: TYPE_BOOL dims: [1] }]'
    )
    spec = model_config.compile_spec(config)
    assert spec.inputs["S"].datatype == "BYTES"
    assert spec.inputs["F"].datatype == "FP16"
    assert spec.outputs["O"].datatype == "BOOL"
    assert spec.required_inputs == {"F"}
    assert spec.platform == "python"


_RESHAPE = (
    'backend: "python" max_batch_size: 4 '
    'input [ {{ name: "I" data_type: TYPE_FP32 dims: {dims} reshape {{ shape: {shape} }} }} ]'
)


@pytest.mark.parametrize(
    ("dims", "shape", "message"),
    [
        ("[4]", "[3]", "model input 'I' has different size for dims and reshape for m"),
        ("[-1, 4]", "[8]", "model input 'I' has different size for dims and reshape for m"),
        ("[4]", "[-1, 4]", "model input 'I' has different size for dims and reshape for m"),
        ("[-1, 4]", "[2, -1, 2]", "model input 'I' has different size for dims and reshape for m"),
        (
            "[-1, -1]",
            "[-1]",
            "model input 'I' has different number of variable-size dimensions for dims and reshape for m",
        ),
        (
            "[4]",
            "[-2, -2]",
            "model input 'I' reshape dimensions must be integer >= 1, or -1 to indicate a variable-size dimension "
            "for m",
        ),
        (
            "[4]",
            "[0]",
            "model input 'I' reshape dimensions must be integer >= 1, or -1 to indicate a variable-size dimension "
            "for m",
        ),
    ],
)
def test_reshapes_tritons_rules_refuse(dims: str, shape: str, message: str) -> None:
    config = _parse(_RESHAPE.format(dims=dims, shape=shape))
    with pytest.raises(InvalidArgumentError) as info:
        model_config.validate(config, "m")
    assert info.value.message == message


@pytest.mark.parametrize(
    ("dims", "shape"), [("[4]", "[2, 2]"), ("[1]", "[]"), ("[-1, 4]", "[-1, 2, 2]"), ("[2, -1, 3]", "[1, 2, -1, 3]")]
)
def test_reshapes_tritons_rules_accept(dims: str, shape: str) -> None:
    config = _parse(_RESHAPE.format(dims=dims, shape=shape))
    model_config.validate(config, "m")
    spec = model_config.compile_spec(config)
    assert spec.reshaped and spec.inputs["I"].reshape == tuple(
        int(d) for d in shape.strip("[]").split(",") if d.strip()
    )


def test_a_model_without_reshape_is_not_marked_reshaped() -> None:
    config = _parse('backend: "python" input [ { name: "I" data_type: TYPE_FP32 dims: [4] reshape { shape: [4] } } ]')
    assert not model_config.compile_spec(config).reshaped


def test_kind_gpu_is_refused_as_triton_does_without_gpus() -> None:
    config = _parse('backend: "python" instance_group [ { kind: KIND_CPU }, { kind: KIND_GPU count: 2 } ]')
    with pytest.raises(InvalidArgumentError) as info:
        model_config.validate(config, "m")
    assert info.value.message == "instance group m_1 of model m has kind KIND_GPU but no GPUs are available"
