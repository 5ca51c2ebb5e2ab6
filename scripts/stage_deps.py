"""Rewrite the code deps (``src/ferstudy/...``) of every stage in dvc.yaml from the import
closure of the module the stage runs, and the port links in ``ports/`` (``tests/test_layers.py``
checks both).

Cheap stages (metrics, aggregate, report) depend on the whole analysis and reporting
folders; the others on exactly the files they import. The registry imports a backbone's
port only when asked for it, so a stage that builds backbones also depends on
``ports/${item.run}``: one folder per ``<backbone>-<init>`` holding links to the files that
backbone's port adds (:func:`ferstudy.core.code.port_files`), so that a change to one port
puts only that backbone's stages out of date. Run from the repository root:

    python scripts/stage_deps.py
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from ferstudy.core.code import REGISTRY_MODULE, SOURCE_ROOT, import_closure, module_file, port_files
from ferstudy.core.paths import run_name
from ferstudy.models.specs import SPECS

CHEAP = {"metrics", "aggregate", "report"}
FOLDERS = ("src/ferstudy/analysis", "src/ferstudy/reporting")
PORTS = Path("ports")
PORT_DEP = "ports/${item.run}"


def code_deps(command: str) -> list[str]:
    root = SOURCE_ROOT.parent
    closure = import_closure(f"ferstudy.stages.{command}")
    files = [str(f.relative_to(root)) for f in closure]
    if command in CHEAP:
        files = [next((d for d in FOLDERS if f.startswith(d + "/")), f) for f in files]
    ports = [PORT_DEP] if module_file(REGISTRY_MODULE) in closure else []
    return sorted(set(files)) + ports


def write_port_links() -> None:
    """``ports/<backbone>-<init>/<path in the package>``: a relative link to each file the
    backbone's port adds, for every initialisation the backbone has."""
    shutil.rmtree(PORTS, ignore_errors=True)
    for spec in SPECS.values():
        for init in spec.inits:
            folder = PORTS / run_name(spec.name, init)
            for file in port_files(spec.name):
                link = folder / file.relative_to(SOURCE_ROOT / "ferstudy")
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(os.path.relpath(file.relative_to(Path.cwd()), link.parent))


def main() -> None:
    path = Path("dvc.yaml")
    blocks = re.split(r"(?m)^(?=  [a-z_]+:\n)", path.read_text())
    for i, block in enumerate(blocks):
        command = re.search(r"cmd: ferstudy (\S+)", block)
        if not command:
            continue
        block = re.sub(r"(?m)^      - (src/ferstudy/\S+|ports/\S+)\n", "", block)
        deps = re.search(r"(?m)^    deps:\n(?:      - [^\n]*\n)*", block)
        listed = "".join(f"      - {f}\n" for f in code_deps(command.group(1)))
        blocks[i] = block[: deps.end()] + listed + block[deps.end() :]
    path.write_text("".join(blocks))
    write_port_links()


if __name__ == "__main__":
    main()
