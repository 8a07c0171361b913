"""The only module that imports onnxruntime: sessions from inlined model bytes, their signatures, error translation.

Imports onnxruntime (lazily: a server without the `onnx` extra still starts, and a model that needs it fails its
load saying what to install), this package's `signature` and `session_options`, and `errors`.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from seawall.backends.onnxruntime.session_options import SessionSettings
from seawall.backends.onnxruntime.signature import Signature, tensor_info
from seawall.errors import InternalError, InvalidArgumentError, SeawallError, UnsupportedError

#: What a model needing onnxruntime says when it is not installed.
MISSING = "backend 'onnxruntime' needs packages that are not installed: install seawall[onnx]"  # as the registry
_ORT_MESSAGE = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*(\d+)\s*:\s*[A-Z_]+\s*:\s*(.*)$", re.DOTALL)


def onnxruntime() -> ModuleType:
    """The onnxruntime module.

    Raises:
        UnsupportedError: it is not installed (the message names the extra to install).
    """
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        raise UnsupportedError(MISSING) from None


def available() -> bool:
    """Whether onnxruntime and onnx can be imported (the start-up table and the security report)."""
    try:
        importlib.import_module("onnxruntime")
        importlib.import_module("onnx")
    except ImportError:
        return False
    return True


def ort_message(exc: BaseException) -> str:
    """Triton's form of an onnxruntime error: "onnx runtime error <code>: <message>"."""
    text = str(exc)
    match = _ORT_MESSAGE.match(text)
    if match is None:
        return f"onnx runtime error: {text}"
    return f"onnx runtime error {match.group(1)}: {match.group(2)}"


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn onnxruntime's exceptions into INTERNAL errors with Triton's text, prefixed by `what` when given."""
    try:
        yield
    except SeawallError:
        raise
    except Exception as exc:  # onnxruntime's own classes (Fail, InvalidArgument, ...) derive from Exception only
        message = ort_message(exc)
        raise InternalError(f"{what}: {message}" if what else message) from None


def create_session(data: bytes, settings: SessionSettings, model_name: str) -> Any:
    """An InferenceSession on the CPU provider over `data` (a model with no external references left).

    Raises:
        UnsupportedError: onnxruntime is missing.
        InternalError: onnxruntime refused the model ("onnx runtime error ...").
    """
    ort = onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, settings.graph_level)
    options.execution_mode = ort.ExecutionMode.ORT_PARALLEL if settings.parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    if settings.intra_op_threads:
        options.intra_op_num_threads = settings.intra_op_threads
    if settings.inter_op_threads:
        options.inter_op_num_threads = settings.inter_op_threads
    if settings.mem_pattern is not None:
        options.enable_mem_pattern = settings.mem_pattern
    if settings.mem_arena is not None:
        options.enable_cpu_mem_arena = settings.mem_arena
    options.log_severity_level = 4  # fatal only: the backend reports onnxruntime's errors itself
    with translated(f"unable to load model '{model_name}'"):
        return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


def run_options(settings: SessionSettings) -> Any:
    """The RunOptions every run of a model's sessions uses (None: the defaults)."""
    if not settings.arena_shrinkage:
        return None
    ort = onnxruntime()
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", settings.arena_shrinkage)
    return options


def signature_of(session: Any) -> Signature:
    """The inputs, overridable initializers and outputs a session declares."""
    return Signature(
        inputs=tuple(tensor_info(arg.name, arg.type, arg.shape or ()) for arg in session.get_inputs()),
        initializers=tuple(
            tensor_info(arg.name, arg.type, arg.shape or ()) for arg in session.get_overridable_initializers()
        ),
        outputs=tuple(tensor_info(arg.name, arg.type, arg.shape or ()) for arg in session.get_outputs()),
    )


def refuse_bf16(signature: Signature, model_name: str) -> None:
    """onnxruntime's Python API has no numpy type for bfloat16 tensors.

    Raises:
        InvalidArgumentError: an input or output is BF16.
    """
    for info in (*signature.inputs, *signature.initializers, *signature.outputs):
        if info.data_type == "TYPE_BF16":
            raise InvalidArgumentError(
                f"tensor '{info.name}' of model '{model_name}' is BF16, which the onnxruntime backend does not support"
            )
