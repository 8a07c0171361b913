"""Entry script of a stub process (run by path): makes `seawall` a bare package, then runs `stub.main`.

The server's `seawall/__init__.py` imports the whole server (frontends, grpc, ...); a stub needs only
`ipc`, `core.types` and `errors`, so it skips that import and starts faster with less memory.
"""

from __future__ import annotations

import os
import sys
import types


def _run() -> None:
    package_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if "seawall" not in sys.modules:
        package = types.ModuleType("seawall")
        package.__path__ = [package_dir]
        sys.modules["seawall"] = package
    from seawall.backends.python.stub import main

    main(sys.argv)


if __name__ == "__main__":
    _run()
