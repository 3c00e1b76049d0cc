"""The house rules of promedical/: one package per stage, imports running one way down the pipeline, no
import circles, light step modules (no torch to check a parameter). Read from the source, so a change
that breaks a rule fails here with the offending import named."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "promedical"
# pipeline order: a package may import itself and the packages before it, never one after it
ORDER = ["core", "models", "corpus", "rubrics", "review", "reward", "policy", "bench", "steps", "scale", "app"]


def module_name(path: Path) -> str:
    return ".".join(("promedical",) + path.relative_to(PKG).with_suffix("").parts).removesuffix(".__init__")


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported promedical module: line}, lazy imports inside functions included."""
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{path}:{node.lineno}: relative import; write promedical.<stage>.<module>")
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("promedical"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    edges.setdefault(t, node.lineno)
        graph[name] = edges
    return graph


def stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_lives_in_a_stage_package():
    loose = sorted(module_name(p) for p in PKG.glob("*.py")
                   if p.stem not in ("__init__", "__main__", "steps"))
    assert not loose, f"modules outside a stage package: {loose}"
    assert sorted(p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()) == \
        sorted(s for s in ORDER if s != "steps")


def test_imports_run_down_the_pipeline():
    graph = import_graph()
    upward = []
    for module, edges in graph.items():
        here = stage(module)
        if here not in ORDER:
            continue
        for target, line in edges.items():
            there = stage(target)
            if there in ORDER and ORDER.index(there) > ORDER.index(here):
                upward.append(f"{module} (line {line}) imports {target}: {there} comes after {here}")
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    graph = import_graph()
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_graph_reader_sees_a_violation(tmp_path, monkeypatch):
    """The rules above can fail: a core module importing a stage is reported."""
    fake = tmp_path / "promedical"
    (fake / "core").mkdir(parents=True)
    (fake / "reward").mkdir()
    for d in (fake, fake / "core", fake / "reward"):
        (d / "__init__.py").write_text("")
    (fake / "core" / "a.py").write_text("def f():\n    from promedical.reward.b import g\n")
    (fake / "reward" / "b.py").write_text("from promedical.core.a import f\ndef g(): pass\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", fake)
    graph = import_graph()
    assert graph["promedical.core.a"] == {"promedical.reward.b": 2}
    try:
        test_no_import_circles()
    except AssertionError as exc:
        assert "promedical.core.a" in str(exc)
    else:
        raise AssertionError("the circle was not found")


@pytest.mark.subprocess
def test_step_registry_imports_no_torch():
    """`promedical step`/`params`/`plan` check a config without loading torch, transformers or datasets."""
    code = ("import sys, promedical.steps, promedical.app.cli; "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'trl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
