"""The code a stage runs: the import closure of its module, read from the source.

The closure decides what must not drift from the code: the ``features`` stage's recipe hash (a
pretrained seed reuses a sibling's features only when the same code computed them), the
fingerprint of a training checkpoint (a checkpoint resumes only under the same code) and the
code deps of every stage in ``dvc.yaml`` (checked by ``tests/test_layers.py``).
Imports inside functions count as much as module-level ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

from ferstudy.core.files import file_sha256

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


def code_digest(name: str) -> dict[str, str]:
    """SHA-256 of every source file in ``name``'s import closure, by path in the package."""
    return {str(file.relative_to(SOURCE_ROOT)): file_sha256(file) for file in import_closure(name)}
