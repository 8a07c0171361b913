"""What a model's `sequence_batching` asks of its scheduler: strategy, idle timeout, control inputs, implicit state.

Imports `core.config_proto`, `core.types`, `errors`. Built once per load (`SequencePolicy.
from_config`); the initial state of a `data_file` is read here, confined to the model's `initial_state/` directory.
The per-request parts (the sequence id of a request, the request the model gets, with its control tensors and states,
and null requests) are pure functions of the policy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from seawall.core.config_proto import ModelConfig, model_config_pb2
from seawall.core.types import NUMPY_DTYPES, InferRequest, ParamValue, Tensor, element_count
from seawall.errors import InvalidArgumentError

_Control = model_config_pb2.ModelSequenceBatching.Control
START, READY, END, CORRID = (
    _Control.CONTROL_SEQUENCE_START,
    _Control.CONTROL_SEQUENCE_READY,
    _Control.CONTROL_SEQUENCE_END,
    _Control.CONTROL_SEQUENCE_CORRID,
)
#: Triton's default of `max_sequence_idle_microseconds` (0 or unset)
DEFAULT_IDLE_US = 1_000_000
#: the largest initial-state file read at load
MAX_INITIAL_STATE_BYTES = 64 * 1024 * 1024
_CORRID_TYPES = ("UINT64", "INT64", "UINT32", "INT32", "BYTES")
_INT_RANGES = {
    "UINT64": (0, (1 << 64) - 1),
    "INT64": (-(1 << 63), (1 << 63) - 1),
    "UINT32": (0, (1 << 32) - 1),
    "INT32": (-(1 << 31), (1 << 31) - 1),
}

SequenceId = int | str


def type_name(data_type: int) -> str:
    """`TYPE_FP32` → `FP32`; `TYPE_STRING` → `BYTES`; TYPE_INVALID → ''."""
    name = str(model_config_pb2.DataType.Name(data_type))
    return {"TYPE_STRING": "BYTES", "TYPE_INVALID": ""}.get(name, name[len("TYPE_") :])


@dataclass(frozen=True, slots=True)
class ControlInput:
    """One control input: the tensor `name` of `datatype`, filled per request with `false`/`true` (START, READY,
    END) or with the sequence id (CORRID)."""

    name: str
    kind: int
    datatype: str
    false: float | int | bool = 0
    true: float | int | bool = 1


@dataclass(frozen=True, slots=True)
class StateSpec:
    """One implicit state: given to the model as input `input_name`, taken back from its output `output_name`."""

    input_name: str
    output_name: str
    datatype: str
    initial: np.ndarray  # the state at the start of a sequence, with the batch dimension when the model batches
    is_output: bool = False  # `output_name` is also a configured output: clients get it too (Triton's debugging aid)


@dataclass(frozen=True, slots=True)
class SequencePolicy:
    """The `sequence_batching` of one model, checked."""

    model_name: str
    oldest: bool
    max_batch_size: int  # 0: the model does not batch (one request per execution)
    idle_ns: int
    max_queue_delay_ns: int
    minimum_slot_utilization: float  # direct
    candidates: int  # oldest: max_candidate_sequences (per instance, as Triton's per-instance batchers)
    preferred_batch_sizes: tuple[int, ...]  # oldest
    controls: tuple[ControlInput, ...]
    states: tuple[StateSpec, ...]
    #: per control input, its (false, true) arrays, made once (read-only; CORRID: None, the id varies)
    _flags: tuple[tuple[np.ndarray, np.ndarray] | None, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        shape = self.control_shape
        flags: list[tuple[np.ndarray, np.ndarray] | None] = []
        for control in self.controls:
            if control.kind == CORRID:
                flags.append(None)
                continue
            pair = []
            for value in (control.false, control.true):
                array = np.full(shape, value, dtype=NUMPY_DTYPES[control.datatype])
                array.setflags(write=False)
                pair.append(array)
            flags.append((pair[0], pair[1]))
        object.__setattr__(self, "_flags", tuple(flags))

    @property
    def control_shape(self) -> tuple[int, ...]:
        """The shape of a control input tensor of one request."""
        return (1, 1) if self.max_batch_size > 0 else (1,)

    @property
    def slots_per_instance(self) -> int:
        """The sequences one instance serves at once (a sequence sticks to its instance in both strategies)."""
        return self.candidates if self.oldest else max(1, self.max_batch_size)

    @property
    def batch_limit(self) -> int:
        return max(1, self.max_batch_size)

    @property
    def corrid_datatype(self) -> str:
        """The datatype of the CORRID control input, "" without one."""
        return next((c.datatype for c in self.controls if c.kind == CORRID), "")

    @classmethod
    def from_config(cls, config: ModelConfig, model_dir: str) -> SequencePolicy:
        """Raises: InvalidArgumentError (a control input or state Triton refuses, an unreadable initial state)."""
        batching = config.sequence_batching
        name = config.name
        oldest = batching.WhichOneof("strategy_choice") == "oldest"
        idle_us = batching.max_sequence_idle_microseconds or DEFAULT_IDLE_US
        if oldest:
            delay_us, utilization = batching.oldest.max_queue_delay_microseconds, 0.0
        else:
            direct = batching.direct
            delay_us, utilization = direct.max_queue_delay_microseconds, direct.minimum_slot_utilization
        return cls(
            model_name=name,
            oldest=oldest,
            max_batch_size=max(0, config.max_batch_size),
            idle_ns=idle_us * 1000,
            max_queue_delay_ns=delay_us * 1000,
            minimum_slot_utilization=min(max(utilization, 0.0), 1.0),
            candidates=max(1, batching.oldest.max_candidate_sequences) if oldest else 0,
            preferred_batch_sizes=tuple(sorted(batching.oldest.preferred_batch_size)) if oldest else (),
            controls=_controls(config),
            states=tuple(_state(config, state, model_dir) for state in batching.state),
        )

    def sequence_id(self, request: InferRequest) -> SequenceId:
        """The request's sequence id (`sequence_id` parameter), checked against the CORRID control input.

        Raises:
            InvalidArgumentError: no (or a zero / empty) id, or one the CORRID control input cannot hold.
        """
        value: ParamValue | None = request.parameters.get("sequence_id")
        if value is None or value == 0 or value == "" or type(value) not in (int, str):
            raise InvalidArgumentError(
                f"inference request to model '{self.model_name}' must specify a non-zero or non-empty correlation ID"
            )
        assert isinstance(value, int | str)  # checked above (bool is not an id: the frontends refuse it)
        datatype = self.corrid_datatype
        if datatype in _INT_RANGES:
            low, high = _INT_RANGES[datatype]
            if isinstance(value, str) or not low <= value <= high:
                raise InvalidArgumentError(
                    f"inference request for sequence {value} to model '{self.model_name}' must specify a "
                    f"correlation ID of type {datatype}, the data type of its CORRID control input"
                )
        return value

    def model_request(
        self, request: InferRequest, sequence_id: SequenceId, start: bool, end: bool, state: Mapping[str, np.ndarray]
    ) -> InferRequest:
        """A new request for the model: the client's inputs, the control inputs and the sequence's `state` (by
        input name; the initial state where it has none). The client's request is not changed."""
        inputs = [*request.inputs, *self.control_tensors(sequence_id, start, end)]
        for spec in self.states:
            array = state.get(spec.input_name, spec.initial)
            inputs.append(Tensor(spec.input_name, spec.datatype, tuple(array.shape), array))
        return InferRequest(
            request.model_name,
            inputs,
            request.model_version,
            request.id,
            request.outputs,
            request.parameters,
            request.callers,
        )

    def null_request(self, template: InferRequest) -> InferRequest:
        """A request for a slot without one (direct): zeros shaped as the inputs of `template` (a client's request),
        READY false, id 0, and the initial states; its response is dropped."""
        inputs = [
            Tensor(
                t.name,
                t.datatype,
                t.shape,
                np.zeros(t.shape, t.data.dtype) if t.datatype != "BYTES" else np.full(t.shape, b"", dtype=np.object_),
            )
            for t in template.inputs
        ]
        inputs.extend(self.control_tensors(0, False, False, ready=False))
        inputs.extend(Tensor(s.input_name, s.datatype, tuple(s.initial.shape), s.initial) for s in self.states)
        return InferRequest(template.model_name, inputs, template.model_version)

    def control_tensors(self, sequence_id: SequenceId, start: bool, end: bool, ready: bool = True) -> list[Tensor]:
        """The control input tensors of one request of a sequence (`ready` false: a null request, id 0). The
        START/END/READY arrays are shared by every request (read-only); CORRID's is new."""
        shape = self.control_shape
        tensors = []
        for control, flags in zip(self.controls, self._flags, strict=True):
            kind = control.kind
            if flags is None:  # CORRID
                value: object = sequence_id
                if control.datatype == "BYTES":
                    value = str(sequence_id).encode() if sequence_id != 0 else b""
                array = np.empty(shape, dtype=NUMPY_DTYPES[control.datatype])
                array.fill(value)
            elif kind == START:
                array = flags[start]
            elif kind == END:
                array = flags[end]
            else:
                array = flags[ready]
            tensors.append(Tensor(control.name, control.datatype, shape, array))
        return tensors


