"""The package's shape: no import cycles (not even for type checking), and no module-level
state that code changes at run time (two plugins on two loops must share nothing)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "wxcode_pty"

#: Process-wide resources, each safe to share between plugins, loops and threads: the spawn
#: threads, and what a probe learned about the machine's ``env`` program.
SHARED_ON_PURPOSE = {("pty", "_SPAWNER"), ("pty", "_ENV_RESETS")}

_MUTABLE_CALLS = {"dict", "list", "set", "bytearray", "deque", "Counter", "defaultdict"}


def _modules() -> dict[str, ast.Module]:
    return {
        path.stem: ast.parse(path.read_text(), str(path))
        for path in sorted(PACKAGE.glob("*.py"))
        if path.stem != "__main__"
    }


def _imports(tree: ast.Module) -> set[str]:
    """Every sibling module imported anywhere in ``tree``, under TYPE_CHECKING too."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {name: _imports(tree) & modules.keys() - {name} for name, tree in modules.items()}
    graph.pop("__init__")
    for edges in graph.values():
        edges.discard("__init__")
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_no_module_level_mutable_state() -> None:
    problems: list[str] = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                problems.append(f"{name}: 'global {', '.join(node.names)}'")
        for statement in tree.body:
            if isinstance(statement, ast.Assign):
                targets, value = statement.targets, statement.value
            elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
                if "Final" in ast.unparse(statement.annotation):
                    continue  # a constant, by declaration (mypy refuses a rebinding)
                targets, value = [statement.target], statement.value
            else:
                continue
            mutable = isinstance(value, ast.Dict | ast.List | ast.Set | ast.DictComp) or (
                isinstance(value, ast.Call)
                and getattr(value.func, "id", getattr(value.func, "attr", "")) in _MUTABLE_CALLS
            )
            for target in targets:
                if (
                    mutable
                    and isinstance(target, ast.Name)
                    and (name, target.id) not in SHARED_ON_PURPOSE
                    and target.id != "__all__"
                ):
                    problems.append(f"{name}: {target.id}")
    assert not problems, problems
