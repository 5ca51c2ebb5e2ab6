"""Rewrite the code deps (``src/ferstudy/...``) of every stage in dvc.yaml from the import
closure of the module the stage runs (``tests/test_layers.py`` checks them).

Cheap stages (metrics, aggregate, report) depend on the whole analysis and reporting
folders; the others on exactly the files they import. Run from the repository root:

    python scripts/stage_deps.py
"""

from __future__ import annotations

import re
from pathlib import Path

from ferstudy.core.code import SOURCE_ROOT, import_closure

CHEAP = {"metrics", "aggregate", "report"}
FOLDERS = ("src/ferstudy/analysis", "src/ferstudy/reporting")


def code_deps(command: str) -> list[str]:
    root = SOURCE_ROOT.parent
    files = [str(f.relative_to(root)) for f in import_closure(f"ferstudy.stages.{command}")]
    if command in CHEAP:
        files = [next((d for d in FOLDERS if f.startswith(d + "/")), f) for f in files]
    return sorted(set(files))


def main() -> None:
    path = Path("dvc.yaml")
    blocks = re.split(r"(?m)^(?=  [a-z_]+:\n)", path.read_text())
    for i, block in enumerate(blocks):
        command = re.search(r"cmd: ferstudy (\S+)", block)
        if not command:
            continue
        block = re.sub(r"(?m)^      - src/ferstudy/\S+\n", "", block)
        deps = re.search(r"(?m)^    deps:\n(?:      - [^\n]*\n)*", block)
        listed = "".join(f"      - {f}\n" for f in code_deps(command.group(1)))
        blocks[i] = block[: deps.end()] + listed + block[deps.end() :]
    path.write_text("".join(blocks))


if __name__ == "__main__":
    main()
