"""The ensemble checks that need no server: Triton's config-only refusals (`check_config`), the refusal of a
decoupled composing model and the steps a request for some outputs needs (`plan`); the completed config of an
ensemble has no instance group, as in Triton; a chain's steps run one after the other, and end as any ensemble
when a step leaves out an output (composing models faked: the scheduler alone)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from seawall.core import ensemble, ensemble_flow, ensemble_plan, model_config
from seawall.core.stats import StatsRecorder
from seawall.core.types import InferRequest, InferResponse, StreamResponse, Tensor
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
    ensemble_plan.check_config(config)


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
        ensemble_plan.check_config(_config(text))
    assert info.value.message == message


def test_a_decoupled_composing_model_makes_the_ensemble_decoupled() -> None:
    config = _config(
        f'name: "e" platform: "ensemble" {_IO.replace("[ 1 ]", "[ 4 ]")} ensemble_scheduling {{ step [ {{ '
        'model_name: "ens_decoupled" model_version: -1 input_map { key: "INPUT0" value: "INPUT" } '
        'output_map { key: "OUTPUT0" value: "OUTPUT" } } ] }'
    )
    ensemble_plan.check_config(config)
    plan = ensemble_plan.plan(config, {("ens_decoupled", -1): _read("ens_decoupled")})
    assert plan.decoupled and plan.steps[0].decoupled


def test_a_request_for_some_outputs_runs_only_the_steps_they_need() -> None:
    config = _read("ens_diamond")
    composing = {(m, -1): _read(m) for m in ensemble_plan.composing_models(config)}
    plan = ensemble_plan.plan(config, composing)
    assert [s.model_name for s in plan.steps_for(frozenset({"TIMES_A"}))] == ["ens_branch_a", "ens_pre"]
    assert len(plan.steps_for(frozenset({"SUM"}))) == 4
    assert plan.outputs == ("SUM", "TIMES_A", "TIMES_B")


def test_a_chain_runs_in_data_flow_order_and_a_diamond_is_no_chain() -> None:
    chain = ensemble_plan.plan(_read("ens_chain"), {(m, -1): _read(m) for m in ("ens_pre", "ens_model", "ens_post")})
    order = ensemble_flow.chain_order(tuple(reversed(chain.steps)), {"INPUT"})
    assert order is not None and [s.model_name for s in order] == ["ens_pre", "ens_model", "ens_post"]
    assert ensemble_flow.chain_order(chain.steps, set()) is None  # nothing can start
    config = _read("ens_diamond")
    diamond = ensemble_plan.plan(config, {(m, -1): _read(m) for m in ensemble_plan.composing_models(config)})
    assert ensemble_flow.chain_order(diamond.steps, {"INPUT"}) is None  # its branches run at once


class _Runner:
    """A composing model that doubles its input, or (`drops`) answers without its output."""

    def __init__(self, name: str, drops: bool) -> None:
        self.name, self.drops = name, drops

    async def infer(self, request: InferRequest) -> InferResponse:
        outputs = [] if self.drops else [Tensor("OUTPUT0", "FP32", (1, 4), request.inputs[0].data * 2)]
        return InferResponse(self.name, "1", outputs)

    def stream(self, request: InferRequest) -> AsyncGenerator[StreamResponse, None]:
        raise AssertionError("no step streams")


@pytest.mark.parametrize("drops", ["", "ens_model", "ens_post"])
async def test_a_chain_whose_step_leaves_out_an_output_fails_as_any_ensemble(drops: str) -> None:
    # the chain's shortcut ends as the general run does: "unexpected deadlock" once no step can run
    plan = ensemble_plan.plan(_read("ens_chain"), {(m, -1): _read(m) for m in ("ens_pre", "ens_model", "ens_post")})
    plan = ensemble_plan.EnsemblePlan(plan.name, plan.steps, ("OUTPUT",))
    scheduler = ensemble.EnsembleScheduler(
        plan, 1, lambda name, version: _Runner(name, name == drops), StatsRecorder("ens_chain", "1")
    )
    request = InferRequest("ens_chain", [Tensor("INPUT", "FP32", (1, 4), np.ones((1, 4), np.float32))])
    for _ in range(2):  # the second time with the chain it keeps
        if not drops:
            response = await scheduler.enqueue(request, 1)
            np.testing.assert_array_equal(response.outputs[0].data, np.full((1, 4), 8, np.float32))
            continue
        with pytest.raises(InvalidArgumentError) as error:
            await scheduler.enqueue(request, 1)
        assert error.value.message == (
            "in ensemble 'ens_chain', [request id: <id_unknown>] unexpected deadlock, at least one output is not set "
            "while no more ensemble steps can be made"
        )