def _controls(config: ModelConfig) -> tuple[ControlInput, ...]:
    """Raises: InvalidArgumentError (Triton's rules: one control per input, one input per kind, its values)."""
    name = config.name
    controls: list[ControlInput] = []
    seen_kinds: set[int] = set()
    declared = {t.name for t in config.input}
    for control_input in config.sequence_batching.control_input:
        if not control_input.name:
            raise InvalidArgumentError(f"sequence batching control input of model '{name}' must specify 'name'")
        if control_input.name in declared:
            raise InvalidArgumentError(
                f"sequence batching control input '{control_input.name}' of model '{name}' is also a model input"
            )
        if len(control_input.control) != 1:
            raise InvalidArgumentError(
                f"sequence batching control input '{control_input.name}' of model '{name}' must specify exactly "
                "one 'control'"
            )
        control = control_input.control[0]
        kind_name = _Control.Kind.Name(control.kind)
        if control.kind in seen_kinds:
            raise InvalidArgumentError(f"sequence batching specifies multiple {kind_name} tensors for model '{name}'")
        seen_kinds.add(control.kind)
        controls.append(_control(control_input.name, control, kind_name, name))
    return tuple(controls)


def _control(input_name: str, control: object, kind_name: str, model: str) -> ControlInput:
    kind = control.kind  # type: ignore[attr-defined]
    where = f"sequence batching control {kind_name} of input '{input_name}' of model '{model}'"
    if kind == CORRID:
        datatype = type_name(control.data_type)  # type: ignore[attr-defined]
        if datatype not in _CORRID_TYPES:
            raise InvalidArgumentError(f"{where} must specify data_type UINT64, INT64, UINT32, INT32 or STRING")
        return ControlInput(input_name, kind, datatype)
    values = [
        (datatype, list(getattr(control, field)))
        for field, datatype in (("int32_false_true", "INT32"), ("fp32_false_true", "FP32"), ("bool_false_true", "BOOL"))
        if len(getattr(control, field))
    ]
    if len(values) != 1 or len(values[0][1]) != 2:
        raise InvalidArgumentError(
            f"{where} must specify exactly two values in one of int32_false_true, fp32_false_true or bool_false_true"
        )
    datatype, (false, true) = values[0][0], values[0][1]
    return ControlInput(input_name, kind, datatype, false, true)


