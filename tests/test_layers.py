"""The package's layers import one way only: delivery (``cli``, ``serving``) -> API (``api``)
-> algorithm (``core``); and no module imports one that imports it back (no cycles among the
imports that run, ``TYPE_CHECKING`` blocks aside)."""

from __future__ import annotations

import ast
from pathlib import Path

import attribot_rag

PACKAGE = Path(attribot_rag.__file__).parent
RANK = {"core": 0, "api": 1, "serving": 2, "cli": 2}


def _module(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    """The attribot_rag modules ``path`` imports when it runs (lazy imports in functions too)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for child in block.body
        for node in ast.walk(child)
    }
    package = _module(path).split(".")[: -1 if path.name != "__init__.py" else None]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped or not isinstance(node, ast.ImportFrom):
            continue
        base = package[: len(package) - node.level + 1] if node.level else []
        target = ".".join(base + ([node.module] if node.module else []))
        if target.startswith("attribot_rag"):
            names = [f"{target}.{alias.name}" for alias in node.names] if not node.module else []
            found |= {name for name in names if (PACKAGE.parent / name.replace(".", "/")).with_suffix(".py").exists()}
            found.add(target)
    return found


MODULES = {_module(path): _imports(path) for path in PACKAGE.rglob("*.py")}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in RANK else None


def test_each_layer_imports_only_the_layers_below_it() -> None:
    for module, imports in MODULES.items():
        layer = _layer(module)
        if layer is None:
            continue
        for imported in imports:
            other = _layer(imported)
            assert other is None or RANK[other] <= RANK[layer], f"{module} imports {imported}"


def test_no_import_cycles() -> None:
    top_level = {module: {i for i in imports if i in MODULES and i != module} for module, imports in MODULES.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in top_level.get(start, ())
        )

    for module, imports in top_level.items():
        for imported in imports:
            if module.startswith(imported + ".") or imported == "attribot_rag":
                continue  # a package's __init__ and the lazy top-level exports
            assert not reaches(imported, module, {imported}), f"{module} <-> {imported}"
