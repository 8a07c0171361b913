"""What the onnxruntime and pytorch backends share in reading a model: a bounded read of one regular file, and
Triton's boolean model-config parameters.

Imports only `errors`.
"""

from __future__ import annotations

import os
import stat

from seawall.errors import InvalidArgumentError


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
