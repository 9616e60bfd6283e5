"""The layers import in one direction: domain <- stores <- app <- cli (and the renderers).

The domain is pure session logic; the stores know their own kind and nothing of the
application; only the command line and the renderers know typer and rich; and nothing outside
`stores/` names a store kind's module.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "sessionctl"

#: What each layer may import from sessionctl itself.
ALLOWED = {
    "domain": {"domain"},
    "stores": {"domain", "stores", "fsutil"},
    "app": {"domain", "stores", "fsutil", "app"},
    "fsutil": {"domain"},
}
UI_LIBRARIES = {"typer", "rich", "click"}
#: The only names other layers may import from the store layer.
STORE_INTERFACE = {"stores", "stores.base"}


def imports_of(path: Path) -> list[str]:
    """Absolute module names `path` imports (relative imports resolved)."""
    package = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package[:-1]
    else:
        package = package[:-1] if package[-1] == "__init__" else package
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append(module)
            if not node.module:
                found.extend(f"{module}.{alias.name}" for alias in node.names)
    return found


def layer_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_imports_only_the_layers_below_it(path):
    layer = layer_of(path)
    for module in imports_of(path):
        top = module.split(".")[0]
        if layer in ALLOWED or layer == "render.py":
            assert top not in UI_LIBRARIES or layer == "render", f"{module} below the CLI"
        if top != "sessionctl" or layer not in ALLOWED:
            continue
        parts = module.split(".")
        if len(parts) < 2:
            continue
        assert parts[1] in ALLOWED[layer], f"{path.name} ({layer}) imports {module}"


@pytest.mark.parametrize(
    "path",
    [p for p in SOURCES if layer_of(p) not in ("stores",)],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_only_the_store_layer_names_a_store_kinds_module(path):
    for module in imports_of(path):
        parts = module.split(".")
        if parts[:2] == ["sessionctl", "stores"] and len(parts) > 2:
            assert ".".join(parts[1:3]) in STORE_INTERFACE, f"{path.name} imports {module}"
