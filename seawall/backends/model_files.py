"""What the onnxruntime and pytorch backends share in reading a model: where its file is (confined to the version
directory), a bounded read of one regular file, the check of its bytes against the model's checksum pins, and
Triton's boolean model-config parameters.

Imports only `errors`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath

from seawall.errors import InvalidArgumentError


def locate_model_file(
    model_dir: str, version_dir: str, filename: str, model_name: str, directory_file: str = ""
) -> tuple[str, str]:
    """The model file `<version>/<filename>` (`<version>/<filename>/<directory_file>` when that is a directory and
    `directory_file` is given) and its path relative to the model directory, for messages.

    Raises:
        InvalidArgumentError: the name leaves the version directory (absolute, '..', a symlink out), or the file
            does not exist (Triton's "unable to find").
    """
    root = os.path.realpath(version_dir)
    parts = PurePosixPath(filename.replace("\\", "/")).parts
    if not filename or os.path.isabs(filename) or ".." in parts or "\x00" in filename:
        raise InvalidArgumentError(
            f"model file '{filename[:128]}' of model '{model_name}' must be inside the model's version directory"
        )
    path = os.path.join(root, filename)
    if directory_file and os.path.isdir(path):
        path = os.path.join(path, directory_file)
    relative = os.path.relpath(path, model_dir)
    if not os.path.lexists(path):
        raise InvalidArgumentError(f"unable to find '{relative}' for model '{model_name}'")
    real = os.path.realpath(path)
    if os.path.commonpath([real, root]) != root or real == root:
        raise InvalidArgumentError(
            f"model file '{relative}' of model '{model_name}' resolves outside the model's version directory"
        )
    return path, relative


def read_bounded(path: str, limit: int, shown: str, model_name: str) -> bytes:
    """The whole regular file at `path` (not followed if its last component is a symlink), refusing one over
    `limit` bytes (--max-model-size); `shown` names it in errors (relative to the model directory).

    Raises:
        InvalidArgumentError: unreadable, not a regular file, or over the limit.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        raise InvalidArgumentError(f"file '{shown}' of model '{model_name}' cannot be read") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise InvalidArgumentError(f"file '{shown}' of model '{model_name}' is not a regular file")
        too_large = InvalidArgumentError(
            f"model '{model_name}' is larger than --max-model-size allows (reading file '{shown}')"
        )
        if info.st_size > limit:
            raise too_large
        data = file.read(limit + 1)
    if len(data) > limit:
        raise too_large
    return data


def verify_pins(data: bytes, relative: str, pins: Sequence[Mapping[str, str]], model_name: str) -> None:
    """Check the bytes a backend read of file `relative` (to the model directory) against each of the model's pin
    sets (`model_config.checksum_pins`; empty: not pinned). The checksum agent checked the files on disk before the
    load; this check covers the bytes the runtime is handed, so a file swapped in between is refused too.

    Raises:
        InvalidArgumentError: a pin set has no pin for the file, or its digest differs.
    """
    if not pins:
        return
    digest = hashlib.sha256(data).hexdigest()
    key = os.path.normpath(relative)
    for pin_set in pins:
        pinned = pin_set.get(key)
        if pinned is None:
            raise InvalidArgumentError(f"checksum agent: file '{key}' of model '{model_name}' has no SHA256 pin")
        if not hmac.compare_digest(digest, pinned):
            raise InvalidArgumentError(
                f"checksum agent: file '{key}' of model '{model_name}' does not match its SHA256 pin"
            )


def triton_bool(value: str) -> bool:
    """Triton's ParseBoolValue for a config parameter.

    Raises:
        InvalidArgumentError: not true/on/1 or false/off/0 (any case).
    """
    lowered = value.lower()
    if lowered in ("true", "on", "1"):
        return True
    if lowered in ("false", "off", "0"):
        return False
    raise InvalidArgumentError(f"failed to convert '{value[:64]}' to boolean")
