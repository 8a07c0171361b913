"""Plugins found in --backend-directory and --repoagent-directory: Python modules with a small entry point,
loaded only from paths that pass the trust check (sshd's StrictModes idea, see `security/trust.py`).

Part of the composition root (it imports code); the core receives the lookups it builds.

Entry points (documented in docs/plugins.md):
- repository agent `<repoagent-directory>/<name>/agent.py`: `def check(config: dict, model_dir: str) -> None`
  raising any exception to refuse the load (its message becomes the model's UNAVAILABLE reason).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

from seawall.core.backend import ModelConfig
from seawall.core.model_config import config_to_dict
from seawall.core.repoagent import RepoAgent
from seawall.errors import InvalidArgumentError, UnsupportedError
from seawall.security.trust import untrusted_reason

logger = logging.getLogger(__name__)

_PLUGIN_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def load_module(directory: str, name: str, filename: str, allow_untrusted: tuple[str, ...]) -> ModuleType:
    """Import `<directory>/<name>/<filename>` after checking the name and the trust of every path involved.

    Raises:
        UnsupportedError: no such plugin.
        InvalidArgumentError: a bad name, or an untrusted directory or file (naming the path).
    """
    if not _PLUGIN_NAME.fullmatch(name):
        raise InvalidArgumentError(f"plugin name '{name[:64]}' is not valid")
    path = os.path.join(directory, name, filename)
    if not os.path.isfile(path):
        raise UnsupportedError(f"'{name}' is not available (no {filename} in its plugin directory)")
    real = os.path.realpath(path)
    allowed = any(os.path.commonpath([real, os.path.realpath(p)]) == os.path.realpath(p) for p in allow_untrusted)
    reason = untrusted_reason(path)
    if reason is not None and not allowed:
        raise InvalidArgumentError(f"refusing to load plugin '{name}': {reason}")
    spec = importlib.util.spec_from_file_location(f"seawall_plugin_{name}", path)
    if spec is None or spec.loader is None:
        raise UnsupportedError(f"'{name}' cannot be imported")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    logger.warning("loaded plugin '%s' from %s", name, path)
    return module


def repoagent_lookup(directory: str, allow_untrusted: tuple[str, ...] = ()) -> Callable[[str], RepoAgent]:
    """A lookup of repository agents by name from `directory` (imported once, on first use)."""
    cache: dict[str, RepoAgent] = {}

    def lookup(name: str) -> RepoAgent:
        agent = cache.get(name)
        if agent is None:
            module = load_module(directory, name, "agent.py", allow_untrusted)
            check: Any = getattr(module, "check", None)
            if not callable(check):
                raise UnsupportedError(f"repository agent '{name}' has no check(config, model_dir) function")

            def agent(config: ModelConfig, model_dir: str, check: Any = check) -> None:
                check(config_to_dict(config), model_dir)

            cache[name] = agent
        return agent

    return lookup
