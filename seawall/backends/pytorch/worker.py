"""The pytorch backend inside a worker process: the model class a stub serves for an isolated TorchScript model.

Imported by name only by `backends/python/stub.py` (its BACKEND_WORKERS table), inside the stub process; imports
this package's `instance`, `naming` and `runtime`, and `backends.worker_model`. The host has already read, bounded,
pinned and checked the archive (`archive`: a TorchScript zip, never a pickle) and bound the config to `forward()`;
the stub gets those bytes in a sealed region and the plan as JSON in initialize's args (`plan_json`), and loads
them with `torch.jit.load` only.
"""

from __future__ import annotations

import json
from typing import Any

from seawall.backends.pytorch import runtime
from seawall.backends.pytorch.instance import TorchPlan, TorchRunner
from seawall.backends.pytorch.naming import Binding, TorchSettings
from seawall.backends.worker_model import worker_model_class


def plan_json(plan: TorchPlan) -> str:
    """What a worker needs beyond the archive's bytes (host side)."""
    binding = plan.binding
    return json.dumps(
        {
            "model_name": plan.model_name,
            "model_version": plan.model_version,
            "batching": plan.batching,
            "binding": [binding.dict_input, binding.inputs, binding.outputs],
            "output_types": plan.output_types,
            "settings": {field: getattr(plan.settings, field) for field in TorchSettings.__slots__},
        }
    )


def _runner(data: memoryview, plan: dict[str, Any]) -> TorchRunner:
    settings = TorchSettings(**plan["settings"])
    dict_input, inputs, outputs = plan["binding"]
    binding = Binding(
        bool(dict_input), tuple((str(n), int(i)) for n, i in inputs), tuple((str(n), int(i)) for n, i in outputs)
    )
    script = runtime.load(bytes(data), settings, plan["model_name"])
    torch_plan = TorchPlan(
        plan["model_name"], plan["model_version"], plan["batching"], binding, tuple(plan["output_types"]), settings
    )
    return TorchRunner(script, torch_plan)


def worker_model(pb: Any, model: Any) -> type:
    """The stub's entry: the TritonPythonModel class over the archive mapped in `model`."""
    return worker_model_class(pb, model, _runner)
