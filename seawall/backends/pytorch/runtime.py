"""The only module that imports torch: TorchScript modules from checked bytes, their `forward` schema, and runs.

Imports torch lazily (a server without the `torch` extra starts; a model needing it fails naming the extra), numpy,
this package's `naming` and `errors`. Modules are loaded with `torch.jit.load` only, on torch 2.6 or later (the fix
for CVE-2025-32434); `torch.load` is never called.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import threading
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from seawall.backends.pytorch.naming import TorchSettings
from seawall.errors import InternalError, SeawallError, UnsupportedError

MISSING = "backend 'pytorch' needs packages that are not installed: install seawall[torch]"
#: the oldest torch this backend runs on (CVE-2025-32434 is fixed in 2.6)
TORCH_FLOOR = (2, 6)
_THREADS_LOCK = threading.Lock()
_threads_set: dict[str, int] = {}  # torch's thread pools are per process: the first model's counts win, as in Triton
#: the intra-op thread count applied on this thread: OpenMP keeps it per thread (a count set on the loading thread
#: leaves a run on another thread with OpenMP's default, whose spinning team then competes with the server's threads)
_applied = threading.local()


def torch() -> ModuleType:
    """The torch module.

    Raises:
        UnsupportedError: not installed (naming the extra), or older than TORCH_FLOOR.
    """
    try:
        module = importlib.import_module("torch")
    except ImportError:
        raise UnsupportedError(MISSING) from None
    version = str(module.__version__).split("+", 1)[0].split(".")
    try:
        release = (int(version[0]), int(version[1]))
    except (IndexError, ValueError):
        release = (0, 0)
    if release < TORCH_FLOOR:
        raise UnsupportedError(
            f"backend 'pytorch' needs torch 2.6 or later (CVE-2025-32434); this installation has {module.__version__}"
        )
    return module


@contextlib.contextmanager
def translated(prefix: str) -> Iterator[None]:
    """torch's exceptions as INTERNAL errors with Triton's prefix (e.g. "PyTorch execute failure: ")."""
    try:
        yield
    except SeawallError:
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise InternalError(f"{prefix}{text[0] if text else type(exc).__name__}") from None


def load(data: bytes, settings: TorchSettings, model_name: str) -> Any:
    """A ScriptModule on the CPU from a checked TorchScript archive, in eval mode.

    Raises:
        UnsupportedError: torch missing or too old.
        InternalError: torch refused the archive.
    """
    module = torch()
    _set_threads(module, settings)
    with translated(f"unable to load model '{model_name}': "):
        script = module.jit.load(io.BytesIO(data), map_location="cpu")
        script.eval()
    return script


def _set_threads(module: ModuleType, settings: TorchSettings) -> None:
    with _THREADS_LOCK:
        if settings.intra_op_threads and "intra" not in _threads_set:
            module.set_num_threads(settings.intra_op_threads)
            _threads_set["intra"] = settings.intra_op_threads
        if settings.inter_op_threads and "inter" not in _threads_set:
            with contextlib.suppress(RuntimeError):  # torch refuses once parallel work has started
                module.set_num_interop_threads(settings.inter_op_threads)
            _threads_set["inter"] = settings.inter_op_threads


def arguments(script: Any) -> list[tuple[str, str]]:
    """`forward()`'s arguments (name, type kind; a list's whole type, e.g. "List[str]"), without `self`."""
    found = [(argument.name, _kind(argument.type)) for argument in script.forward.schema.arguments]
    if found and found[0][1] == "ClassType":
        found = found[1:]
    return found


def _kind(argument_type: Any) -> str:
    kind = str(argument_type.kind())
    return str(argument_type.annotation_str) if kind == "ListType" else kind


def run(
    script: Any,
    settings: TorchSettings,
    inputs: Sequence[np.ndarray | list[str]],
    names: Sequence[str] | None,
    bf16: Sequence[bool] = (),
) -> list[tuple[np.ndarray, bool]]:
    """Call forward() (worker thread) with the inputs in order, or as one dict under `names`; the outputs as a list
    of (array, is BF16). BF16 tensors travel as uint16 bit patterns (numpy has no bfloat16): `bf16[i]` says input
    `i` is one, and a bfloat16 output comes back as one. A string input is a list of str (passed as List[str]), and
    a List[str] output comes back as a 1-dimensional object array of UTF-8 bytes.

    Raises:
        InternalError: "PyTorch execute failure: ..." (Triton's text), or an output of an unsupported kind.
    """
    module = torch()
    intra = _threads_set.get("intra", 0)
    if intra and getattr(_applied, "intra", 0) != intra:
        module.set_num_threads(intra)
        _applied.intra = intra
    with translated("PyTorch execute failure: "):
        tensors = [_tensor(module, array, index < len(bf16) and bf16[index]) for index, array in enumerate(inputs)]
        module._C._set_graph_executor_optimize(settings.optimized_execution)  # thread-local, as in Triton
        with module.inference_mode(settings.inference_mode), module.no_grad():
            if names is not None:
                result = script(dict(zip(names, tensors, strict=True)))
            else:
                result = script(*tensors)
        if isinstance(result, tuple):
            items = list(result)
        elif isinstance(result, module.Tensor):
            items = [result]
        elif isinstance(result, list):
            _check_strings(result, "output must be of type Tensor or List[str]")
            items = [result]
        else:
            raise ValueError(
                "output must be of type Tensor, List[str] or Tuple containing one of these two types. It should not "
                "be a List / Dictionary of Tensors or a Scalar"
            )
        for index, item in enumerate(items):
            if isinstance(item, list):
                _check_strings(item, f"output at index {index} must be of type Tensor or List[str]")
            elif not isinstance(item, module.Tensor):
                raise ValueError(f"output at index {index} must be of type Tensor, received {type(item).__name__}")
        return [
            _strings(item) if isinstance(item, list) else _array(module, item.detach().contiguous()) for item in items
        ]


def _check_strings(items: list[Any], what: str) -> None:
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{what}, received List[{type(item).__name__}]")


def _strings(items: list[str]) -> tuple[np.ndarray, bool]:
    array = np.empty(len(items), dtype=np.object_)
    array[:] = [item.encode("utf-8", "surrogateescape") for item in items]
    return array, False


def _tensor(module: ModuleType, array: np.ndarray | list[str], is_bf16: bool) -> Any:
    if isinstance(array, list):
        return array
    tensor = module.from_numpy(array if array.flags.writeable else array.copy())
    return tensor.view(module.int16).view(module.bfloat16) if is_bf16 else tensor


def _array(module: ModuleType, tensor: Any) -> tuple[np.ndarray, bool]:
    if tensor.dtype == module.bfloat16:
        return tensor.view(module.int16).numpy().view(np.uint16), True
    return tensor.numpy(), False
