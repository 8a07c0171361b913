"""tritonserver's argv, read: GNU-style long options against the flag table, values converted, unsupported
settings refused by name, restricted-API secrets read from files or the environment, and the `--help` text.

Private to `seawall.cli` (its public surface re-exports what others use). Reads secret files; never logs one.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from seawall._cli_flags import BY_NAME, FLAGS, BadValue, Flag, parse_restriction
from seawall.options import Options, Restriction

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


class CliError(Exception):
    """A command-line mistake: the message goes to stderr and the process exits 1."""


class HelpRequested(Exception):
    """`--help` was given; the argument is the usage text."""


SECRET_ENV_FLAGS = ("http-restricted-api-env", "grpc-restricted-protocol-env")

SECRET_ARGV_FLAGS = ("http-restricted-api", "grpc-restricted-protocol")


def scan(argv: Sequence[str]) -> list[tuple[Flag, str]]:
    """GNU getopt_long's long options: `--name=value` or `--name value`; positionals are errors."""
    given: list[tuple[Flag, str]] = []
    positional: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg == "--":
            positional.extend(argv[index:])
            break
        if arg in ("--help", "-h"):
            raise HelpRequested(usage())
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, equals, raw = arg[2:].partition("=")
        flag = BY_NAME.get(name) if arg.startswith("--") else None
        if flag is None:
            # the value is not echoed: a mistyped restricted-api flag would print its secret
            raise CliError(f"seawall: unrecognized option '{arg.partition('=')[0]}'")
        if not flag.kind.takes_value:
            if equals:
                raise CliError(f"seawall: option '--{name}' doesn't allow an argument")
        elif not equals:
            if index >= len(argv):
                raise CliError(f"seawall: option '--{name}' requires an argument")
            raw = argv[index]
            index += 1
        given.append((flag, raw))
    if positional:
        raise CliError(f"Unexpected argument: {positional[0]}")
    return given


def convert(flag: Flag, raw: str) -> object:
    try:
        return flag.kind.convert(raw)
    except BadValue as exc:
        raise CliError(f'Bad option: "--{flag.name}".\n{exc}') from None


def refuse_unsupported(given: Sequence[tuple[Flag, object]]) -> None:
    refused: list[str] = []
    for flag, value in given:
        if flag.support == "yes" or (flag.harmless is not None and flag.harmless(value)):
            continue
        if flag.support == "gpu":
            message = f"--{flag.name} is a GPU option; Seawall is a CPU-only server and does not support it"
        else:
            message = f"--{flag.name} is not yet supported by Seawall (see docs/differences.md)"
        if message not in refused:
            refused.append(message)
    if refused:
        raise CliError("\n".join(refused))


def put(tree: dict[str, object], path: str, value: object) -> None:
    *parents, leaf = path.split(".")
    for name in parents:
        child = tree.setdefault(name, {})
        assert isinstance(child, dict)
        tree = child
    tree[leaf] = value


def get(tree: Mapping[str, object], path: str) -> object:
    node: object = tree
    for name in path.split("."):
        if not isinstance(node, dict) or name not in node:
            return None
        node = node[name]
    return node


_D = TypeVar("_D", bound="DataclassInstance")


def apply(base: _D, tree: Mapping[str, object]) -> _D:
    changes: dict[str, object] = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            value = apply(getattr(base, name), value)
        elif isinstance(value, list):
            value = tuple(value)
        changes[name] = value
    return dataclasses.replace(base, **changes)


def read_restrictions(flag_name: str, path: str, noun: str) -> list[Restriction]:
    """Restrictions from a secret file, one `<categories>:<key>=<value>` a line; `#` starts a comment."""
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CliError(f'Bad option: "--{flag_name}".\ncannot read {path}: {reason}') from None
    found = []
    for number, line in enumerate(lines, 1):
        if line.strip() and not line.lstrip().startswith("#"):
            # the line holds a secret, so an error names its number, never its text
            error = f"{path}:{number}: format is '<config name>:<setting>=<value>'"
            try:
                found.append(dataclasses.replace(parse_restriction(line.strip(), noun, error), source=path))
            except BadValue as exc:
                raise CliError(f'Bad option: "--{flag_name}".\n{exc}') from None
    return found


