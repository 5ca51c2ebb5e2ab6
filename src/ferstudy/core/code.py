"""The code a stage runs: the import closure of its module, read from the source.

The closure decides what must not drift from the code: the fingerprint of a partial feature
extraction or a training checkpoint (either resumes only under the same code) and the code
deps of every stage in ``dvc.yaml`` (written by ``scripts/stage_deps.py``, checked by
``tests/test_layers.py``). Imports inside functions count as much as module-level ones.

The registry imports a backbone's *port* by name only when that backbone is asked for, so
the closure of a stage leaves the ports out; :func:`port_files` is what one port adds, and
``dvc.yaml`` declares it per run through the links in ``ports/<backbone>-<init>/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from ferstudy.core.files import file_sha256
from ferstudy.models.specs import get_spec

#: The folder that holds the ``ferstudy`` package.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def module_file(name: str) -> Path | None:
    """The source file of a dotted ``ferstudy`` module (a package's ``__init__.py``)."""
    base = SOURCE_ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def direct_imports(name: str) -> set[str]:
    """The ``ferstudy`` modules one module imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(module_file(name).read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ferstudy"):
            for alias in node.names:  # `from ferstudy.x import y`: y may be a module
                sub = f"{node.module}.{alias.name}"
                found.add(sub if module_file(sub) else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ferstudy"))
    return found


def import_closure(name: str) -> list[Path]:
    """The source files of ``name`` and of every ``ferstudy`` module it imports, directly or
    not, with the data a module reads beside itself (``<module>.yaml``), sorted."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(direct_imports(current) - seen)
    files = [module_file(m) for m in seen]
    data = [f.with_suffix(".yaml") for f in files if f.with_suffix(".yaml").is_file()]
    return sorted(files + data)


#: The module that imports the ports by name; what it imports itself every port shares.
REGISTRY_MODULE = "ferstudy.models.registry"


def port_files(backbone: str) -> list[Path]:
    """The source files ``backbone``'s port brings beyond the registry's own closure."""
    shared = set(import_closure(REGISTRY_MODULE))
    return [f for f in import_closure(get_spec(backbone).port_module) if f not in shared]


def code_digest(name: str, backbone: str | None = None) -> dict[str, str]:
    """SHA-256 of every source file in ``name``'s import closure, and of ``backbone``'s port
    files when one is given, by path in the package."""
    files = sorted(set(import_closure(name)) | set(port_files(backbone) if backbone else ()))
    return {str(file.relative_to(SOURCE_ROOT)): file_sha256(file) for file in files}
