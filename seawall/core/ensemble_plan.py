"""Ensembles at load (`platform: "ensemble"`): `check_config` refuses the configurations whose data flow Triton
refuses (the config alone); `plan` checks an ensemble against the completed configurations of its composing models
and compiles its steps (`EnsemblePlan`), which `core/ensemble.py`'s scheduler runs. Messages are Triton 2.51's.
Imports `core.config_proto`, `core.ensemble_flow`, `errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from seawall.core import ensemble_flow
from seawall.core.config_proto import ModelConfig, model_config_pb2
from seawall.errors import InvalidArgumentError

ENSEMBLE_PLATFORM = "ensemble"


def is_ensemble(config: ModelConfig) -> bool:
    return bool(config.platform == ENSEMBLE_PLATFORM or config.HasField("ensemble_scheduling"))


def composing_models(config: ModelConfig) -> tuple[str, ...]:
    """The names of the models the ensemble's steps run, sorted, each once."""
    return tuple(sorted({step.model_name for step in config.ensemble_scheduling.step if step.model_name}))


def check_config(config: ModelConfig) -> None:
    """Refuse an ensemble configuration Triton refuses before looking at its composing models: the platform,
    fields an ensemble cannot have, empty steps, a tensor written twice, a model input mapped twice, and a data
    flow where an output is never written or a tensor is never used.

    Raises: InvalidArgumentError with Triton's message.
    """
    name = config.name
    if config.platform != ENSEMBLE_PLATFORM:
        raise InvalidArgumentError(
            f"ensemble scheduling cannot be set for model '{name}' whose platform is not {ENSEMBLE_PLATFORM}"
        )
    if config.backend:
        raise InvalidArgumentError(
            f"Ensemble model '{name}' must have platform type '{ENSEMBLE_PLATFORM}' and empty backend type"
        )
    if not config.HasField("ensemble_scheduling"):
        raise InvalidArgumentError(
            f"ensemble scheduling must be set for ensemble {name} whose platform is {ENSEMBLE_PLATFORM}"
        )
    if config.instance_group:
        raise InvalidArgumentError(f"instance group should not be specified for ensemble '{name}'")
    if config.HasField("optimization"):
        raise InvalidArgumentError(f"optimization should not be specified for ensemble '{name}'")
    if config.model_warmup:
        raise InvalidArgumentError(f"model_warmup can not be specified for ensemble '{name}'")
    steps = config.ensemble_scheduling.step
    if not steps:
        raise InvalidArgumentError(f"must specify 'step' for ensemble '{name}'")
    written: set[str] = set()
    sources: dict[str, set[str]] = {}  # ensemble tensor → the tensors its step reads
    readers: dict[str, int] = {}  # ensemble tensor → how many steps read it
    for index, step in enumerate(steps):
        for field in ("model_name", "input_map", "output_map"):
            if not getattr(step, field):
                raise InvalidArgumentError(f"must specify '{field}' in step {index} of ensemble '{name}'")
        for tensor in step.output_map.values():
            if tensor in written:
                raise InvalidArgumentError(
                    f"ensemble tensor '{tensor}' can appear in an output map only once for ensemble '{name}' "
                    f"step {index}"
                )
            written.add(tensor)
            sources[tensor] = set(step.input_map.values())
        for tensor in step.input_map.values():
            readers[tensor] = readers.get(tensor, 0) + 1
    known = written | set(readers)
    ready: set[str] = set()
    for tensor in config.input:
        if tensor.name not in known:
            raise InvalidArgumentError(f"ensemble input '{tensor.name}' for ensemble {name}' is not used")
        ready.add(tensor.name)
    changed = True
    while changed:  # a written tensor is ready once every tensor its step reads is
        changed = False
        for tensor, needs in sources.items():
            if tensor not in ready and needs <= ready:
                ready.add(tensor)
                changed = True
    outputs = {tensor.name for tensor in config.output}
    for output in config.output:
        if output.name not in known:
            raise InvalidArgumentError(f"ensemble output '{output.name}' for ensemble {name}' is not used")
        if output.name not in ready:
            message = f"output '{output.name}' for ensemble '{name}' is not written"
            source = _first_unready_source(output.name, sources, ready)
            if source != output.name:
                message += f": at least one of its depending tensors, '{source}', is not connected"
            raise InvalidArgumentError(message)
    for tensor in sorted(known - outputs):
        if tensor not in ready or not readers.get(tensor):
            raise InvalidArgumentError(f"ensemble tensor '{tensor}' is unused in ensemble '{name}'")


def _first_unready_source(tensor: str, sources: Mapping[str, set[str]], ready: set[str]) -> str:
    """The tensor where a not-ready tensor's chain of not-ready inputs ends (what Triton names)."""
    seen: set[str] = set()
    last = tensor
    needs = sources.get(tensor, set())
    while needs:
        nxt = next((t for t in sorted(needs) if t not in ready and t not in seen), None)
        if nxt is None:
            break
        seen.add(nxt)
        last, needs = nxt, sources.get(nxt, set())
    return last


@dataclass(frozen=True, slots=True)
class Step:
    """One compiled step: the model it runs and how its tensors map to the ensemble's."""

    model_name: str
    model_version: str  # "" = the latest ready version
    inputs: tuple[tuple[str, str], ...]  # (model input, ensemble tensor)
    outputs: tuple[tuple[str, str], ...]  # (model output, ensemble tensor)
    decoupled: bool = False  # the model streams: the later steps run once per response


