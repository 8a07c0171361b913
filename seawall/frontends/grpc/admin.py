"""Pure conversions for the gRPC extension RPCs: repository index and load/unload parameters, statistics,
log and trace settings, shared-memory status (no IO, no grpc).

Imports `core.types`, `errors`, `options` and tritonclient's generated modules. Load overrides are size-checked
against `Limits` here, before the core writes anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tritonclient.grpc import service_pb2

from seawall.core.types import Duration, ModelIndexEntry, ModelStatistics, SharedMemoryRegionStatus
from seawall.errors import InvalidArgumentError, ResourceExhaustedError
from seawall.options import Limits

SettingValue = bool | int | str

_FILE_PREFIX = "file:"
#: the type each log setting must carry; an unset oneof is refused with the same message (Triton does)
_LOG_KINDS = {
    "log_info": "boolean",
    "log_warning": "boolean",
    "log_error": "boolean",
    "log_verbose_level": "int32",
    "log_format": "string",
    "log_file": "string",
}


def load_parameters(params: Mapping[str, Any], limits: Limits) -> tuple[str | None, dict[str, bytes] | None]:
    """The `config` JSON and `file:<path>` overrides of a RepositoryModelLoadRequest.

    Raises:
        InvalidArgumentError: an unknown key, or a value of the wrong type for its key.
        ResourceExhaustedError: the config and files together exceed `limits.max_request_bytes`.
    """
    config: str | None = None
    files: dict[str, bytes] = {}
    total = 0
    for key, param in params.items():
        kind = param.WhichOneof("parameter_choice")
        if key == "config":
            if kind != "string_param":
                raise InvalidArgumentError(f"invalid value type for load parameter '{key}', expected string_param.")
            config = param.string_param
            total += len(config)
        elif key.startswith(_FILE_PREFIX):
            if kind != "bytes_param":
                raise InvalidArgumentError(
                    f"invalid value type for load parameter '{key[:256]}', expected bytes_param."
                )
            files[key[len(_FILE_PREFIX) :]] = param.bytes_param
            total += len(param.bytes_param)
        else:
            raise InvalidArgumentError(f"unrecognized load parameter '{key[:256]}'.")
        if total > limits.max_request_bytes:
            raise ResourceExhaustedError(f"load parameters are larger than {limits.max_request_bytes} bytes")
    return config, files or None


def unload_dependents(params: Mapping[str, Any]) -> bool:
    """The `unload_dependents` flag of a RepositoryModelUnloadRequest (other keys are ignored, as in Triton).

    Raises:
        InvalidArgumentError: `unload_dependents` is not a bool_param.
    """
    param = params.get("unload_dependents")
    if param is None:
        return False
    if param.WhichOneof("parameter_choice") != "bool_param":
        raise InvalidArgumentError("invalid value type for 'unload_dependents' parameter, expected bool_param.")
    return bool(param.bool_param)


def log_changes(settings: Mapping[str, Any]) -> dict[str, SettingValue]:
    """LogSettingsRequest settings as plain values; the core checks each value's type.

    Raises:
        InvalidArgumentError: a known setting whose value oneof is unset.
    """
    changes: dict[str, SettingValue] = {}
    for key, setting in settings.items():
        kind = setting.WhichOneof("parameter_choice")
        if kind is None:
            if key in _LOG_KINDS:
                raise InvalidArgumentError(f"expect {_LOG_KINDS[key]} for '{key}'")
            continue
        value: SettingValue = getattr(setting, kind)  # uint32_param stays an int, so log_info refuses it
        changes[key] = value
    return changes


def log_settings_to_proto(settings: Mapping[str, SettingValue]) -> Any:
    """A LogSettingsResponse: booleans as bool_param, the verbose level as uint32_param, text as string_param."""
    response = service_pb2.LogSettingsResponse()
    for key, value in settings.items():
        target = response.settings[key]
        if isinstance(value, bool):
            target.bool_param = value
        elif isinstance(value, int):
            target.uint32_param = value
        else:
            target.string_param = value
    return response


def trace_changes(settings: Mapping[str, Any]) -> dict[str, list[str] | None]:
    """TraceSettingRequest settings; an empty value list clears the setting (None)."""
    return {key: list(setting.value) or None for key, setting in settings.items()}


def trace_settings_to_proto(settings: Mapping[str, Iterable[str]]) -> Any:
    response = service_pb2.TraceSettingResponse()
    for key, values in settings.items():
        response.settings[key].value.extend(values)
    return response


def system_shm_status_to_proto(regions: Iterable[SharedMemoryRegionStatus]) -> Any:
    response = service_pb2.SystemSharedMemoryStatusResponse()
    for region in regions:
        response.regions[region.name].CopyFrom(
            service_pb2.SystemSharedMemoryStatusResponse.RegionStatus(
                name=region.name, key=region.key, offset=region.offset, byte_size=region.byte_size
            )
        )
    return response


def cuda_shm_status_to_proto(regions: Iterable[SharedMemoryRegionStatus]) -> Any:
    response = service_pb2.CudaSharedMemoryStatusResponse()
    for region in regions:
        response.regions[region.name].CopyFrom(
            service_pb2.CudaSharedMemoryStatusResponse.RegionStatus(name=region.name, byte_size=region.byte_size)
        )
    return response


def repository_index_to_proto(entries: Iterable[ModelIndexEntry]) -> Any:
    index = service_pb2.RepositoryIndexResponse.ModelIndex
    return service_pb2.RepositoryIndexResponse(
        models=[index(name=e.name, version=e.version, state=e.state, reason=e.reason) for e in entries]
    )


def _duration(value: Duration) -> Any:
    return service_pb2.StatisticDuration(count=value.count, ns=value.ns)


def statistics_to_proto(stats: Iterable[ModelStatistics]) -> Any:
    """A ModelStatisticsResponse (memory and response statistics are not collected yet)."""
    return service_pb2.ModelStatisticsResponse(
        model_stats=[
            service_pb2.ModelStatistics(
                name=s.name,
                version=s.version,
                last_inference=s.last_inference,
                inference_count=s.inference_count,
                execution_count=s.execution_count,
                inference_stats=service_pb2.InferStatistics(
                    success=_duration(s.success),
                    fail=_duration(s.fail),
                    queue=_duration(s.queue),
                    compute_input=_duration(s.compute_input),
                    compute_infer=_duration(s.compute_infer),
                    compute_output=_duration(s.compute_output),
                    cache_hit=_duration(s.cache_hit),
                    cache_miss=_duration(s.cache_miss),
                ),
                batch_stats=[
                    service_pb2.InferBatchStatistics(
                        batch_size=b.batch_size,
                        compute_input=_duration(b.compute_input),
                        compute_infer=_duration(b.compute_infer),
                        compute_output=_duration(b.compute_output),
                    )
                    for b in s.batch_stats
                ],
            )
            for s in stats
        ]
    )
