"""The package layout (README "How the code is laid out"): folders in data-flow order, every
import points down or sideways inside its folder, and no import circle between modules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "lorank"
#: lowest first; a module may import its own layer or any layer before it
LAYERS = ["errors", "linalg", "progress", "atomic", "provenance", "theory", "capacity", "data",
          "models", "training", "ntk", "linearized", "finetune", "experiments", "report",
          "recommend", "cli"]


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["lorank", *parts])] = path
    return out


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("lorank"):
                out.add(node.module)
                out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("lorank"))
    return out


def _layer(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def test_every_import_points_down_the_layers():
    modules = _modules()
    assert {_layer(m) for m in modules} - {"__init__"} <= set(LAYERS), "a new folder: add it"
    up = []
    for mod, path in modules.items():
        if mod == "lorank":
            continue
        for target in _imports(path, top_level_only=False):
            if target in modules and _layer(target) in LAYERS and \
                    LAYERS.index(_layer(target)) > LAYERS.index(_layer(mod)):
                up.append(f"{mod} -> {target}")
    assert not up, "imports pointing up the layers:\n" + "\n".join(sorted(up))


def test_no_import_circle_between_modules():
    modules = _modules()
    graph = {m: {t for t in _imports(p, top_level_only=False) if t in modules and t != m}
             for m, p in modules.items() if m != "lorank"}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            # a package's own __init__ importing its submodules is not a circle
            if node.startswith(nxt + ".") or nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_the_layout_test_sees_an_upward_import(tmp_path):
    """The checker can fail: an upward import in a parsed file is found."""
    bad = tmp_path / "x.py"
    bad.write_text("from lorank.report import build\n")
    assert "lorank.report" in _imports(bad, top_level_only=True)
    assert LAYERS.index("report") > LAYERS.index("theory")
