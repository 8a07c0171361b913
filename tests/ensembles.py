"""The ensemble test repository shared by the e2e and differential tests: the ens_* models of tests/models and
one bad ensemble per load-time check, each with the reason Triton 2.51 gives (checked on the real binary)."""

from __future__ import annotations

import shutil
from pathlib import Path

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
