"""The ensemble test repository shared by the e2e and differential tests: the ens_* models of tests/models and
one bad ensemble per load-time check, each with the reason Triton 2.51 gives (checked on the real binary)."""

from __future__ import annotations

import queue
import shutil
from pathlib import Path
from typing import Any

from tests.harness import TEST_MODELS

#: the composing models and ensembles copied from tests/models
MODELS = (
    "ens_pre",
    "ens_model",
    "ens_post",
    "ens_branch_a",
    "ens_branch_b",
    "ens_join",
    "ens_chain",
    "ens_diamond",
    "ens_error",
    "ens_nested",
    "ens_maybe",
    "ens_optional",
    "error_raise",
    "init_fail",
)

_INPUT = '{ name: "INPUT", data_type: TYPE_FP32, dims: [ 4 ] }'
_OUTPUT = '{ name: "OUTPUT", data_type: TYPE_FP32, dims: [ 4 ] }'


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str], version: int = -1) -> str:
    ins = ", ".join(f'{{ key: "{k}" value: "{v}" }}' for k, v in inputs.items())
    outs = ", ".join(f'{{ key: "{k}" value: "{v}" }}' for k, v in outputs.items())
    return f'{{ model_name: "{model}" model_version: {version} input_map [ {ins} ] output_map [ {outs} ] }}'


def _ensemble(name: str, steps: list[str], inputs: str = _INPUT, outputs: str = _OUTPUT, batch: int = 8) -> str:
    return (
        f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {batch}\ninput [ {inputs} ]\noutput [ {outputs} ]\n'
        f"ensemble_scheduling {{ step [ {', '.join(steps)} ] }}\n"
    )


_PRE = _step("ens_pre", {"INPUT0": "INPUT"}, {"OUTPUT0": "OUTPUT"})

