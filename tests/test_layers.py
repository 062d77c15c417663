"""The layering rule, read from the code's own imports (module level and inside functions):
app -> runtime / export -> ops -> contract -> nothing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).parent.parent / "edgecpm"
APP_LIBS = {"click", "fastapi", "httpx", "uvicorn", "starlette", "pydantic"}
HEAVY = {"onnx", "torch", "transformers", "safetensors", "gguf"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code."""
    out = set()
    pkg = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}  # `from edgecpm.ops import kernels`
    return out


MODULES = {module_name(p): imports(p) for p in PKG.rglob("*.py")}


def reachable(start: str) -> set[str]:
    """Modules reachable from `start` through the package's own imports (plus the outside ones they name)."""
    seen, todo = set(), [m for m in MODULES if m == start or m.startswith(start + ".")]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for dep in MODULES.get(m, ()):
            if dep in MODULES:
                todo.append(dep)
            elif dep.startswith("edgecpm."):
                continue  # a name imported from a module, not a module
            else:
                seen.add(dep)
    return seen


def tops(mods: set[str]) -> set[str]:
    return {m.split(".")[0] for m in mods}


def under(mods: set[str], prefix: str) -> set[str]:
    return {m for m in mods if m == prefix or m.startswith(prefix + ".")}


@pytest.mark.parametrize("layer", ["edgecpm.runtime", "edgecpm.contract", "edgecpm.ops.kernels"])
def test_runtime_side_never_reaches_export_app_or_heavy_libraries(layer):
    deps = reachable(layer)
    assert not under(deps, "edgecpm.export"), under(deps, "edgecpm.export")
    assert not under(deps, "edgecpm.app")
    assert not tops(deps) & (HEAVY | APP_LIBS), tops(deps) & (HEAVY | APP_LIBS)


def test_contract_imports_nothing_from_the_package():
    assert not {m for m in MODULES["edgecpm.contract"] if m.startswith("edgecpm")}


def test_nothing_below_the_app_imports_app_libraries_or_the_app():
    for name, deps in MODULES.items():
        if name.startswith("edgecpm.app") or name == "edgecpm.__main__":
            continue
        assert not tops(deps) & APP_LIBS, (name, tops(deps) & APP_LIBS)
        assert not under(deps, "edgecpm.app"), name


def test_export_does_not_import_the_runtime():
    deps = reachable("edgecpm.export")
    assert not under(deps, "edgecpm.runtime") and not under(deps, "edgecpm.app")


def test_rule_checker_sees_lazy_imports():
    """The checker itself: an import inside a function counts (a checker that misses them cannot fail)."""
    assert "edgecpm.app.server" in MODULES["edgecpm.app.commands"]
    assert "edgecpm.export" in MODULES["edgecpm.app.defaults"]


def test_importing_the_runtime_loads_no_exporter():
    code = ("import edgecpm.runtime, sys; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('onnx', 'torch', 'transformers', 'click', 'httpx', 'fastapi') or m.startswith(('edgecpm.export', "
            "'edgecpm.app'))]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
