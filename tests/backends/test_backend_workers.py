"""Which code a worker process of the onnxruntime and pytorch backends may run: the stub names its worker modules in
one closed table, each of Seawall's own packages, chosen by the host's backend (never by a model's config: a python
model's instances always ask for the model's own model.py), and every such module offers the same entry."""

from __future__ import annotations

import importlib

from seawall.backends.python import stub
from seawall.backends.python.instance_core import InstanceSpec


def test_the_stub_runs_only_the_worker_modules_of_its_table() -> None:
    assert stub.BACKEND_WORKERS == {
        "onnxruntime": "seawall.backends.onnxruntime.worker",
        "pytorch": "seawall.backends.pytorch.worker",
    }
    for mode, module_name in stub.BACKEND_WORKERS.items():
        assert module_name == f"seawall.backends.{mode}.worker"
        assert callable(importlib.import_module(module_name).worker_model)
    # the modes a model's own code runs under are not in the table
    assert not {"model", "auto_complete"} & set(stub.BACKEND_WORKERS)


def test_an_instance_runs_the_models_own_code_unless_a_backend_says_otherwise() -> None:
    spec = InstanceSpec("m", "1", "m_0", "/r/m/1/model.py", "/r/m/1", {}, {}, "/r/")
    assert (spec.worker, spec.model_region) == ("", None)