#: bad ensemble → (config.pbtxt, the reason of its load failure)
BAD: dict[str, tuple[str, str]] = {
    "bad_unknown": (
        _ensemble("bad_unknown", [_step("no_such_model", {"INPUT0": "INPUT"}, {"OUTPUT0": "OUTPUT"})]),
        "ensemble bad_unknown contains models that are not available or ambiguous: no_such_model",
    ),
    "bad_twice": (
        _ensemble("bad_twice", [_PRE, _step("ens_model", {"INPUT0": "INPUT"}, {"OUTPUT0": "OUTPUT"})]),
        "ensemble tensor 'OUTPUT' can appear in an output map only once for ensemble 'bad_twice' step 1",
    ),
    "bad_never": (
        _ensemble(
            "bad_never",
            [
                _step("ens_pre", {"INPUT0": "INPUT"}, {"OUTPUT0": "A"}),
                _step("ens_join", {"A": "A", "B": "GHOST"}, {"SUM": "OUTPUT"}),
            ],
        ),
        "output 'OUTPUT' for ensemble 'bad_never' is not written: at least one of its depending tensors, 'GHOST', "
        "is not connected",
    ),
    "bad_output_never": (
        _ensemble("bad_output_never", [_step("ens_pre", {"INPUT0": "INPUT"}, {"OUTPUT0": "OTHER"})]),
        "ensemble output 'OUTPUT' for ensemble bad_output_never' is not used",
    ),
    "bad_cycle": (
        _ensemble(
            "bad_cycle",
            [
                _step("ens_pre", {"INPUT0": "INPUT"}, {"OUTPUT0": "T1"}),
                _step("ens_join", {"A": "T1", "B": "T3"}, {"SUM": "T2"}),
                _step("ens_model", {"INPUT0": "T2"}, {"OUTPUT0": "T3"}),
                _step("ens_post", {"INPUT0": "T2"}, {"OUTPUT0": "OUTPUT"}),
            ],
        ),
        "output 'OUTPUT' for ensemble 'bad_cycle' is not written: at least one of its depending tensors, 'T3', "
        "is not connected",
    ),
    "bad_unused": (
        _ensemble("bad_unused", [_PRE], inputs=_INPUT + ', { name: "UNUSED", data_type: TYPE_FP32, dims: [ 4 ] }'),
        "ensemble input 'UNUSED' for ensemble bad_unused' is not used",
    ),
    "bad_nosteps": (_ensemble("bad_nosteps", []), "must specify 'step' for ensemble 'bad_nosteps'"),
    "bad_dtype": (
        _ensemble("bad_dtype", [_PRE], inputs='{ name: "INPUT", data_type: TYPE_INT32, dims: [ 4 ] }'),
        "in ensemble bad_dtype, ensemble tensor INPUT: inconsistent data type: TYPE_INT32 is inferred from model "
        "bad_dtype while TYPE_FP32 is inferred from model ens_pre",
    ),
    "bad_shape": (
        _ensemble("bad_shape", [_PRE], inputs='{ name: "INPUT", data_type: TYPE_FP32, dims: [ 3 ] }'),
        "in ensemble bad_shape, ensemble tensor INPUT: inconsistent shape: [-1,3] is inferred from model bad_shape "
        "while [-1,4] is inferred from model ens_pre",
    ),
    "bad_step_dtype": (
        _ensemble(
            "bad_step_dtype",
            [
                _step("ens_post", {"INPUT0": "INPUT"}, {"LABEL": "L"}),
                _step("ens_pre", {"INPUT0": "L"}, {"OUTPUT0": "OUTPUT"}),
            ],
        ),
        "in ensemble bad_step_dtype, ensemble tensor L: inconsistent data type: TYPE_STRING is inferred from model "
        "ens_post while TYPE_FP32 is inferred from model ens_pre",
    ),
    "bad_output_shape": (
        _ensemble("bad_output_shape", [_PRE], outputs='{ name: "OUTPUT", data_type: TYPE_FP32, dims: [ 2, 2 ] }'),
        "in ensemble bad_output_shape, ensemble tensor OUTPUT: inconsistent shape: [-1,2,2] is inferred from model "
        "bad_output_shape while [-1,4] is inferred from model ens_pre",
    ),
    "bad_batch": (
        _ensemble("bad_batch", [_PRE], batch=16),
        "ensemble bad_batch allows maximum batch size 16, but it contains model ens_pre which only allows maximum "
        "batch size to be 8",
    ),
    "bad_input_key": (
        _ensemble("bad_input_key", [_step("ens_pre", {"NOPE": "INPUT"}, {"OUTPUT0": "OUTPUT"})]),
        "in ensemble bad_input_key, ensemble tensor INPUT is mapping to non-existing input NOPE in model ens_pre",
    ),
    "bad_output_key": (
        _ensemble("bad_output_key", [_step("ens_pre", {"INPUT0": "INPUT"}, {"NOPE": "OUTPUT"})]),
        "in ensemble bad_output_key, ensemble tensor OUTPUT is mapped from non-existing output NOPE in model ens_pre",
    ),
    "bad_unmapped": (
        _ensemble("bad_unmapped", [_step("ens_join", {"A": "INPUT"}, {"SUM": "OUTPUT"})]),
        "in ensemble bad_unmapped, input B in model ens_join is not mapped to any ensemble tensors",
    ),
    "bad_version": (
        _ensemble("bad_version", [_step("ens_pre", {"INPUT0": "INPUT"}, {"OUTPUT0": "OUTPUT"}, version=7)]),
        "ensemble 'bad_version' depends on 'ens_pre' whose required version 7 is not loaded.",
    ),
    "bad_self_loop": (
        _ensemble("bad_self_loop", [_step("bad_self_loop", {"INPUT": "INPUT"}, {"OUTPUT": "OUTPUT"})]),
        "circular dependency between ensembles: bad_self_loop -> ... -> bad_self_loop -> bad_self_loop",
    ),
    "bad_loop_a": (
        _ensemble("bad_loop_a", [_step("bad_loop_b", {"INPUT": "INPUT"}, {"OUTPUT": "OUTPUT"})]),
        "circular dependency between ensembles: bad_loop_a -> ... -> bad_loop_b -> bad_loop_a",
    ),
    "bad_loop_b": (
        _ensemble("bad_loop_b", [_step("bad_loop_a", {"INPUT": "INPUT"}, {"OUTPUT": "OUTPUT"})]),
        "circular dependency between ensembles: bad_loop_b -> ... -> bad_loop_a -> bad_loop_b",
    ),
    "bad_failing": (
        _ensemble(
            "bad_failing",
            [_step("init_fail", {"INPUT0": "INPUT"}, {"OUTPUT0": "OUTPUT"})],
            inputs='{ name: "INPUT", data_type: TYPE_FP32, dims: [ -1 ] }',
            outputs='{ name: "OUTPUT", data_type: TYPE_FP32, dims: [ -1 ] }',
            batch=0,
        ),
        # followed by the composing model's own load failure, which names its file (Seawall: a relative path)
        "ensemble 'bad_failing' depends on 'init_fail' which has no loaded version. Model 'init_fail' loading "
        "failed with error: version 1 is at UNAVAILABLE state: ",
    ),
}