@dataclass(frozen=True, slots=True)
class EnsemblePlan:
    """A checked ensemble: its steps, in configuration order, and its output names."""

    name: str
    steps: tuple[Step, ...]
    outputs: tuple[str, ...]
    optional_inputs: frozenset[str] = frozenset()  # ensemble inputs a request may leave out
    decoupled: bool = False  # a step's model is decoupled: the ensemble streams (`ensemble_flow`)

    def steps_for(self, wanted: frozenset[str]) -> tuple[Step, ...]:
        """The steps needed to produce the tensors `wanted`, in configuration order."""
        needed = set(wanted)
        chosen: set[int] = set()
        changed = True
        while changed:
            changed = False
            for index, step in enumerate(self.steps):
                if index not in chosen and any(t in needed for _, t in step.outputs):
                    chosen.add(index)
                    needed.update(t for _, t in step.inputs)
                    changed = True
        return tuple(step for index, step in enumerate(self.steps) if index in chosen)


def _dims_text(dims: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _dims_agree(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b, strict=True))


@dataclass(frozen=True, slots=True)
class _Node:
    """What an ensemble tensor is inferred to be, and from which model."""

    model: str
    data_type: int
    dims: tuple[int, ...]
    full_dims: tuple[int, ...]  # with the batch dimension of a batching model

    @classmethod
    def of(cls, model: str, batching: bool, data_type: int, dims: tuple[int, ...]) -> _Node:
        return cls(model, data_type, dims, ((-1,) if batching else ()) + dims)

    def check(self, other: _Node, prefix: str) -> None:
        if self.data_type != other.data_type:
            type_name = model_config_pb2.DataType.Name
            raise InvalidArgumentError(
                f"{prefix}inconsistent data type: {type_name(self.data_type)} is inferred from model {self.model} "
                f"while {type_name(other.data_type)} is inferred from model {other.model}"
            )
        if not _dims_agree(self.dims, other.dims) and not _dims_agree(self.full_dims, other.full_dims):
            raise InvalidArgumentError(
                f"{prefix}inconsistent shape: {_dims_text(self.full_dims)} is inferred from model {self.model} "
                f"while {_dims_text(other.full_dims)} is inferred from model {other.model}"
            )


def plan(config: ModelConfig, composing: Mapping[tuple[str, int], ModelConfig]) -> EnsemblePlan:
    """Check a valid ensemble configuration (`check_config`) against the completed configuration of each step's
    model (`composing[(name, model_version)]`) and compile it.

    Raises:
        InvalidArgumentError: Triton's message for a batch size the composing model does not allow, a mapping
            to an input or from an output the model does not have, an input left unmapped, or an ensemble tensor
            whose data type or shape two models disagree on.
            Also a step (or the outputs) reading tensors that stem from different decoupled steps.
    """
    name = config.name
    batching = config.max_batch_size > 0
    nodes: dict[str, _Node] = {}
    for tensor in config.input:
        nodes[tensor.name] = _Node.of(name, batching, tensor.data_type, tuple(tensor.dims))
    for tensor in config.output:
        nodes[tensor.name] = _Node.of(name, batching, tensor.data_type, tuple(tensor.dims))
    steps = []
    for step in config.ensemble_scheduling.step:
        model = composing[(step.model_name, step.model_version)]
        step_name = step.model_name
        if model.max_batch_size != 0 and model.max_batch_size < config.max_batch_size:
            raise InvalidArgumentError(
                f"ensemble {name} allows maximum batch size {config.max_batch_size}, but it contains model "
                f"{step_name} which only allows maximum batch size to be {model.max_batch_size}"
            )
        model_batching = model.max_batch_size > 0
        inputs = {t.name: t for t in model.input}
        for model_input, tensor in step.input_map.items():
            if model_input not in inputs:
                raise InvalidArgumentError(
                    f"in ensemble {name}, ensemble tensor {tensor} is mapping to non-existing input {model_input} "
                    f"in model {step_name}"
                )
        for model_input in model.input:
            tensor = step.input_map.get(model_input.name)
            if tensor is None:
                if model_input.optional:
                    continue
                raise InvalidArgumentError(
                    f"in ensemble {name}, input {model_input.name} in model {step_name} is not mapped to any "
                    "ensemble tensors"
                )
            node = _Node.of(step_name, model_batching, model_input.data_type, tuple(model_input.dims))
            _check_or_add(nodes, tensor, node, name)
        outputs = {t.name: t for t in model.output}
        for model_output, tensor in step.output_map.items():
            if model_output not in outputs:
                raise InvalidArgumentError(
                    f"in ensemble {name}, ensemble tensor {tensor} is mapped from non-existing output "
                    f"{model_output} in model {step_name}"
                )
            spec = outputs[model_output]
            node = _Node.of(step_name, model_batching, spec.data_type, tuple(spec.dims))
            _check_or_add(nodes, tensor, node, name)
        version = "" if step.model_version < 0 else str(step.model_version)
        streams = model.model_transaction_policy.decoupled
        steps.append(Step(step_name, version, tuple(step.input_map.items()), tuple(step.output_map.items()), streams))
    optional = frozenset(t.name for t in config.input if t.optional)
    decoupled = ensemble_flow.decoupled_label_check(config, composing)
    return EnsemblePlan(name, tuple(steps), tuple(t.name for t in config.output), optional, decoupled)


def _check_or_add(nodes: dict[str, _Node], tensor: str, node: _Node, ensemble: str) -> None:
    known = nodes.get(tensor)
    if known is None:
        nodes[tensor] = node
    else:
        known.check(node, f"in ensemble {ensemble}, ensemble tensor {tensor}: ")
