"""The house rules of the import graph: layers import only downward, no import loops, and
architecture names are dispatched in one place (``models/families.py``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fnaf_jax"
#: bottom to top; a module may import its own layer and the ones below (docs/DESIGN.md)
LAYERS = (
    ("__init__", "errors", "fileio", "normalize", "physics", "stats", "published", "kernels"),
    ("masks", "metrics", "features", "data"),
    ("models",),
    ("objective", "gradients", "parallel", "attacks"),
    ("train",),
    ("evaluation", "abnormalities", "inference", "tabulation", "figures", "report", "profile"),
    ("study",),
    ("commands", "cli"),
)


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def _layer(module: str) -> int:
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else "__init__"
    for i, names in enumerate(LAYERS):
        if head in names:
            return i
    raise AssertionError(f"{module}: in no layer of tests/test_layers.py (add it, and to DESIGN.md)")


def import_graph() -> dict[str, set[str]]:
    """Module -> the fnaf_jax modules it imports (at module level or inside functions)."""
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            targets |= {t for t in names if t in mods and t != name}
        graph[name] = targets
    return graph


def test_every_import_goes_down_the_layers():
    upward = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
                    if _layer(b) > _layer(a))
    assert upward == []


def test_there_are_no_import_loops():
    graph, state, loops = import_graph(), {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                loops.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert loops == []


def test_architecture_names_are_dispatched_only_by_the_family_table():
    # an architecture (``arch``, ``cfg.model``) compared with a name; a family's own modules
    # may tell their variants apart (the U-Net converter: unet vs unet-v0 keys)
    pattern = re.compile(r"""(\barch\b|\.model\b).{0,40}(==|!=|\bin)\s*\(?["'](unet|unet-v0|irim)["']""")
    allowed = {"models/families.py", "models/convert.py", "models/convert_irim.py", "models/unet.py"}
    found = [f"{p.relative_to(PACKAGE)}:{i}" for p in PACKAGE.rglob("*.py")
             if str(p.relative_to(PACKAGE)) not in allowed
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []
