"""Whether a directory or file may be trusted as a source of code (sshd's StrictModes idea).

Imports nothing from Seawall. A path is trusted when it and every directory above it is owned by root or
by the user running Seawall, and none is writable by group or others (a sticky directory such as /tmp is
tolerated above the path, never as the path itself).
"""

from __future__ import annotations

import os
import stat


def untrusted_reason(path: str) -> str | None:
    """Why `path` must not be trusted, or None. A path that does not exist is trusted (nothing to load)."""
    try:
        current = os.path.realpath(path)
        info = os.stat(current)
    except OSError:
        return None
    me = os.geteuid()
    first = True
    while True:
        if info.st_uid not in (0, me):
            return f"'{current}' is owned by another user (uid {info.st_uid})"
        writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        sticky_dir = stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX
        if writable and (first or not sticky_dir):
            return f"'{current}' is writable by {'others' if info.st_mode & stat.S_IWOTH else 'its group'}"
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current, first = parent, False
        info = os.stat(current)
