"""The package layout: the codec stands alone, and nothing imports in a circle.

The codec (what a Zarr reader loads through the entry points) must not import the dataset
pipeline, and the pipeline (``layerquantizer.dataset`` and the modules only it uses) must
have no import cycle. Both are read from the source with :mod:`ast`, so imports inside
functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import layerquantizer

PACKAGE = Path(layerquantizer.__file__).parent

#: The dataset pipeline under ``lq`` (and the synthetic data of ``lq sample``); every other
#: module of the package is the codec, which ``import layerquantizer`` and a Zarr reader load.
PIPELINE_PREFIXES = (
    "layerquantizer.dataset",
    "layerquantizer.storage",
    "layerquantizer.config",
    "layerquantizer.synthetic",
)


def is_pipeline(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in PIPELINE_PREFIXES)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Map each module of the package to the package modules it imports."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                submodules = {f"{base}.{alias.name}" for alias in node.names} & modules.keys()
                # ``from pkg import submodule`` imports the submodule, not a name of pkg.
                imported.update(submodules or {base})
        graph[name] = {other for other in imported if other in modules and other != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_codec_imports_nothing_from_the_pipeline():
    graph = import_graph()
    codec = {name for name in graph if not is_pipeline(name)}
    assert {"layerquantizer", "layerquantizer.chunk", "layerquantizer.zarr3"} <= codec
    imported = {name: {other for other in graph[name] if is_pipeline(other)} for name in codec}
    assert {name: found for name, found in imported.items() if found} == {}


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_pipeline_lives_in_the_dataset_package():
    top_level = {module_name(path) for path in PACKAGE.glob("*.py")}
    pipeline_only = {"_unit", "parallel", "resume", "destination"}
    assert {name.rpartition(".")[2] for name in top_level} & pipeline_only == set()
