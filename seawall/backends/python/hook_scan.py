"""Whether a model file may define `auto_complete_config`, read from its source without running it.

Imports only the standard library. The answer errs towards "may": False only for a file whose
`TritonPythonModel` is a plain class (no bases, keywords or decorators) bound once, at the top level, and whose
code never names `auto_complete_config` (as an identifier, attribute or string) nor rebinds names dynamically
(star imports, setattr, exec, globals() and the like). Anything else, or a file that does not parse, is True,
and the server asks a throw-away stub, as Triton always does.
"""

from __future__ import annotations

import ast

HOOK = "auto_complete_config"
CLASS = "TritonPythonModel"
#: A larger model file is not parsed in the server: its stub answers.
MAX_SCAN_BYTES = 1 << 20
#: Names through which code can add an attribute or a binding that the source does not spell out.
_DYNAMIC = frozenset(
    {"setattr", "exec", "eval", "compile", "globals", "locals", "vars", "__import__", "__dict__", "__class__"}
    | {"__bases__", "modules"}
)


def may_define_auto_complete(source: bytes) -> bool:
    """False when `source` certainly defines no `TritonPythonModel.auto_complete_config`; True otherwise."""
    if len(source) > MAX_SCAN_BYTES or HOOK.encode() in source:
        return True
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return True  # the stub reports the error as the model's load error
    top = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == CLASS]
    if len(top) != 1 or top[0].bases or top[0].keywords or top[0].decorator_list:
        return True
    return sum(1 for node in ast.walk(tree) if _binds_class(node)) != 1 or any(map(_is_dynamic, ast.walk(tree)))


def _binds_class(node: ast.AST) -> bool:
    """Whether `node` binds the name TritonPythonModel (anywhere: a try block, a function with `global`...)."""
    if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        return node.name == CLASS
    if isinstance(node, ast.Name):
        return node.id == CLASS and not isinstance(node.ctx, ast.Load)
    if isinstance(node, ast.alias):
        return (node.asname or node.name.split(".")[0]) == CLASS
    if isinstance(node, ast.Global | ast.Nonlocal):
        return CLASS in node.names
    if isinstance(node, ast.MatchAs | ast.MatchStar):
        return node.name == CLASS
    return isinstance(node, ast.MatchMapping) and node.rest == CLASS


def _is_dynamic(node: ast.AST) -> bool:
    """Whether `node` names the hook (identifiers are NFKC-normalised by the parser) or a dynamic binding."""
    if isinstance(node, ast.ImportFrom):
        return any(alias.name == "*" for alias in node.names)
    if isinstance(node, ast.Constant):
        return node.value in (HOOK, CLASS)  # "auto_" "complete_config" is one constant once parsed
    if isinstance(node, ast.Name):
        return node.id == HOOK or node.id in _DYNAMIC
    if isinstance(node, ast.Attribute):  # sys.modules[__name__].TritonPythonModel = ... rebinds the class too
        return node.attr in (HOOK, *_DYNAMIC) or (node.attr == CLASS and not isinstance(node.ctx, ast.Load))
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.arg):
        return (node.name if not isinstance(node, ast.arg) else node.arg) == HOOK
    return False
