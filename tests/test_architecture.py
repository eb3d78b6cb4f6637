"""The layout described in engine/__init__.py and docs/architecture.md, held
against the code: layers point one way and no modules import each other in
a loop."""

from __future__ import annotations

import ast
import graphlib

from conftest import ROOT

# Lowest first: a package may import only the ones before it.
LAYERS = ["errors", "ruleset", "evaluate", "data", "letters", "run", "report", "testing"]
ENGINE = ROOT / "engine"


def _imports() -> dict[str, set[str]]:
    """engine module -> the engine modules it imports (anywhere in its code)."""
    found: dict[str, set[str]] = {}
    for path in ENGINE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        targets = found.setdefault(module, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{path}: use absolute imports (from engine.x.y import ...)")
            names = (
                [node.module]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            targets.update(n for n in names if n and n.split(".")[0] == "engine")
    return found


def _layer(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_every_package_is_a_known_layer():
    packages = {p.name for p in ENGINE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in ENGINE.glob("*.py") if p.stem != "__init__"}
    assert packages | modules == set(LAYERS)


def test_layers_import_only_lower_layers():
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in _imports().items()
        if _layer(module)
        for target in targets
        if _layer(target) and LAYERS.index(_layer(target)) > LAYERS.index(_layer(module))
    )
    assert upward == []


def test_no_import_cycles_between_modules():
    graph = {
        module: {t for t in targets if t != module and t.count(".") > 1}
        for module, targets in _imports().items()
    }
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the loop


def test_the_library_never_talks_to_the_terminal():
    for path in ENGINE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "import click" not in text and "from click" not in text, path
        tree = ast.parse(text)
        calls = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
        ]
        assert not calls, f"{path}:{calls[0].lineno} prints"
