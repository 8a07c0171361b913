"""The onnxruntime backend inside a worker process: the model class a stub serves for an isolated ONNX model.

Imported by name only by `backends/python/stub.py` (its BACKEND_WORKERS table), inside the stub process; imports
this package's `instance`, `runtime` and `session_options`, and `backends.worker_model`. The host has already
read, bounded, pinned and inlined the model (`intake`) and checked the config against it; the stub gets those
bytes in a sealed region and the run plan as JSON in initialize's args (`plan_json`).
"""

from __future__ import annotations

import json
from typing import Any

from seawall.backends.onnxruntime import runtime
from seawall.backends.onnxruntime.instance import OnnxRunner, OutputPlan, RunPlan
from seawall.backends.onnxruntime.session_options import SessionSettings
from seawall.backends.worker_model import worker_model_class


def plan_json(plan: RunPlan, settings: SessionSettings) -> str:
    """What a worker needs beyond the model bytes: the run plan and the session settings (host side)."""
    return json.dumps(
        {
            "model_name": plan.model_name,
            "model_version": plan.model_version,
            "batching": plan.batching,
            "outputs": [[o.name, o.datatype, o.scalar_dims] for o in plan.outputs],
            "settings": {field: getattr(settings, field) for field in SessionSettings.__slots__},
        }
    )


def _runner(data: memoryview, plan: dict[str, Any]) -> OnnxRunner:
    settings = SessionSettings(**plan["settings"])
    session = runtime.create_session(bytes(data), settings, plan["model_name"])
    outputs = tuple(
        OutputPlan(name, datatype, None if dims is None else tuple(dims)) for name, datatype, dims in plan["outputs"]
    )
    run_plan = RunPlan(
        plan["model_name"], plan["model_version"], plan["batching"], outputs, runtime.run_options(settings)
    )
    return OnnxRunner(session, run_plan)


def worker_model(pb: Any, model: Any) -> type:
    """The stub's entry: the TritonPythonModel class over the model bytes mapped in `model`."""
    return worker_model_class(pb, model, _runner)
