"""The package's modules form a DAG: no module of archcalc/ imports, at module
level, a module that imports it back (directly or through others). Imports
inside functions (the lazy torch, pandas and sympy loads) are not edges: they
run after every module has loaded. A cycle is printed with its members."""
import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "archcalc")


def modules() -> dict:
    found = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = "archcalc" + path[len(ROOT):-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def module_level_imports(dotted: str, path: str, known: dict) -> set:
    package = dotted if path.endswith("__init__.py") else dotted.rpartition(".")[0]
    targets = set()
    for node in ast.parse(open(path, encoding="utf-8").read()).body:
        statements = node.body if isinstance(node, (ast.If, ast.Try)) else [node]
        for stmt in statements:
            if isinstance(stmt, ast.Import):
                targets.update(a.name for a in stmt.names)
            elif isinstance(stmt, ast.ImportFrom):
                base = stmt.module or ""
                if stmt.level:
                    parts = package.split(".")[:len(package.split(".")) - stmt.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets.add(base)
                targets.update(f"{base}.{a.name}" for a in stmt.names)
    return {t for t in targets if t in known and t != dotted}


def cycles(edges: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_the_finder_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_package():
    known = modules()
    assert len(known) > 100      # the walk found the package
    edges = {m: module_level_imports(m, p, known) for m, p in known.items()}
    assert edges["archcalc.analysis"], "the analysis imports other modules"
    assert cycles(edges) == []
