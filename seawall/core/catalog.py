"""Read-only views of the models a server knows: the READY version a request addresses, model metadata, the
repository index and statistics. The facade (`core.server`) answers its queries with these.

Imports other `core` modules and `errors`. Event loop thread only, like the lifecycle whose records it reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from seawall.core import repository, text_table
from seawall.core.lifecycle import ModelRecord, ModelVersion
from seawall.core.repository import require_valid_model_name
from seawall.core.types import ModelIndexEntry, ModelMetadata, ModelState, ModelStatistics, TensorMetadata
from seawall.errors import InvalidArgumentError, NotFoundError, UnavailableError

Models = Mapping[str, ModelRecord]


def ready_version(models: Models, name: str, version: str) -> ModelVersion:
    """The READY version a request addresses ("" = highest ready version), refused with Triton 2.51's codes and
    words: a known model with nothing ready (unloaded, or not loaded yet) is NOT_FOUND `has no available
    versions`; a known version that is not ready is UNAVAILABLE `is not at ready state`; anything else unknown is
    NOT_FOUND `is not found`. Inference, metadata and configs all answer so.

    Raises:
        NotFoundError: unknown model or version, or a model with no ready version.
        UnavailableError: the version asked for exists but is not ready.
        InvalidArgumentError: a bad model name or version string.
    """
    number = repository.parse_version(version)
    record = models.get(name)
    if record is None:
        require_valid_model_name(name)
        raise NotFoundError(f"Request for unknown model: '{name}' is not found")
    if number == -1:
        best: ModelVersion | None = None
        for candidate in record.versions.values():  # a loop: this runs on every request
            if candidate.is_ready() and (best is None or candidate.version > best.version):
                best = candidate
        if best is None:
            raise NotFoundError(f"Request for unknown model: '{name}' has no available versions")
        return best
    entry = record.versions.get(number)
    if entry is None:
        raise NotFoundError(f"Request for unknown model: '{name}' version {number} is not found")
    if not entry.is_ready():
        raise UnavailableError(f"Request for unknown model: '{name}' version {number} is not at ready state")
    return entry


def model_metadata(models: Models, name: str, version: str) -> ModelMetadata:
    """Raises: NotFoundError, UnavailableError, InvalidArgumentError (see `ready_version`)."""
    spec = ready_version(models, name, version).spec
    assert spec is not None  # READY versions always have one
    batch = (-1,) if spec.max_batch_size > 0 else ()
    return ModelMetadata(
        name=name,
        versions=tuple(str(n) for n, v in sorted(models[name].versions.items()) if v.is_ready()),
        platform=spec.platform,
        inputs=tuple(TensorMetadata(i.name, i.datatype, batch + i.dims) for i in spec.inputs.values()),
        outputs=tuple(TensorMetadata(o.name, o.datatype, batch + o.dims) for o in spec.outputs.values()),
    )


def repository_index(
    models: Models, never_loaded: Iterable[ModelIndexEntry], ready_only: bool
) -> list[ModelIndexEntry]:
    """Every model, sorted by name then version; never-loaded models (and failed ones) by name only."""
    entries = [] if ready_only else list(never_loaded)
    for name in sorted(models):
        record = models[name]
        if record.error and not ready_only:
            entries.append(ModelIndexEntry(name, "", ModelState.UNAVAILABLE.value, record.error))
        for number in sorted(record.versions):
            entry = record.versions[number]
            if ready_only and not entry.is_ready():
                continue
            entries.append(ModelIndexEntry(name, str(number), entry.state.value, entry.reason))
    return sorted(entries, key=lambda e: (e.name, int(e.version or 0)))


def model_table(models: Models, never_loaded: Iterable[ModelIndexEntry]) -> list[str]:
    """Triton's start-up model table (`| Model | Version | Status |`): READY, or UNAVAILABLE with the reason."""
    rows = []
    for entry in repository_index(models, never_loaded, ready_only=False):
        status = entry.state or ModelState.UNAVAILABLE.value
        rows.append((entry.name, entry.version, f"{status}: {entry.reason}" if entry.reason else status))
    return text_table.render(("Model", "Version", "Status"), rows)


def require_ready_model(models: Models, name: str) -> None:
    """Raises: InvalidArgumentError (a bad name, or no ready version: the trace extension's 400)."""
    require_valid_model_name(name)
    record = models.get(name)
    if record is None or not any(v.is_ready() for v in record.versions.values()):
        raise InvalidArgumentError(f"Request for unknown model : {name}")


def model_statistics(
    models: Models, name: str, version: str, cached: Callable[[ModelVersion], bool]
) -> list[ModelStatistics]:
    """Statistics of every ready model version ("" name), or of one model / version; `cached(version)` says
    whether that version's responses go through the response cache.

    Raises: InvalidArgumentError (the statistics extension answers unknown models with 400).
    """
    if not name:
        versions = [v for n in sorted(models) for _, v in sorted(models[n].versions.items()) if v.is_ready()]
    else:
        require_valid_model_name(name)
        record = models.get(name)
        if record is None or not any(v.is_ready() for v in record.versions.values()):
            raise InvalidArgumentError(f"requested model '{name}' is not available")
        versions = [v for _, v in sorted(record.versions.items()) if v.is_ready()]
        if version:
            entry = record.versions.get(repository.parse_version(version))
            if entry is None or not entry.is_ready():
                raise InvalidArgumentError(f"requested model version is not available for model '{name}'")
            versions = [entry]
    return [v.stats.snapshot(cached(v)) for v in versions]
