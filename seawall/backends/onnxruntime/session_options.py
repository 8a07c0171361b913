"""The onnxruntime session settings a model's config chooses: Triton's parameter keys and graph optimization level.

Imports `core.backend` (ModelConfig) and `errors`; never onnxruntime (`runtime.py` applies the settings). A parameter
this backend does not know is refused by name (Triton ignores it; see docs/differences.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from seawall.backends.model_files import triton_bool
from seawall.core.backend import ModelConfig
from seawall.errors import InvalidArgumentError

#: Seawall's own parameter: "true" runs the model on threads of the server instead of worker processes (isolated.py)
IN_PROCESS = "SEAWALL_IN_PROCESS"
#: Triton's parameter keys that this backend applies.
PARAMETERS = (
    "intra_op_thread_count",
    "inter_op_thread_count",
    "execution_mode",
    "enable_mem_pattern",
    "enable_mem_arena",
    "memory.enable_memory_arena_shrinkage",
)
#: `optimization { graph { level } }` → onnxruntime's GraphOptimizationLevel name (anything else: ORT_ENABLE_ALL).
GRAPH_LEVELS = {-1: "ORT_ENABLE_BASIC", 1: "ORT_ENABLE_EXTENDED", 2: "ORT_DISABLE_ALL"}
#: More threads than this per session is a configuration mistake, not a tuning choice.
MAX_THREADS = 1024


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What one model's sessions are created with (0 thread counts: onnxruntime's default)."""

    graph_level: str = "ORT_ENABLE_ALL"
    parallel: bool = False  # execution_mode 1: ORT_PARALLEL
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    mem_pattern: bool | None = None  # None: onnxruntime's default
    mem_arena: bool | None = None
    arena_shrinkage: str = ""  # a run option: the devices whose arenas shrink after each run ("cpu:0")


def parse(config: ModelConfig) -> SessionSettings:
    """The session settings of `config`.

    Raises:
        InvalidArgumentError: an unknown parameter (named), or a value Triton refuses (Triton's message).
    """
    params = {key: value.string_value for key, value in config.parameters.items()}
    for key in sorted(params):
        if key not in PARAMETERS and key != IN_PROCESS:
            raise InvalidArgumentError(
                f"parameter '{key[:128]}' of model '{config.name}' is not supported by the onnxruntime backend "
                f"(supported: {', '.join(PARAMETERS)})"
            )
    execution_mode = _int(params.get("execution_mode", "0"))
    if execution_mode not in (0, 1):
        raise InvalidArgumentError(
            "Invalid configuration value provided. Expected values for  execution_mode are 0 or 1 but got "
            f"{execution_mode} ."
        )
    threads = {}
    for key in ("intra_op_thread_count", "inter_op_thread_count"):
        threads[key] = _int(params.get(key, "0"))
        if not 0 <= threads[key] <= MAX_THREADS:
            raise InvalidArgumentError(
                f"parameter '{key}' of model '{config.name}' must be between 0 and {MAX_THREADS}"
            )
    level = config.optimization.graph.level if config.optimization.HasField("graph") else 0
    shrinkage = params.get("memory.enable_memory_arena_shrinkage", "")
    if shrinkage and not all(_device(part) for part in shrinkage.split(";")):
        raise InvalidArgumentError(
            f"parameter 'memory.enable_memory_arena_shrinkage' of model '{config.name}' must list CPU devices "
            f"('cpu:0'), got '{shrinkage[:64]}'"
        )
    return SessionSettings(
        graph_level=GRAPH_LEVELS.get(level, "ORT_ENABLE_ALL"),
        parallel=execution_mode == 1,
        intra_op_threads=threads["intra_op_thread_count"],
        inter_op_threads=threads["inter_op_thread_count"],
        mem_pattern=triton_bool(params["enable_mem_pattern"]) if "enable_mem_pattern" in params else None,
        mem_arena=triton_bool(params["enable_mem_arena"]) if "enable_mem_arena" in params else None,
        arena_shrinkage=shrinkage,
    )


def _int(value: str) -> int:
    """Triton's ParseIntValue (std::stoi: leading digits count)."""
    text = value.strip()
    digits = len(text) - len(text.lstrip("+-"))
    end = digits
    while end < len(text) and text[end].isdigit():
        end += 1
    if end == digits or digits > 1:
        raise InvalidArgumentError(f"failed to convert '{value[:64]}' to integral number")
    number = int(text[:end])
    if not -(2**31) <= number < 2**31:
        raise InvalidArgumentError(f"failed to convert '{value[:64]}' to integral number")
    return number


def _device(part: str) -> bool:
    kind, _, number = part.partition(":")
    return kind == "cpu" and number.isdigit()
