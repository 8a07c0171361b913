"""A repository of `probe` models (tests/models/probe) with model warmup, reshape and instance groups, good and
bad, shared by the end-to-end tests and the differential tests against Triton 2.51.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np

from tests.harness import TEST_MODELS

_INFO = 'output [ { name: "INFO", data_type: TYPE_STRING, dims: [ 1 ] } ]'
_FP32_3 = 'input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 3 ] } ]'


def _warmup(name: str, setting: str, batch_size: int = 1, key: str = "INPUT0", extra: str = "") -> str:
    return (
        f'model_warmup [ {{ name: "{name}" batch_size: {batch_size} {extra} '
        f'inputs {{ key: "{key}" value {{ {setting} }} }} }} ]'
    )


def _reshaped(dims: str, shape: str) -> str:
    return f'input [ {{ name: "INPUT0", data_type: TYPE_FP32, dims: {dims} reshape: {{ shape: {shape} }} }} ]'


def _fp32_3(data: str) -> str:
    return f"data_type: TYPE_FP32 dims: [ 3 ] {data}"


#: model name → config body (after name and backend)
GOOD: dict[str, str] = {
    "warm_data": (
        "max_batch_size: 4\n"
        'input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 3 ] }, '
        '{ name: "S", data_type: TYPE_STRING, dims: [ 2 ] } ]\n'
        f"{_INFO}\n"
        'model_warmup [ { name: "w1" batch_size: 2 count: 2 '
        'inputs { key: "INPUT0" value { data_type: TYPE_FP32 dims: [ 3 ] zero_data: true } } '
        'inputs { key: "S" value { data_type: TYPE_STRING dims: [ 2 ] zero_data: true } } }, '
        '{ name: "w2" batch_size: 1 '
        'inputs { key: "INPUT0" value { data_type: TYPE_FP32 dims: [ 3 ] random_data: true } } '
        'inputs { key: "S" value { data_type: TYPE_STRING dims: [ 2 ] random_data: true } } }, '
        '{ name: "w3" batch_size: 1 '
        'inputs { key: "INPUT0" value { data_type: TYPE_FP32 dims: [ 3 ] input_data_file: "in0" } } '
        'inputs { key: "S" value { data_type: TYPE_STRING dims: [ 2 ] input_data_file: "sub/s" } } } ]'
    ),
    "warm_nobatch": (
        f"max_batch_size: 0\n{_FP32_3}\n{_INFO}\n"
        + _warmup("w", _fp32_3("random_data: true"), batch_size=0, extra="count: 3")
    ),
    "warm_reshape": (
        f"max_batch_size: 4\n{_reshaped('[ 4 ]', '[ 2, 2 ]')}\n{_INFO}\n"
        + _warmup("w", "data_type: TYPE_FP32 dims: [ 4 ] zero_data: true", batch_size=2)
    ),
    "reshape_in": (f"max_batch_size: 4\n{_reshaped('[ 4 ]', '[ 2, 2 ]')}\n{_INFO}"),
    "reshape_scalar": (
        'max_batch_size: 4\ninput [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 1 ] reshape: { shape: [ ] } } ]\n'
        f"{_INFO}"
    ),
    "reshape_var": (
        "max_batch_size: 0\n"
        'input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ -1, 4 ] reshape: { shape: [ -1, 2, 2 ] } } ]\n'
        'output [ { name: "INFO", data_type: TYPE_STRING, dims: [ 1 ] }, '
        '{ name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1, 4 ] reshape: { shape: [ -1, 2, 2 ] } } ]'
    ),
    "reshape_out": (
        "max_batch_size: 4\n"
        'input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 4 ] } ]\n'
        'output [ { name: "INFO", data_type: TYPE_STRING, dims: [ 1 ] }, '
        '{ name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 4 ] reshape: { shape: [ 2, 2 ] } } ]'
    ),
    "groups": (
        f"max_batch_size: 0\n{_FP32_3}\n{_INFO}\n"
        'instance_group [ { count: 2 kind: KIND_CPU }, { name: "named" count: 1 kind: KIND_MODEL }, '
        "{ kind: KIND_AUTO } ]"
    ),
    "pair": f"max_batch_size: 0\n{_FP32_3}\n{_INFO}\ninstance_group [ {{ count: 2 kind: KIND_CPU }} ]",
}

#: model name → (config body, Triton 2.51's reason, or None where Seawall deliberately differs)
BAD: dict[str, tuple[str, str | None]] = {
    "warm_fail": (
        f'max_batch_size: 4\n{_FP32_3}\n{_INFO}\nparameters {{ key: "fail_first" value {{ string_value: "1" }} }}\n'
        + _warmup("w", _fp32_3("zero_data: true")),
        "failed to run warmup sample 'w': Failed to process the request(s) for model 'warm_fail_0', "
        "message: TritonModelException: warmup boom",
    ),
    "warm_nodata": (
        f"max_batch_size: 4\n{_FP32_3}\n{_INFO}\n" + _warmup("w", "data_type: TYPE_FP32 dims: [ 3 ]"),
        "[request id: <id_unknown>] warmup setting expects input 'INPUT0' to have input_data_type set",
    ),
    "warm_vardim": (
        'max_batch_size: 4\ninput [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]\n'
        f"{_INFO}\n" + _warmup("w", "data_type: TYPE_FP32 dims: [ -1 ] zero_data: true"),
        "warmup setting expects all variable-size dimensions are specified for input 'INPUT0'",
    ),
    "warm_baddtype": (
        f"max_batch_size: 4\n{_FP32_3}\n{_INFO}\n" + _warmup("w", "data_type: TYPE_INT32 dims: [ 3 ] zero_data: true"),
        "[request id: <id_unknown>] inference input 'INPUT0' data-type is 'INT32', but model 'warm_baddtype' "
        "expects 'FP32'",
    ),
    "warm_missinginput": (
        "max_batch_size: 4\n"
        'input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 3 ] }, '
        '{ name: "INPUT1", data_type: TYPE_FP32, dims: [ 3 ] } ]\n'
        f"{_INFO}\n" + _warmup("w", _fp32_3("zero_data: true")),
        "[request id: <id_unknown>] expected 2 inputs but got 1 inputs for model 'warm_missinginput'. "
        "Got input(s) ['INPUT0'], but missing required input(s) ['INPUT1']. Please provide all required input(s).",
    ),
    "warm_short": (
        f"max_batch_size: 4\n{_FP32_3}\n{_INFO}\n" + _warmup("w", _fp32_3('input_data_file: "short"')),
        None,  # Triton: "from shortonly has"
    ),
    "warm_strbad": (
        'max_batch_size: 0\ninput [ { name: "S", data_type: TYPE_STRING, dims: [ 2 ] } ]\n'
        f"{_INFO}\n" + _warmup("w", 'data_type: TYPE_STRING dims: [ 2 ] input_data_file: "s"', key="S"),
        None,  # Triton ends it with "; "
    ),
    # a file outside warmup/: Triton reads the first two (READY), fails on the other two with its full path
    "warm_escape": (
        f"max_batch_size: 4\n{_FP32_3}\n{_INFO}\n" + _warmup("w", _fp32_3('input_data_file: "../config.pbtxt"')),
        None,
    ),
    "warm_abs": (
        f"max_batch_size: 4\n{_FP32_3}\n{_INFO}\n" + _warmup("w", _fp32_3('input_data_file: "/etc/hostname"')),
        None,
    ),
    "warm_symlink": (
        f"max_batch_size: 4\n{_FP32_3}\n{_INFO}\n" + _warmup("w", _fp32_3('input_data_file: "link"')),
        None,
    ),
    "warm_missing": (
        f"max_batch_size: 4\n{_FP32_3}\n{_INFO}\n" + _warmup("w", _fp32_3('input_data_file: "nope"')),
        None,
    ),
    "rs_size": (
        'max_batch_size: 4\ninput [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 4 ] reshape: { shape: [ 3 ] } } ]\n'
        f"{_INFO}",
        "model input 'INPUT0' has different size for dims and reshape for rs_size",
    ),
    "rs_var": (
        "max_batch_size: 4\n"
        'input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ -1, 4 ] reshape: { shape: [ 2, -1, 2 ] } } ]\n'
        f"{_INFO}",
        "model input 'INPUT0' has different size for dims and reshape for rs_var",
    ),
    "rs_var_count": (
        "max_batch_size: 4\n"
        'input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ -1, -1 ] reshape: { shape: [ -1 ] } } ]\n'
        f"{_INFO}",
        "model input 'INPUT0' has different number of variable-size dimensions for dims and reshape for rs_var_count",
    ),
    "rs_neg": (
        f"max_batch_size: 4\n{_reshaped('[ 4 ]', '[ -2, -2 ]')}\n{_INFO}",
        "model input 'INPUT0' reshape dimensions must be integer >= 1, or -1 to indicate a variable-size dimension "
        "for rs_neg",
    ),
    "rs_out": (
        f"max_batch_size: 4\n{_FP32_3}\n"
        'output [ { name: "INFO", data_type: TYPE_STRING, dims: [ 1 ] reshape: { shape: [ 2 ] } } ]',
        "model output 'INFO' has different size for dims and reshape for rs_out",
    ),
    "gpu": (
        f"max_batch_size: 0\n{_FP32_3}\n{_INFO}\ninstance_group [ {{ count: 1 kind: KIND_GPU }} ]",
        "instance group gpu_0 of model gpu has kind KIND_GPU but no GPUs are available",
    ),
}

#: Seawall's reasons where they differ from Triton's (None above)
SEAWALL_REASONS: dict[str, str] = {
    "warm_bigbatch": "failed to run warmup sample 'w': batch size 9 for 'warm_bigbatch_0', max allowed is 4",
    "warm_short": "[request id: <id_unknown>] warmup setting expects 12 bytes, but the data provided from short "
    "only has 2 bytes",
    "warm_strbad": "failed to run warmup sample 'w': incomplete string data for inference input 'S', "
    "expecting string of length 99 but only 2 bytes available",
    "warm_escape": "warmup sample 'w': input_data_file '../config.pbtxt' of input 'INPUT0' must be a relative path "
    "inside the model's warmup directory",
    "warm_abs": "warmup sample 'w': input_data_file '/etc/hostname' of input 'INPUT0' must be a relative path "
    "inside the model's warmup directory",
    "warm_symlink": "warmup sample 'w': input_data_file 'link' of input 'INPUT0' leaves the model's warmup directory",
    "warm_missing": "warmup sample 'w': input_data_file 'nope' of input 'INPUT0' is not a file in the model's "
    "warmup directory",
}


#: bad models never sent to Triton (it would allocate the 400 MB sample, or crash)
SEAWALL_ONLY: dict[str, str] = {
    # Triton 2.51 answers it with its reason repeated once per request, or crashes (SIGSEGV; 2 loads in 2 with
    # --model-load-thread-count=1, 2 in 5 otherwise), taking every other model with it
    "warm_bigbatch": f"max_batch_size: 4\n{_FP32_3}\n{_INFO}\n"
    + _warmup("w", _fp32_3("zero_data: true"), batch_size=9),
    "warm_huge": f"max_batch_size: 0\n{_FP32_3}\n{_INFO}\n"
    + _warmup("w", "data_type: TYPE_FP32 dims: [ 100000000 ] zero_data: true"),
    # two inputs of 40 MB: each within the tensor limit, together more than a request may carry
    "warm_bigsample": "max_batch_size: 0\n"
    'input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ -1 ] }, '
    '{ name: "INPUT1", data_type: TYPE_FP32, dims: [ -1 ] } ]\n'
    f"{_INFO}\n"
    'model_warmup [ { name: "w" batch_size: 1 '
    'inputs { key: "INPUT0" value { data_type: TYPE_FP32 dims: [ 10000000 ] zero_data: true } } '
    'inputs { key: "INPUT1" value { data_type: TYPE_FP32 dims: [ 10000000 ] zero_data: true } } } ]',
    # a BYTES element whose length prefix claims 2 GB
    "warm_bigstring": 'max_batch_size: 0\ninput [ { name: "S", data_type: TYPE_STRING, dims: [ 1 ] } ]\n'
    f"{_INFO}\n" + _warmup("w", 'data_type: TYPE_STRING dims: [ 1 ] input_data_file: "s"', key="S"),
}
SEAWALL_REASONS["warm_huge"] = (
    "warmup sample 'w': input 'INPUT0' is larger than the server's tensor limits "
    "(100000000 elements, at most 67108864 bytes)"
)
SEAWALL_REASONS["warm_bigsample"] = "warmup sample 'w' is larger than a request may be (67108864 bytes)"
SEAWALL_REASONS["warm_bigstring"] = (
    "warmup sample 'w': input 'S' is larger than the server's tensor limits (more than 67108864 bytes)"
)


def build(root: Path, seawall_only: bool = True) -> Path:
    """Write the repository under `root` (the symlink's target, `root/outside`, beside it); return it."""
    repository = root / "repository"
    probe = TEST_MODELS / "probe" / "1" / "model.py"
    models = {**GOOD, **{name: body for name, (body, _) in BAD.items()}, **(SEAWALL_ONLY if seawall_only else {})}
    for name, body in models.items():
        (repository / name / "1").mkdir(parents=True)
        (repository / name / "warmup").mkdir()
        shutil.copy(probe, repository / name / "1" / "model.py")
        (repository / name / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "python"\n{body}\n')
    warmup = repository / "warm_data" / "warmup"
    np.array([1.5, 2.5, 3.5], dtype="<f4").tofile(warmup / "in0")
    (warmup / "sub").mkdir()
    (warmup / "sub" / "s").write_bytes(struct.pack("<I", 2) + b"hi" + struct.pack("<I", 3) + b"abc")
    (repository / "warm_short" / "warmup" / "short").write_bytes(b"ab")
    (repository / "warm_strbad" / "warmup" / "s").write_bytes(
        struct.pack("<I", 2) + b"hi" + struct.pack("<I", 99) + b"ab"
    )
    (root / "outside").write_bytes(b"\0" * 64)
    if seawall_only:
        (repository / "warm_bigstring" / "warmup" / "s").write_bytes(struct.pack("<I", 2**31) + b"ab")
    (repository / "warm_symlink" / "warmup" / "link").symlink_to(root / "outside")
    return repository
