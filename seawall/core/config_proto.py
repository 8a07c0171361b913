"""Triton's model-configuration schema: tritonclient's generated `model_config_pb2`, without grpc.

Importing `tritonclient.grpc.model_config_pb2` the usual way first runs `tritonclient/grpc/__init__.py`, which
imports grpc and the whole gRPC client; the core and the stub need only the generated messages (protobuf).
So the generated file is loaded directly (importlib's recipe for importing a source file), under its own
name: a later `import tritonclient.grpc` (the gRPC frontend's, a test's) finds it in `sys.modules`, so there is
one module, one set of message classes, and the descriptors are registered once.

Imports only importlib (and protobuf, through the generated module).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING

_NAME = "tritonclient.grpc.model_config_pb2"


def _load() -> ModuleType:
    """The generated module, loaded once per process.

    Raises:
        ImportError: tritonclient (a dependency) is not installed, or has no model_config_pb2.
    """
    loaded = sys.modules.get(_NAME)
    if loaded is not None:
        return loaded
    package = importlib.util.find_spec("tritonclient")  # a top-level name: found, not imported
    for location in (package.submodule_search_locations or ()) if package is not None else ():
        path = os.path.join(location, "grpc", "model_config_pb2.py")
        spec = importlib.util.spec_from_file_location(_NAME, path) if os.path.isfile(path) else None
        if spec is not None and spec.loader is not None:
            module = importlib.util.module_from_spec(spec)
            sys.modules[_NAME] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[_NAME]
                raise
            return module
    raise ImportError(f"cannot find {_NAME} (is tritonclient installed?)")


if TYPE_CHECKING:  # the same module, typed as the generated code is (Any: it has no stubs)
    from tritonclient.grpc import model_config_pb2 as model_config_pb2
    from tritonclient.grpc.model_config_pb2 import ModelConfig as ModelConfig
else:
    model_config_pb2 = _load()
    ModelConfig = model_config_pb2.ModelConfig
