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


def untrusted_tree_reason(root: str, max_entries: int = 4096) -> str | None:
    """Why the directory tree at `root` must not be trusted as a source of code, or None: `root` fails
    `untrusted_reason`, an entry below it is owned by another user or writable by group or others, a
    symlink below it leads outside `root`, or the tree has more than `max_entries` entries."""
    reason = untrusted_reason(root)
    if reason is not None:
        return reason
    top = os.path.realpath(root)
    me = os.geteuid()
    seen = 0
    for directory, dirs, files in os.walk(top, followlinks=False):
        for name in (*dirs, *files):
            seen += 1
            if seen > max_entries:
                return f"'{top}' holds more than {max_entries} files"
            path = os.path.join(directory, name)
            real = os.path.realpath(path)
            if os.path.commonpath([real, top]) != top:
                return f"'{path}' leads outside '{top}'"
            try:
                info = os.stat(real)
            except OSError:
                return f"'{path}' cannot be read"
            if info.st_uid not in (0, me):
                return f"'{path}' is owned by another user (uid {info.st_uid})"
            if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return f"'{path}' is writable by {'others' if info.st_mode & stat.S_IWOTH else 'its group'}"
    return None
