"""The house's rules, read from the code's own imports (docs/DESIGN.md, "Layers"): wings in core/, small modules, no
import circles (function-level imports included), edges that translate, plugins that speak only the contract."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The provider SDKs may be longer than the other modules: each mirrors a vendor's API.
SDKS = {"core/providers/baidu.py", "core/providers/webank.py", "core/providers/tencent.py"}
MAX_LINES = 450


def modules() -> dict[str, Path]:
    """Dotted module name → file, for core/, plugins/ and bot.py."""
    found = {"bot": ROOT / "bot.py"}
    for top in ("core", "plugins"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (module level or inside functions), except under
    ``if TYPE_CHECKING:``; ``from package import module`` counts as importing the module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from package import module` imports the module, not the package's names
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    resolved = set()
    for target in out:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(name, path, known) for name, path in found.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_there_is_no_import_circle_not_even_through_a_function_level_import():
    assert circles(graph()) == []


def test_core_shows_its_wings_in_folders_with_at_most_eight_modules_directly_in_it():
    direct = sorted(p.name for p in (ROOT / "core").glob("*.py"))
    assert len(direct) <= 8, direct


def test_no_module_outside_the_provider_sdks_is_over_450_lines():
    long = {}
    for path in [*(ROOT / "core").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]:
        rel = str(path.relative_to(ROOT))
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if rel not in SDKS and lines > MAX_LINES:
            long[rel] = lines
    assert long == {}


def test_the_edges_import_neither_the_assembly_nor_the_roles_nor_the_cluster():
    edges = graph()
    for name, targets in edges.items():
        if name.startswith(("core.telegram", "core.console")):
            wrong = {t for t in targets if t.startswith(("core.runtime", "core.pipeline.cluster"))}
            assert not wrong, f"{name} imports {wrong}"


def test_core_imports_no_plugin_and_plugins_import_no_telegram():
    edges = graph()
    for name, targets in edges.items():
        if name.startswith("core"):
            assert not {t for t in targets if t.startswith("plugins")}, name
    for path in (ROOT / "plugins").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "telegram" for a in node.names), path
            elif isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] != "telegram", path


def test_the_circle_finder_finds_a_circle():  # so that the first test's empty list means something
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
