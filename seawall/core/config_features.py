"""What a model config may ask of Seawall beyond Triton's own checks: the features Seawall does not implement
(refused by name at load, never ignored) and Seawall's own config parameters that every backend shares.

Imports `core.config_proto`, `errors`. Pure functions of the config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from seawall.core.config_proto import ModelConfig, model_config_pb2
from seawall.errors import InvalidArgumentError

#: Legacy `platform` strings → backend name.
PLATFORM_BACKENDS: Mapping[str, str] = {
    "onnxruntime_onnx": "onnxruntime",
    "pytorch_libtorch": "pytorch",
    "tensorflow_savedmodel": "tensorflow",
    "tensorflow_graphdef": "tensorflow",
    "tensorrt_plan": "tensorrt",
}


def backend_of(config: ModelConfig) -> str:
    """The backend a config names: its `backend`, else the one its legacy `platform` stands for."""
    backend: str = config.backend or PLATFORM_BACKENDS.get(config.platform, config.platform)
    return backend


_DEFAULT_PRIORITY = model_config_pb2.ModelOptimizationPolicy.PRIORITY_DEFAULT
_FORMAT_NONE = model_config_pb2.ModelInput.FORMAT_NONE

#: Every ModelConfig feature Seawall does not implement, as (feature, is it set?): a model that sets one fails to
#: load with "<feature> is not supported by Seawall yet", never loads with it silently ignored. Fields missing from
#: here are implemented (name, platform/backend, version_policy, max_batch_size, dims/data_type/optional/
#: label_filename, dynamic_batching's preferred_batch_size / max_queue_delay_microseconds / priority levels / queue
#: policies (core/request_queue.py) / preserve_ordering, instance_group name/kind/count/rate_limiter
#: (core/rate_limiter.py), default_model_filename, model_warmup (core/warmup.py), input/output reshape
#: (core/reshape.py), parameters, model_transaction_policy (each backend says whether it serves decoupled models),
#: model_repository_agents, response_cache) or are refused elsewhere (model_operations, KIND_GPU). Pinned-memory
#: switches mean nothing without a GPU and are accepted.
UNSUPPORTED_FEATURES: tuple[tuple[str, Callable[[ModelConfig], bool]], ...] = (
    ("runtime", lambda c: bool(c.runtime)),
    ("batch_input", lambda c: bool(c.batch_input)),
    ("batch_output", lambda c: bool(c.batch_output)),
    # their runners bind the config's inputs only, not the control and state tensors: such an onnxruntime model
    # loaded READY and failed every request ("Invalid input name: START"); pytorch's forward() never sees them
    (
        "sequence_batching of an onnxruntime or pytorch model",
        lambda c: c.HasField("sequence_batching") and backend_of(c) in ("onnxruntime", "pytorch"),
    ),
    ("sequence_batching.iterative_sequence", lambda c: c.sequence_batching.iterative_sequence),
    ("sequence_batching.oldest.preserve_ordering", lambda c: c.sequence_batching.oldest.preserve_ordering),
    (
        "sequence_batching with a decoupled model_transaction_policy",
        lambda c: c.HasField("sequence_batching") and c.model_transaction_policy.decoupled,
    ),
    ("cc_model_filenames", lambda c: bool(c.cc_model_filenames)),
    ("metric_tags", lambda c: bool(c.metric_tags)),
    ("model_metrics", lambda c: c.HasField("model_metrics")),
    # graph optimization levels are onnxruntime's (its backend applies them)
    ("optimization.graph", lambda c: c.optimization.HasField("graph") and backend_of(c) != "onnxruntime"),
    ("optimization.priority", lambda c: c.optimization.priority != _DEFAULT_PRIORITY),
    ("optimization.cuda", lambda c: c.optimization.HasField("cuda")),
    ("optimization.execution_accelerators", lambda c: c.optimization.HasField("execution_accelerators")),
    ("optimization.gather_kernel_buffer_threshold", lambda c: c.optimization.gather_kernel_buffer_threshold != 0),
    ("optimization.eager_batching", lambda c: c.optimization.eager_batching),
    (
        "dynamic_batching.preserve_ordering of a decoupled model",
        lambda c: c.dynamic_batching.preserve_ordering and c.model_transaction_policy.decoupled,
    ),
    ("instance_group.gpus", lambda c: any(g.gpus for g in c.instance_group)),
    ("instance_group.secondary_devices", lambda c: any(g.secondary_devices for g in c.instance_group)),
    ("instance_group.profile", lambda c: any(g.profile for g in c.instance_group)),
    ("instance_group.passive", lambda c: any(g.passive for g in c.instance_group)),
    ("instance_group.host_policy", lambda c: any(g.host_policy for g in c.instance_group)),
    ("input.format", lambda c: any(t.format != _FORMAT_NONE for t in c.input)),
    ("input.is_shape_tensor", lambda c: any(t.is_shape_tensor for t in c.input)),
    ("input.allow_ragged_batch", lambda c: any(t.allow_ragged_batch for t in c.input)),
    ("input.is_non_linear_format_io", lambda c: any(t.is_non_linear_format_io for t in c.input)),
    ("output.is_shape_tensor", lambda c: any(t.is_shape_tensor for t in c.output)),
    ("output.is_non_linear_format_io", lambda c: any(t.is_non_linear_format_io for t in c.output)),
    # the python backend's custom execution environments (conda-pack archives unpacked and run as given)
    ("parameter EXECUTION_ENV_PATH", lambda c: "EXECUTION_ENV_PATH" in c.parameters),
)


#: a config parameter that keeps a model resident: never evicted under --max-loaded-models (as --load-model does)
PINNED_PARAMETER = "SEAWALL_PINNED"


def is_pinned(config: ModelConfig) -> bool:
    """The config's SEAWALL_PINNED: "true" or "false" (the default).

    Raises:
        InvalidArgumentError: any other value.
    """
    if PINNED_PARAMETER not in config.parameters:
        return False
    value = str(config.parameters[PINNED_PARAMETER].string_value).strip().lower()
    if value not in ("true", "false"):
        raise InvalidArgumentError(
            f"parameter '{PINNED_PARAMETER}' of model '{config.name}' must be \"true\" or \"false\""
        )
    return value == "true"


def refuse_unsupported(config: ModelConfig) -> None:
    """Refuse a config that asks for a feature Seawall does not implement (the `UNSUPPORTED_FEATURES` table).

    Raises:
        InvalidArgumentError: "<feature> is not supported by Seawall yet".
    """
    for feature, is_set in UNSUPPORTED_FEATURES:
        if is_set(config):
            raise InvalidArgumentError(f"{feature} is not supported by Seawall yet")
