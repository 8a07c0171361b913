"""What model code may inherit from the server: the stubs' environment allowlist, the model user, and the
server's own hardening at start-up (non-dumpable, restricted-API secrets wiped from its environment and argv).

Imports only the standard library. `cli.py` calls it (it alone reads os.environ); see docs/differences.md.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import re
import sys
from collections.abc import Callable, Collection, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

#: Variables a stub process gets from the server's environment, besides --model-env (nothing else: no secrets,
#: cloud credentials, proxy settings or tokens of the server reach model code).
STUB_VARIABLES = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONNOUSERSITE",
        "PYTHONSAFEPATH",
        "PYTHONHASHSEED",
        "PYTHONIOENCODING",
        "PYTHONUTF8",
        "PYTHONWARNINGS",
        "OPENBLAS_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "NUMEXPR_MAX_THREADS",
        "VECLIB_MAXIMUM_THREADS",
    }
)
#: Prefixes of further allowed variables: locale, OpenMP and MKL settings.
STUB_PREFIXES = ("LC_", "OMP_", "MKL_")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PR_SET_DUMPABLE = 4


@dataclass(frozen=True, slots=True)
class ModelUser:
    """The unprivileged account stubs run as (--model-user)."""

    uid: int
    gid: int
    name: str  # "" when the uid has no passwd entry
    home: str  # "" likewise


def resolve_model_user(text: str) -> ModelUser:
    """`<name>` or `<uid>[:<gid>]` → the account; root is refused (it would isolate nothing).

    Raises:
        ValueError: unknown user name, malformed uid/gid, or root.
    """
    match = re.fullmatch(r"([0-9]+)(?::([0-9]+))?", text)
    if match is not None:
        uid = int(match.group(1))
        try:
            entry: pwd.struct_passwd | None = pwd.getpwuid(uid)
        except (KeyError, OverflowError):
            entry = None
        if match.group(2) is not None:
            gid = int(match.group(2))
        elif entry is not None:
            gid = entry.pw_gid
        else:
            raise ValueError(f"uid {uid} has no passwd entry: give its group too, as <uid>:<gid>")
        if uid >= 2**32 - 1 or gid >= 2**32 - 1:
            raise ValueError(f"uid/gid out of range. Got {text}")
    else:
        try:
            entry = pwd.getpwnam(text)
        except KeyError:
            raise ValueError(f"no such user: {text[:64]}") from None
        uid, gid = entry.pw_uid, entry.pw_gid
    if uid == 0 or gid == 0:
        raise ValueError("the model user must not be root (uid 0 or gid 0)")
    return ModelUser(uid, gid, entry.pw_name if entry else "", entry.pw_dir if entry else "")


def unreadable_path(user: ModelUser, paths: Sequence[str]) -> str | None:
    """The first of `paths` (or a directory above it) that `user` cannot list or traverse, by mode bits; None
    if it can reach them all (the stub then imports any module of the Python installation as that user)."""
    for path in paths:
        current = os.path.abspath(path)
        chain = [current]
        while os.path.dirname(current) != current:
            current = os.path.dirname(current)
            chain.append(current)
        for index, directory in enumerate(reversed(chain)):
            try:
                info = os.stat(directory)
            except OSError:
                break  # a path that does not exist is no one's problem here
            needed = 0o5 if index == len(chain) - 1 else 0o1  # the last one is listed, the others traversed
            if info.st_uid == user.uid:
                granted = (info.st_mode >> 6) & 0o7
            elif info.st_gid == user.gid:
                granted = (info.st_mode >> 3) & 0o7
            else:
                granted = info.st_mode & 0o7
            if granted & needed != needed:
                return directory
    return None


def stub_environment(
    environ: Mapping[str, str], extra: Sequence[str], secret: Collection[str], user: ModelUser | None
) -> tuple[tuple[str, str], ...]:
    """The whole environment of a stub process: the allowlisted variables of `environ`, then `extra`
    (`NAME` copies the server's value, `NAME=VALUE` sets one), never a variable named in `secret`.

    Raises:
        ValueError: an `extra` item is not a variable name, or names a secret variable.
    """
    chosen = {
        name: value for name, value in environ.items() if name in STUB_VARIABLES or name.startswith(STUB_PREFIXES)
    }
    for item in extra:
        name, equals, value = item.partition("=")
        if _NAME.fullmatch(name) is None:
            raise ValueError(f"'{name[:64]}' is not an environment variable name")
        if name in secret:
            raise ValueError(f"{name} holds a restricted-API secret: model code never gets it")
        if equals:
            chosen[name] = value
        elif name in environ:
            chosen[name] = environ[name]
    if user is not None:  # the server's HOME is root's; the model user's own account replaces it
        chosen.pop("HOME", None)
        if user.home:
            chosen["HOME"] = user.home
        if user.name:
            chosen["USER"] = chosen["LOGNAME"] = user.name
    for name in secret:
        chosen.pop(name, None)
    return tuple(sorted(chosen.items()))


def make_non_dumpable() -> bool:
    """PR_SET_DUMPABLE 0: processes of the same uid without CAP_SYS_PTRACE can no longer read this process's
    /proc/<pid>/environ, mem, maps or fds, nor ptrace it (cmdline stays world-readable: Linux shows it to all).
    False where prctl is unavailable (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def forget_secrets(environ: MutableMapping[str, str], variables: Collection[str], flags: Collection[str]) -> None:
    """Remove the secret `variables` from the environment (children inherit nothing of them) and overwrite them
    in the process's original environment block, and the values of the secret `flags` in its argv block, so
    /proc/<pid>/environ and /proc/<pid>/cmdline no longer show them (Linux; best effort elsewhere).

    `flags` are option names such as `--http-restricted-api`; both `--flag=value` and `--flag value` are wiped.
    """
    for name in variables:
        environ.pop(name, None)  # os.environ.pop also unsetenv()s it
    if not sys.platform.startswith("linux") or not (variables or flags):
        return
    try:
        with open("/proc/self/stat", "rb") as file:
            fields = file.read().rpartition(b")")[2].split()
        # fields[0] is field 3 (state); arg_start..env_end are fields 48..51 (Linux 3.5+)
        arg_start, arg_end, env_start, env_end = (int(fields[index]) for index in range(45, 49))
        with open("/proc/self/mem", "r+b", buffering=0) as memory:
            _wipe(memory, env_start, env_end, lambda entry, _previous: _variable_value(entry, variables))
            _wipe(memory, arg_start, arg_end, lambda entry, previous: _flag_value(entry, previous, flags))
    except (OSError, ValueError, IndexError):
        pass  # no /proc or no access: the variables are still gone from the environment children get


def _wipe(memory: BinaryIO, start: int, end: int, secret_at: Callable[[bytes, bytes], int | None]) -> None:
    """Overwrite, inside [start, end) of this process's memory, the parts `secret_at(entry, previous)` names."""
    memory.seek(start)
    block = memory.read(end - start)
    offset = 0
    previous = b""
    for entry in block.split(b"\0"):
        skip = secret_at(entry, previous)
        if skip is not None:
            memory.seek(start + offset + skip)
            memory.write(b"*" * (len(entry) - skip))
        previous = entry
        offset += len(entry) + 1


def _variable_value(entry: bytes, variables: Collection[str]) -> int | None:
    name, equals, _ = entry.partition(b"=")
    return len(name) + 1 if equals and name.decode("utf-8", "replace") in variables else None


def _flag_value(entry: bytes, previous: bytes, flags: Collection[str]) -> int | None:
    name, equals, _ = entry.partition(b"=")
    if equals and name.decode("utf-8", "replace") in flags:
        return len(name) + 1
    if previous.decode("utf-8", "replace") in flags and entry:
        return 0
    return None