def _state(config: ModelConfig, state: object, model_dir: str) -> StateSpec:
    """Raises: InvalidArgumentError (names missing, a STRING or variable-size state, a bad initial state)."""
    model = config.name
    input_name, output_name = state.input_name, state.output_name  # type: ignore[attr-defined]
    if not input_name or not output_name:
        raise InvalidArgumentError(
            f"sequence batching state of model '{model}' must specify 'input_name' and 'output_name'"
        )
    if input_name in {t.name for t in config.input}:
        raise InvalidArgumentError(
            f"sequence batching state '{input_name}' of model '{model}' must not be a model input"
        )
    datatype = type_name(state.data_type)  # type: ignore[attr-defined]
    if datatype in ("", "BYTES", "BF16"):
        raise InvalidArgumentError(
            f"sequence batching state '{input_name}' of model '{model}' has data_type "
            f"{datatype or 'TYPE_INVALID'}: Seawall keeps numeric states only"
        )
    dims = tuple(state.dims)  # type: ignore[attr-defined]
    initials = list(state.initial_state)  # type: ignore[attr-defined]
    if len(initials) > 1:
        raise InvalidArgumentError(
            f"sequence batching state '{input_name}' of model '{model}' must specify at most one initial_state"
        )
    initial = initials[0] if initials else None
    if initial is not None:
        dims = tuple(initial.dims)
        if type_name(initial.data_type) not in ("", datatype):
            raise InvalidArgumentError(
                f"initial state '{initial.name}' of state '{input_name}' of model '{model}' must have the data "
                "type of its state"
            )
    if any(d < 0 for d in dims):
        raise InvalidArgumentError(
            f"sequence batching state '{input_name}' of model '{model}' must have fixed dims (or an initial_state "
            "with fixed dims)"
        )
    dtype = NUMPY_DTYPES[datatype]
    if initial is not None and initial.WhichOneof("state_data") == "data_file":
        array = _read_initial_state(model_dir, initial.data_file, dtype, dims, input_name, model)
    else:
        array = np.zeros(dims, dtype=dtype)
    if config.max_batch_size > 0:
        array = array.reshape((1, *dims))
    array.setflags(write=False)
    return StateSpec(input_name, output_name, datatype, array, output_name in {t.name for t in config.output})


def _read_initial_state(
    model_dir: str, data_file: str, dtype: np.dtype, dims: tuple[int, ...], state: str, model: str
) -> np.ndarray:
    """The initial state in `<model_dir>/initial_state/<data_file>`, row-major raw bytes of exactly the state's size.

    Raises: InvalidArgumentError (a path that leaves that directory, a missing file, a wrong size).
    """
    root = os.path.realpath(os.path.join(model_dir, "initial_state"))
    path = os.path.realpath(os.path.join(root, data_file))
    where = f"initial state file of state '{state}' of model '{model}'"
    if os.path.isabs(data_file) or os.path.commonpath([root, path]) != root or not os.path.isfile(path):
        raise InvalidArgumentError(f"{where} must be a file inside the model's 'initial_state' directory")
    expected = element_count(dims) * dtype.itemsize
    if expected > MAX_INITIAL_STATE_BYTES or os.path.getsize(path) != expected:
        raise InvalidArgumentError(f"{where} must hold exactly {expected} bytes (its dims and data type)")
    with open(path, "rb") as file:
        data = file.read(expected + 1)
    if len(data) != expected:
        raise InvalidArgumentError(f"{where} must hold exactly {expected} bytes (its dims and data type)")
    return np.frombuffer(data, dtype=dtype).reshape(dims).copy()
