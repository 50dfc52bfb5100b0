"""The plugins use canfar-core only through its top-level surface (issue 15.4).

A name the plugins need is exported from `canfar_core/__init__`, so a user reading that
file sees everything the engines rely on, and moving a module inside the core cannot
break a plugin. The optional subpackages `canfar_core.dask` and `canfar_core.run` are
surfaces of their own.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import canfar_core
import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGIN_SOURCES = [
    REPO / "packages/prefect-canfar/src/prefect_canfar",
    REPO / "packages/snakemake-executor-canfar/src/snakemake_executor_plugin_canfar",
]
OWN_SURFACES = ("canfar_core.dask", "canfar_core.run")


def core_imports() -> list[tuple[str, int, str, list[str]]]:
    found = []
    for root in PLUGIN_SOURCES:
        for path in sorted(root.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "canfar_core"
                ):
                    names = [alias.name for alias in node.names]
                    found.append((path.name, node.lineno, node.module or "", names))
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name.startswith("canfar_core."):
                            found.append((path.name, node.lineno, alias.name, []))
    return found


def test_the_plugins_import_canfar_core_only_from_its_top_level() -> None:
    deep = [
        f"{file}:{line} imports from {module}"
        for file, line, module, _ in core_imports()
        if module != "canfar_core"
        and not any(module == own or module.startswith(own + ".") for own in OWN_SURFACES)
    ]
    assert core_imports(), "the plugins import nothing from canfar_core: the scan is broken"
    assert deep == []


def test_every_name_the_plugins_import_is_in_canfar_cores_all() -> None:
    used = {
        name for _, _, module, names in core_imports() if module == "canfar_core" for name in names
    }
    assert used - set(canfar_core.__all__) == set()


@pytest.mark.parametrize(
    "package", ["canfar_core", "canfar_local", "prefect_canfar", "snakemake_executor_plugin_canfar"]
)
def test_each_packages_all_names_only_what_it_exports(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []
    assert len(module.__all__) == len(set(module.__all__))