def make_repository(root: Path, models: tuple[str, ...] = MODELS, bad: bool = True) -> Path:
    """Copy `models` (and with `bad` every bad ensemble) into `root`; return `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for model in models:
        shutil.copytree(TEST_MODELS / model, root / model, ignore=shutil.ignore_patterns("__pycache__"))
    if bad:
        for name, (config, _) in BAD.items():
            (root / name / "1").mkdir(parents=True)
            (root / name / "config.pbtxt").write_text(config)
    return root


def load_error(name: str) -> str:
    """Seawall's whole load error for the bad ensemble `name` (bad_failing: its beginning)."""
    reason = BAD[name][1]
    return f"load failed for model '{name}': {reason}" + ("" if name == "bad_failing" else "\n")


#: the composing models of the streaming ensembles
STREAM_MODELS = ("ens_decoupled", "ens_plus", "decoupled_modes")

_MODES_IO = (
    '{ name: "IN", data_type: TYPE_INT32, dims: [ 1 ] }',
    '{ name: "OUT", data_type: TYPE_INT32, dims: [ -1 ] }',
)

#: ensembles with a decoupled step (each one is decoupled itself), and es_declared, which says it is decoupled
#: but has no decoupled step (Triton, and Seawall, make it not decoupled)
STREAM: dict[str, str] = {
    "es_single": _ensemble("es_single", [_step("ens_decoupled", {"INPUT0": "INPUT"}, {"OUTPUT0": "OUTPUT"})], batch=0),
    "es_chain": _ensemble(
        "es_chain",
        [
            _step("ens_decoupled", {"INPUT0": "INPUT"}, {"OUTPUT0": "MID"}),
            _step("ens_plus", {"INPUT0": "MID"}, {"OUTPUT0": "OUTPUT"}),
        ],
        batch=0,
    ),
    "es_modes": _ensemble("es_modes", [_step("decoupled_modes", {"IN": "IN"}, {"OUT": "OUT"})], *_MODES_IO, batch=0),
    "es_declared": _ensemble(
        "es_declared", [_step("ens_plus", {"INPUT0": "INPUT"}, {"OUTPUT0": "OUTPUT"})], batch=0
    ).replace("platform:", "model_transaction_policy { decoupled: true }\nplatform:"),
}

#: a streaming ensemble Triton refuses → (config.pbtxt, its reason): an ensemble output from the decoupled step
#: and one from a step on the ensemble's input
STREAM_BAD = {
    "es_two": (
        _ensemble(
            "es_two",
            [
                _step("ens_decoupled", {"INPUT0": "INPUT"}, {"OUTPUT0": "OUTPUT"}),
                _step("ens_plus", {"INPUT0": "INPUT"}, {"OUTPUT0": "DIRECT"}),
            ],
            outputs=_OUTPUT + ', { name: "DIRECT", data_type: TYPE_FP32, dims: [ 4 ] }',
            batch=0,
        ),
        "in ensemble es_two, step of model 'es_two' receives inputs originated from different decoupled models",
    ),
}


def make_stream_repository(root: Path) -> Path:
    """The streaming ensembles, their composing models and the refused one in `root`; return `root`."""
    make_repository(root, STREAM_MODELS, bad=False)
    for name, config in {**STREAM, **{n: c for n, (c, _) in STREAM_BAD.items()}}.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(config)
    return root


def stream(grpc_url: str, model: str, inputs: list[Any], parameters: dict[str, Any] | None = None) -> list[Any]:
    """One request over a gRPC ModelStreamInfer stream: each message as (outputs, final) or ("error", message),
    until the final one, an error, or 30 s without a message ("timeout")."""
    import tritonclient.grpc as grpcclient

    messages: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(grpc_url)
    client.start_stream(callback=lambda result, error: messages.put((result, error)))
    got: list[Any] = []
    try:
        client.async_stream_infer(model, inputs, parameters=parameters, enable_empty_final_response=True)
        while True:
            try:
                result, error = messages.get(timeout=30)
            except queue.Empty:
                got.append("timeout")
                break
            if error is not None:
                got.append(("error", error.message()))
                break
            response = result.get_response()
            final = response.parameters["triton_final_response"].bool_param
            got.append(({o.name: result.as_numpy(o.name).tolist() for o in response.outputs}, final))
            if final:
                break
    finally:
        client.stop_stream()
        client.close()
    return got


def fp32_input(values: list[float]) -> list[Any]:
    import numpy as np
    import tritonclient.grpc as grpcclient

    tensor = grpcclient.InferInput("INPUT", [len(values)], "FP32")
    tensor.set_data_from_numpy(np.array(values, dtype=np.float32))
    return [tensor]


def int32_input(value: int) -> list[Any]:
    import numpy as np
    import tritonclient.grpc as grpcclient

    tensor = grpcclient.InferInput("IN", [1], "INT32")
    tensor.set_data_from_numpy(np.array([value], dtype=np.int32))
    return [tensor]
