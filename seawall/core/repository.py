"""The model repository on disk: which models exist, which version directories they have.

Imports only `errors` and the standard library. Reads the file system, never writes it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from seawall.core.config_proto import model_config_pb2
from seawall.errors import InvalidArgumentError, NotFoundError

logger = logging.getLogger(__name__)

#: Model names Seawall serves: no path separators, no shell metacharacters, bounded length, not `.`/`..`.
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
_VERSION_DIR = re.compile(r"[1-9][0-9]{0,18}")


INVALID_MODEL_NAME = "invalid model name: a model name is 1-128 characters of A-Z a-z 0-9 _ . - (not '.' or '..')"


def is_valid_model_name(name: str) -> bool:
    return bool(_MODEL_NAME.fullmatch(name)) and name not in (".", "..")


def require_valid_model_name(name: str) -> None:
    """The one check of a model name from a client, for every route and RPC that takes one (never echoed:
    it may carry anything).

    Raises:
        InvalidArgumentError: `INVALID_MODEL_NAME`.
    """
    if not is_valid_model_name(name):
        raise InvalidArgumentError(INVALID_MODEL_NAME)


@dataclass(frozen=True, slots=True)
class ModelLocation:
    """A model directory found in a repository, or registered at run time under `name` (`mapped`: the
    config's own name is replaced by `name`, Triton's model mapping). `error` is set when it cannot be served."""

    name: str
    path: str
    error: str = ""
    mapped: bool = False


def scan(roots: Sequence[str]) -> dict[str, ModelLocation]:
    """Find every model directory in `roots`; a name found in two roots is reported as an error.

    Raises:
        NotFoundError: a root does not exist or is not a directory.
    """
    found: dict[str, ModelLocation] = {}
    for root in roots:
        if not os.path.isdir(root):
            raise NotFoundError(f"failed to stat file {root}")
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            if not is_valid_model_name(entry.name):
                logger.warning("ignoring model directory %r: not a valid model name", entry.name)
                continue
            location = ModelLocation(entry.name, os.path.realpath(entry.path))
            if entry.name in found:
                location = ModelLocation(
                    entry.name,
                    location.path,
                    f"model '{entry.name}' appears in more than one model repository",
                )
            found[entry.name] = location
    return found


def version_directories(model_dir: str) -> list[int]:
    """Numeric version directories of a model, ascending; other names are ignored as Triton does."""
    versions = []
    for entry in os.scandir(model_dir):
        if entry.is_dir() and _VERSION_DIR.fullmatch(entry.name):
            versions.append(int(entry.name))
    return sorted(versions)


def select_versions(policy: model_config_pb2.ModelVersionPolicy, available: list[int]) -> list[int]:
    """Apply `version_policy` (latest N, all, specific) to the versions on disk.

    Raises:
        InvalidArgumentError: the policy asks for nothing or names a missing version.
    """
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return list(available)
    if choice == "specific":
        missing = [v for v in policy.specific.versions if v not in available]
        if missing:
            raise InvalidArgumentError(f"version {missing[0]} is specified for model but is not available")
        return sorted(set(policy.specific.versions))
    count = policy.latest.num_versions if choice == "latest" else 1
    if count < 1:
        raise InvalidArgumentError("'version_policy.latest.num_versions' must be at least 1")
    return available[-count:]


def parse_version(version: str) -> int:
    """A request's version string → number; "" → -1 (latest).

    Raises:
        InvalidArgumentError: not an integral value (Triton's wording).
    """
    if version == "":
        return -1
    try:
        number = int(version, 10)
        if not -(2**63) <= number < 2**63 or not version.strip("-+").isdigit():
            raise ValueError
    except ValueError:
        raise InvalidArgumentError(
            f"failed to get model version from specified version string '{version}' (details: stol), "
            "version should be an integral value > 0"
        ) from None
    return number
