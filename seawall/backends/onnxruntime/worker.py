"""The onnxruntime backend inside a worker process: the model class a stub serves for an isolated ONNX model.

Imported by name only by `backends/python/stub.py` (its BACKEND_WORKERS table), inside the stub process; imports
this package's `instance`, `runtime` and `session_options`, and `backends.worker_model`. The host has already
read, bounded, pinned and inlined the model (`intake`); the stub gets those bytes in a sealed region and the config
and settings as JSON in initialize's args (`isolated.plan_json`), creates the session and checks the config against
it (`instance.plan_runs`): onnxruntime never parses the model in the server, not even for auto-complete (`describe`
runs in a throw-away worker and sends back only the signature), and a refusal fails the load as the same error
(`isolated.WorkerSpec`).
"""

from __future__ import annotations

import base64
from typing import Any

from seawall.backends.onnxruntime import runtime
from seawall.backends.onnxruntime.instance import OnnxRunner, plan_runs
from seawall.backends.onnxruntime.session_options import SessionSettings
from seawall.backends.onnxruntime.signature import describe as describe_signature
from seawall.backends.worker_model import worker_model_class
from seawall.core.config_proto import ModelConfig


def _runner(data: memoryview, plan: dict[str, Any]) -> OnnxRunner:
    config = ModelConfig.FromString(base64.b64decode(plan["config"]))
    settings = SessionSettings(**plan["settings"])
    session = runtime.create_session(bytes(data), settings, config.name)
    return OnnxRunner(session, plan_runs(config, plan["model_version"], runtime.signature_of(session), settings))


def worker_model(pb: Any, model: Any) -> type:
    """The stub's entry: the TritonPythonModel class over the model bytes mapped in `model`."""
    return worker_model_class(pb, model, _runner)


def describe(model: Any, plan: dict[str, Any]) -> dict[str, object]:
    """A throw-away worker's answer for auto-complete: the signature of the model mapped in `model`, as JSON."""
    config = ModelConfig.FromString(base64.b64decode(plan["config"]))
    with memoryview(model) as data:
        session = runtime.create_session(bytes(data), SessionSettings(**plan["settings"]), config.name)
    model.close()
    return describe_signature(runtime.signature_of(session))
