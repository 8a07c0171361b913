"""The pytorch backend inside a worker process: the model class a stub serves for an isolated TorchScript model.

Imported by name only by `backends/python/stub.py` (its BACKEND_WORKERS table), inside the stub process; imports
this package's `instance`, `naming` and `runtime`, and `backends.worker_model`. The host has already read, bounded,
pinned and checked the archive (`archive`: a TorchScript zip, never a pickle); the stub gets those bytes in a sealed
region and the plan as JSON in initialize's args (`isolated.plan_json`), loads them with `torch.jit.load` only
and binds the config to `forward()` (`naming.bind`): the server itself never hands the archive to torch, so an
archive that crashes torch ends a worker, not the server. A refusal reaches the load as the same error
(`isolated.WorkerSpec`).
"""

from __future__ import annotations

import base64
from typing import Any

from seawall.backends.pytorch import runtime
from seawall.backends.pytorch.instance import TorchRunner, plan_runs
from seawall.backends.pytorch.naming import TorchSettings
from seawall.backends.worker_model import worker_model_class
from seawall.core.config_proto import ModelConfig


def _runner(data: memoryview, plan: dict[str, Any]) -> TorchRunner:
    config = ModelConfig.FromString(base64.b64decode(plan["config"]))
    settings = TorchSettings(**plan["settings"])
    script = runtime.load(bytes(data), settings, config.name)
    return TorchRunner(script, plan_runs(config, config.name, plan["model_version"], script, settings))


def worker_model(pb: Any, model: Any) -> type:
    """The stub's entry: the TritonPythonModel class over the archive mapped in `model`."""
    return worker_model_class(pb, model, _runner)
