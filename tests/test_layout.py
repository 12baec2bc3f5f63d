"""The code stays in rooms a newcomer can read: no module of the packages over 400 lines, no function over 80."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gan_inversion", "detector", "api")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80


def _modules():
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_module_and_function_sizes():
    too_long = []
    for path in _modules():
        src, name = path.read_text(), str(path.relative_to(ROOT))
        if len(src.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(src.splitlines())} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}: {node.name} ({node.end_lineno - start + 1} lines)")
    assert len(_modules()) > 50 and not too_long, too_long


def test_no_import_inside_a_function_of_the_serving_rooms():
    """The runtime, components, features and spec import at the top: no import inside a function to dodge a
    cycle (lint-imports checks the direction of the top-level ones)."""
    offenders = []
    for room in ("detector/runtime", "detector/components", "detector/features", "detector/spec.py",
                 "detector/plan.py", "detector/fitting"):
        for path in sorted((ROOT / room).rglob("*.py")) if (ROOT / room).is_dir() else [ROOT / room]:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    for inner in ast.walk(node):
                        if isinstance(inner, ast.ImportFrom) and inner.module and (
                                inner.level > 0 or inner.module.split(".")[0] in PACKAGES):
                            offenders.append(f"{path.relative_to(ROOT)}:{inner.lineno} {inner.module}")
    assert not offenders, offenders


def _cycle(graph, pkg: str) -> list[str] | None:
    """A chain of imports among `pkg`'s modules that leads back to where it started (None: there is none)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(graph.find_modules_directly_imported_by(m)):
            if not n.startswith(pkg) or n == m:
                continue
            # a submodule importing its own package (as `from .. import x` does) is how packages work, not a cycle
            if state.get(n) == 1 and not m.startswith(n + "."):
                return path + [m, n]
            if n not in state and (found := visit(n, path + [m])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph.modules):
        if m not in state and (found := visit(m, [])):
            return found
    return None


def test_no_import_cycle_between_modules():
    """Between any two modules of a package, imports go one way (lint-imports checks the rooms' direction; this
    checks that no chain of imports, inside a room or across, leads back to where it started)."""
    import grimp

    for pkg in PACKAGES:
        cycle = _cycle(grimp.build_graph(pkg, cache_dir=None), pkg)
        assert cycle is None, " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    import grimp

    (tmp_path / "cyc").mkdir()
    (tmp_path / "cyc" / "__init__.py").write_text("")
    (tmp_path / "cyc" / "a.py").write_text("from . import b\n")
    (tmp_path / "cyc" / "b.py").write_text("from .a import x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _cycle(grimp.build_graph("cyc", cache_dir=None), "cyc") in (["cyc.a", "cyc.b", "cyc.a"],
                                                                        ["cyc.b", "cyc.a", "cyc.b"])
