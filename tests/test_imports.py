"""The package structure, checked: no import cycles, the engine imports only itself and the base
modules, and only the launcher imports the command line.

Every import counts, also one inside a function (a lazy import is still a dependency); only
imports under ``if TYPE_CHECKING:`` are left out, as they never run."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import lmsav

PACKAGE = Path(lmsav.__file__).resolve().parent
# What the engine may use besides itself: the base modules every part of lmsav shares.
ENGINE_MAY_IMPORT = {"lmsav", "lmsav.paths", "lmsav.durable"}


def _module_names() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _module_names()


def _runtime_nodes(tree: ast.AST):
    """Every node except what sits under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path) -> set[str]:
    """The lmsav modules ``name`` imports (a name imported from a package counts as the
    submodule when there is one, else as the package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            subs = [f"{module}.{alias.name}" for alias in node.names]
            targets = [s for s in subs if s in MODULES] or [module]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import lmsav.x.y as z` of a function…
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _top(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


def _edges_within(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    members = set(component)
    return [f"{a} -> {b}" for a in sorted(members) for b in sorted(graph.get(a, ()))
            if b in members]


def test_no_module_imports_another_that_imports_it_back():
    cycles = _cycles(GRAPH)
    assert not cycles, "\n".join(", ".join(_edges_within(c, GRAPH)) for c in cycles)


def test_no_two_parts_of_lmsav_depend_on_each_other():
    packages: dict[str, set[str]] = defaultdict(set)
    why: dict[tuple[str, str], str] = {}
    for module, targets in GRAPH.items():
        for target in targets:
            a, b = _top(module), _top(target)
            if a != b and b != "lmsav":
                packages[a].add(b)
                why.setdefault((a, b), f"{module} imports {target}")
    cycles = _cycles(packages)
    assert not cycles, "\n".join(
        "; ".join(why[(a, b)] for a in c for b in packages[a] if b in c) for c in cycles)


def test_the_engine_imports_only_itself_and_the_base_modules():
    outside = sorted(f"{module} imports {target}" for module, targets in GRAPH.items()
                     if module.startswith("lmsav.scanner") for target in targets
                     if not target.startswith("lmsav.scanner") and target not in ENGINE_MAY_IMPORT)
    assert not outside, "\n".join(outside)


def test_only_the_launcher_imports_the_command_line():
    importers = sorted(m for m, targets in GRAPH.items() if "lmsav.cli" in targets)
    assert importers == ["lmsav.launcher"]


def test_the_checks_see_real_imports():
    """The walk itself works: known edges are found, a lazy import included."""
    assert "lmsav.scanner.objects" in GRAPH["lmsav.scanner.engine"]
    assert "lmsav.cli" in GRAPH["lmsav.launcher"]  # imported inside a function there
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
