"""The overrides of a model-repository load request: its `config` (JSON of a ModelConfig) and its `file:`
contents, checked as a whole (count, size, names, conflicts) before anything touches the file system, then
written inside a fresh private directory that model control removes once no loaded model uses it.

Imports `core.backend`, `errors` and protobuf's json_format; `core.control` is the only user.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping

from google.protobuf import json_format

from seawall.core.backend import ModelConfig
from seawall.errors import InvalidArgumentError

logger = logging.getLogger("seawall.core.control")


def parse_config(name: str, config_json: str) -> ModelConfig:
    """A load request's `config` (JSON of a ModelConfig) for model `name`.

    Raises:
        InvalidArgumentError: not a ModelConfig, or it names another model.
    """
    config = ModelConfig()
    try:
        json_format.Parse(config_json, config)
    except json_format.ParseError as exc:
        raise InvalidArgumentError(f"failed to parse load parameter 'config': {exc}") from None
    if config.name and config.name != name:
        raise InvalidArgumentError(f"model name '{config.name}' in 'config' does not match '{name}'")
    return config


#: Bytes of one override path component (NAME_MAX) and of a whole override path (well under PATH_MAX).
MAX_OVERRIDE_NAME_BYTES = 255
MAX_OVERRIDE_PATH_BYTES = 1024
_PATH_MAX = 4096


def check_override_files(files: Mapping[str, bytes], max_files: int, max_bytes: int) -> list[tuple[str, ...]]:
    """Check a load request's `file:` overrides as a whole, before anything touches the file system; return
    each path's components, in the order of `files`.

    Raises:
        InvalidArgumentError: too many files or bytes, a path that is not a plain relative path of bounded
            length, or two paths that conflict (one a file inside the other).
    """
    if len(files) > max_files:
        raise InvalidArgumentError(
            f"load request has {len(files)} 'file:' overrides, more than the limit of {max_files} "
            "(--max-override-files)"
        )
    total = sum(len(content) for content in files.values())
    if total > max_bytes:
        raise InvalidArgumentError(
            f"load request 'file:' overrides hold {total} bytes, more than the limit of {max_bytes} "
            "(--max-override-bytes)"
        )
    paths = [_override_parts(path) for path in files]
    owners: dict[tuple[str, ...], str] = {}  # every directory an override path needs → the first such path
    for path, parts in zip(files, paths, strict=True):
        for depth in range(1, len(parts)):
            owners.setdefault(parts[:depth], path)
    for path, parts in zip(files, paths, strict=True):
        other = owners.get(parts)
        if other is not None:
            raise InvalidArgumentError(
                f"override file '{path[:128]}' conflicts with override file '{other[:128]}': "
                "a path cannot be both a file and a directory"
            )
    return paths


def _override_parts(path: str) -> tuple[str, ...]:
    parts = tuple(path.split("/"))
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or any(part in ("", ".", "..") for part in parts)
        or any(ord(char) < 0x20 or ord(char) == 0x7F for char in path)
    ):
        raise InvalidArgumentError(f"override file '{path[:128]}' must be a relative path inside the model directory")
    try:
        encoded = [part.encode("utf-8") for part in parts]
    except UnicodeEncodeError:
        raise InvalidArgumentError("override file names must be valid UTF-8") from None
    if any(len(part) > MAX_OVERRIDE_NAME_BYTES for part in encoded):
        raise InvalidArgumentError(
            f"override file '{path[:128]}' has a name longer than {MAX_OVERRIDE_NAME_BYTES} bytes"
        )
    if sum(len(part) + 1 for part in encoded) > MAX_OVERRIDE_PATH_BYTES:
        raise InvalidArgumentError(f"override file '{path[:128]}' is longer than {MAX_OVERRIDE_PATH_BYTES} bytes")
    return parts


def write_overrides(name: str, paths: list[tuple[str, ...]], files: Mapping[str, bytes]) -> str:
    """Write checked overrides into a fresh private directory (a worker thread's job); return that directory,
    which holds the model directory `name`. On any failure the directory is gone.

    Raises:
        InvalidArgumentError: a file could not be written (the message names no server path).
    """
    root = tempfile.mkdtemp(prefix="seawall-model-")  # mode 0700, owned by us
    try:
        model_dir = os.path.join(root, name)
        if len(os.fsencode(model_dir)) + MAX_OVERRIDE_PATH_BYTES >= _PATH_MAX:
            raise InvalidArgumentError("override files cannot be written: the temporary directory path is too long")
        os.mkdir(model_dir, 0o700)
        for parts, content in zip(paths, files.values(), strict=True):
            target = os.path.join(model_dir, *parts)
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            if os.path.commonpath([os.path.realpath(target), model_dir]) != model_dir:
                raise InvalidArgumentError(
                    f"override file '{'/'.join(parts)[:128]}' must stay within the model directory"
                )
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(content)
    except BaseException as exc:
        shutil.rmtree(root, ignore_errors=True)
        if isinstance(exc, OSError):
            logger.warning("writing override files of model '%s' failed: %s", name, exc)
            raise InvalidArgumentError(f"override files of model '{name}' cannot be written: {exc.strerror}") from None
        raise
    return root


async def remove_directory(directory: str) -> None:
    """Remove an override directory off the event loop ("" is nothing)."""
    if directory:
        await asyncio.to_thread(shutil.rmtree, directory, True)