def restriction_from_environment(flag_name: str, variable: str, noun: str, environ: Mapping[str, str]) -> Restriction:
    """A restriction whose whole `<categories>:<key>=<value>` text is in environment variable `variable`."""
    text = environ.get(variable)
    if text is None:
        raise CliError(f'Bad option: "--{flag_name}".\nenvironment variable {variable} is not set')
    try:
        # the variable holds a secret: an error names the variable, never its text
        return parse_restriction(text.strip(), noun, f"{variable}: format is '<config name>:<setting>=<value>'")
    except BadValue as exc:
        raise CliError(f'Bad option: "--{flag_name}".\n{exc}') from None


def check_groups(restrictions: object, flag_name: str, noun: str) -> None:
    """One group per category (Triton), except that lines of one key file may repeat a category: several keys
    are then valid at once, so a key can be rotated without a moment where neither works."""
    seen: dict[str, str] = {}  # category → the key file it came from ("" = argv or environment)
    for restriction in restrictions if isinstance(restrictions, list) else []:
        for category in restriction.categories:
            if category in seen and not (restriction.source and seen[category] == restriction.source):
                raise CliError(
                    f'Bad option: "--{flag_name}".\n'
                    f"restricted {noun} '{category}' can not be specified in multiple config groups"
                )
            seen[category] = restriction.source


def check_grpc_keys(restrictions: Sequence[Restriction]) -> None:
    for restriction in restrictions:
        if restriction.key != restriction.key.lower():
            raise CliError(
                f"--grpc-restricted-protocol key '{restriction.key}' has upper-case letters: gRPC metadata "
                f"keys are lower-case, so no client could send 'triton-grpc-protocol-{restriction.key}'. "
                "Use a lower-case key."
            )


def read_key_file(path: str, family: str) -> tuple[Restriction, ...]:
    """The restrictions of a `--http-restricted-api-file` ("http") or `--grpc-restricted-protocol-file`
    ("grpc") read again, for key rotation: the same rules as at start-up.

    Raises:
        ValueError: the file cannot be read or is malformed; the reason names a line number, never a key.
    """
    flag, noun = (
        ("http-restricted-api-file", "api") if family == "http" else ("grpc-restricted-protocol-file", "protocol")
    )
    try:
        found = read_restrictions(flag, path, noun)
        check_groups(found, flag, noun)
        if family == "grpc":
            check_grpc_keys(found)
    except CliError as exc:
        raise ValueError(str(exc).rpartition("\n")[2]) from None
    return tuple(found)


def _default_text(defaults: Options, flag: Flag) -> str:
    if not flag.target or flag.repeat or not flag.kind.takes_value:
        return ""
    value: object = functools.reduce(getattr, flag.target.split("."), defaults)
    if value == "" or value is None:
        return ""
    return f" Default: {str(value).lower() if isinstance(value, bool) else value}."


def usage() -> str:
    """The --help text, grouped like tritonserver's, with defaults read from the Options dataclasses."""
    defaults = Options()
    lines = ["Usage: seawall [options]", "  --help", "\tPrint usage"]
    section = ""
    for flag in FLAGS:
        if flag.section != section:
            section = flag.section
            lines += ["", f"{section}:"]
        lines.append(f"  --{flag.name} {flag.kind.metavar}".rstrip())
        status = {"yes": "", "later": " [not yet supported]", "gpu": " [GPU only: not supported]"}[flag.support]
        lines.append(f"\t{flag.help}{_default_text(defaults, flag)}{status}")
    return "\n".join(lines)
