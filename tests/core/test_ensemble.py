"""The ensemble checks that need no server: Triton's config-only refusals (`check_config`), the refusal of a
decoupled composing model and the steps a request for some outputs needs (`plan`); the completed config of an
ensemble has no instance group, as in Triton."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from seawall.core import ensemble, model_config
from seawall.errors import InvalidArgumentError
from tests.harness import TEST_MODELS


def _config(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _read(model: str) -> model_config_pb2.ModelConfig:
    config = model_config.read_config(str(TEST_MODELS / model))
    assert config is not None
    model_config.complete_defaults(config, model)
    return config


def test_the_completed_config_of_an_ensemble_has_no_instances() -> None:
    config = _read("ens_chain")
    assert not config.instance_group and not config.HasField("optimization") and not config.default_model_filename
    ensemble.check_config(config)


_STEP = (
    'ensemble_scheduling { step [ { model_name: "m" input_map { key: "I" value: "INPUT" } '
    'output_map { key: "O" value: "OUTPUT" } } ] }'
)
_IO = (
    'input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 1 ] } ] '
    'output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 1 ] } ]'
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            f'name: "e" platform: "ensemble" backend: "python" {_IO} {_STEP}',
            "Ensemble model 'e' must have platform type 'ensemble' and empty backend type",
        ),
        (
            f'name: "e" backend: "python" {_IO} {_STEP}',
            "ensemble scheduling cannot be set for model 'e' whose platform is not ensemble",
        ),
        (
            f'name: "e" platform: "ensemble" {_IO}',
            "ensemble scheduling must be set for ensemble e whose platform is ensemble",
        ),
        (
            f'name: "e" platform: "ensemble" instance_group [ {{ count: 1 }} ] {_IO} {_STEP}',
            "instance group should not be specified for ensemble 'e'",
        ),
        (
            f'name: "e" platform: "ensemble" model_warmup [ {{ name: "w" }} ] {_IO} {_STEP}',
            "model_warmup can not be specified for ensemble 'e'",
        ),
        (
            f'name: "e" platform: "ensemble" {_IO} ensemble_scheduling {{ step [ {{ model_name: "m" '
            'input_map { key: "I" value: "INPUT" } } ] }',
            "must specify 'output_map' in step 0 of ensemble 'e'",
        ),
        (
            f'name: "e" platform: "ensemble" {_IO} ensemble_scheduling {{ step [ {{ model_name: "m" '
            'input_map { key: "I" value: "INPUT" } output_map [ { key: "O" value: "OUTPUT" }, '
            '{ key: "P" value: "SPARE" } ] } ] }',
            "ensemble tensor 'SPARE' is unused in ensemble 'e'",
        ),
    ],
)
def test_config_checks(text: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        ensemble.check_config(_config(text))
    assert info.value.message == message


def test_a_decoupled_composing_model_makes_the_ensemble_decoupled() -> None:
    config = _config(
        f'name: "e" platform: "ensemble" {_IO.replace("[ 1 ]", "[ 4 ]")} ensemble_scheduling {{ step [ {{ '
        'model_name: "ens_decoupled" model_version: -1 input_map { key: "INPUT0" value: "INPUT" } '
        'output_map { key: "OUTPUT0" value: "OUTPUT" } } ] }'
    )
    ensemble.check_config(config)
    plan = ensemble.plan(config, {("ens_decoupled", -1): _read("ens_decoupled")})
    assert plan.decoupled and plan.steps[0].decoupled


def test_a_request_for_some_outputs_runs_only_the_steps_they_need() -> None:
    config = _read("ens_diamond")
    composing = {(m, -1): _read(m) for m in ensemble.composing_models(config)}
    plan = ensemble.plan(config, composing)
    assert [s.model_name for s in plan.steps_for(frozenset({"TIMES_A"}))] == ["ens_branch_a", "ens_pre"]
    assert len(plan.steps_for(frozenset({"SUM"}))) == 4
    assert plan.outputs == ("SUM", "TIMES_A", "TIMES_B")
