"""Repository agents: checks that run on a model's files before any of its code runs.

Imports `core.backend` (ModelConfig) and `errors`. The built-in `checksum` agent is Triton's checksum
repository agent with SHA-256 pins: `parameters { key: "SHA256:1/model.py" value: "<hex digest>" }`.
Every file of the model must be pinned (the configuration files that carry the pins excepted), so a file
slipped into the model directory fails the load as surely as a changed one; `__pycache__` is no exception
(bytecode the interpreter could run instead of the pinned source). The python backend verifies the bytes it
executes against the same pins again when it reads them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Callable

from seawall.core.backend import ModelConfig
from seawall.core.model_config import checksum_pins
from seawall.errors import InvalidArgumentError, SeawallError, UnsupportedError

logger = logging.getLogger(__name__)

#: A repository agent: checks (config, model directory) and raises to refuse the load.
RepoAgent = Callable[[ModelConfig, str], None]

_CONFIG_FILES = ("config.pbtxt",)
_CHUNK = 1 << 20


def no_plugins(name: str) -> RepoAgent:
    raise UnsupportedError(f"repository agent '{name[:64]}' is not available")


def run_agents(config: ModelConfig, model_dir: str, plugins: Callable[[str], RepoAgent] = no_plugins) -> None:
    """Run every agent of `model_repository_agents`, in order: `checksum` is built in, others come from
    `plugins` (the --repoagent-directory lookup).

    Raises:
        UnsupportedError: an agent this server does not have.
        InvalidArgumentError: a check failed; the message names the file, never a server path.
    """
    pin_sets = iter(checksum_pins(config))
    for agent in config.model_repository_agents.agents:
        if agent.name == "checksum":
            verify_checksums(next(pin_sets), model_dir)
            continue
        check = plugins(agent.name)
        try:
            check(config, model_dir)
        except SeawallError:
            raise
        except Exception as exc:  # a plugin's refusal: its message, never its traceback
            logger.warning("repository agent '%s' refused the model: %r", agent.name, exc)
            raise InvalidArgumentError(f"repository agent '{agent.name}' refused the model: {exc}") from None


def verify_checksums(pins: dict[str, str], model_dir: str) -> None:
    """Check that the model's files are exactly the pinned ones, with the pinned SHA-256 digests.

    `pins` maps normalized relative paths to hex digests (`model_config.checksum_pins`).

    Raises:
        InvalidArgumentError: a missing, changed or unpinned file.
    """
    root = os.path.realpath(model_dir)
    expected = dict(pins)
    for relative in sorted(_model_files(root)):
        if relative in _CONFIG_FILES or relative.startswith("configs" + os.sep):
            continue
        pinned = expected.pop(relative, None)
        if pinned is None:
            raise InvalidArgumentError(f"checksum agent: file '{relative}' has no SHA256 pin")
        if not hmac.compare_digest(_sha256(os.path.join(root, relative)), pinned):
            raise InvalidArgumentError(f"checksum agent: file '{relative}' does not match its SHA256 pin")
    if expected:
        raise InvalidArgumentError(f"checksum agent: pinned file '{sorted(expected)[0]}' is missing")


def _model_files(root: str) -> list[str]:
    """Regular files under `root`, relative; a link that leaves the model directory is refused."""
    found: list[str] = []
    for directory, subdirs, files in os.walk(root, followlinks=False):
        for name in subdirs:  # a linked directory would hide its files from the walk
            if os.path.islink(os.path.join(directory, name)):
                relative = os.path.relpath(os.path.join(directory, name), root)
                raise InvalidArgumentError(f"checksum agent: directory '{relative}' is a link")
        for name in files:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            if os.path.commonpath([os.path.realpath(path), root]) != root:
                raise InvalidArgumentError(f"checksum agent: file '{relative}' links outside the model directory")
            found.append(relative)
    return found


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
