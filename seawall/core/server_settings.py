"""The settings the InferenceServer administers at run time: log settings, trace settings and system shared memory
regions (the logging, trace and shared-memory extensions), each call audited. `InferenceServer` mixes
`ServerSettings` in; the attributes it declares are the facade's.

Imports other `core` modules and `errors`; knows nothing about HTTP or gRPC.
"""

from __future__ import annotations

from collections.abc import Mapping

from seawall.core import catalog
from seawall.core.audit import audited
from seawall.core.log_settings import LogSettings, LogValue
from seawall.core.shm import SharedMemoryManager
from seawall.core.trace import TraceSettings
from seawall.core.types import SharedMemoryRegionStatus
from seawall.errors import NotFoundError, UnsupportedError


class ServerSettings:
    """Logging, trace and shared-memory administration over the facade's state (event loop thread only)."""

    log_settings: LogSettings
    trace_settings: TraceSettings
    shared_memory: SharedMemoryManager

    @property
    def _models(self) -> catalog.Models:
        raise NotImplementedError

    # ---------------------------------------------------------------------------------------- logging

    def log_settings_dict(self) -> dict[str, LogValue]:
        return self.log_settings.as_dict()

    def update_log_settings(self, changes: Mapping[str, LogValue | None], *, caller: str = "") -> dict[str, LogValue]:
        """Change log levels or format at run time.

        Raises: UnsupportedError (log_file), InvalidArgumentError (bad value).
        """
        with audited(caller, "update log settings", ",".join(sorted(changes))):
            return self.log_settings.update(changes)

    # ------------------------------------------------------------------------------------------ trace

    def get_trace_settings(self, model: str = "") -> dict[str, list[str]]:
        """Raises: InvalidArgumentError (a model that is not ready)."""
        if model:
            catalog.require_ready_model(self._models, model)
        return self.trace_settings.get(model)

    def update_trace_settings(
        self, changes: Mapping[str, list[str] | None], model: str = "", *, caller: str = ""
    ) -> dict[str, list[str]]:
        """Raises: UnsupportedError (trace_file), InvalidArgumentError (bad value or model not ready)."""
        with audited(caller, "update trace settings", model or "<global>"):
            if model:
                catalog.require_ready_model(self._models, model)
            return self.trace_settings.update(changes, model)

    # ---------------------------------------------------------------------------------- shared memory

    def register_system_shared_memory(
        self, name: str, key: str, offset: int, byte_size: int, *, caller: str = ""
    ) -> None:
        """Raises: UnsupportedError (disabled), InvalidArgumentError (bad name, key or range)."""
        with audited(caller, "register system shared memory", name):
            self.shared_memory.register(name, key, offset, byte_size)

    def system_shared_memory_status(self, name: str = "") -> list[SharedMemoryRegionStatus]:
        """Raises: UnsupportedError (disabled), NotFoundError (unknown region)."""
        return [SharedMemoryRegionStatus(r.name, r.key, r.offset, r.byte_size) for r in self.shared_memory.status(name)]

    def unregister_system_shared_memory(self, name: str = "", *, caller: str = "") -> None:
        """Raises: UnsupportedError (disabled)."""
        with audited(caller, "unregister system shared memory", name or "<all>"):
            self.shared_memory.unregister(name)

    def register_cuda_shared_memory(self, name: str, *, caller: str = "") -> None:
        """Raises: UnsupportedError always: this server has no GPU."""
        with audited(caller, "register CUDA shared memory", name):
            raise UnsupportedError(f"failed to register CUDA shared memory region '{name[:64]}': GPUs not supported")

    def cuda_shared_memory_status(self, name: str = "") -> list[SharedMemoryRegionStatus]:
        """No CUDA region can exist. Raises: NotFoundError for a named region."""
        if name:
            raise NotFoundError(f"Unable to find cuda shared memory region: '{name[:64]}'")
        return []
