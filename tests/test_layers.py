"""The shape of the code: stages never import stages, the analysis and reporting layers never
load TensorFlow, and every stage's code deps in dvc.yaml cover the import closure of the
module it runs (a stale "up to date" would be a wrong result)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ferstudy.cli import STAGES, stage_help
from ferstudy.core.code import (
    REGISTRY_MODULE,
    code_digest,
    direct_imports,
    import_closure,
    module_file,
    port_files,
)
from ferstudy.models.specs import SPECS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "ferstudy"


def package_modules(subpackage: str) -> list[str]:
    folder = PACKAGE / subpackage
    return sorted(f"ferstudy.{subpackage}.{p.stem}" for p in folder.glob("*.py"))


def stage_modules() -> list[str]:
    return [m for m in package_modules("stages") if not m.endswith("__init__")]


def test_stage_modules_never_import_each_other():
    for module in stage_modules():
        others = {m for m in direct_imports(module) if m.startswith("ferstudy.stages.")}
        assert others - {module} == set(), f"{module} imports {sorted(others - {module})}"


def test_every_stage_module_is_a_cli_stage_and_has_the_one_signature():
    import importlib
    from inspect import signature

    assert sorted(f"ferstudy.stages.{name}" for name in STAGES) == stage_modules()
    for name in STAGES:  # the CLI's help is the module's own first paragraph
        assert stage_help(name) and not stage_help(name).startswith("Stage "), name
    for module in stage_modules():
        mod = importlib.import_module(module)
        assert list(signature(mod.run).parameters) == ["params", "run", "seed"], module
        assert callable(mod.describe), module


def test_analysis_and_reporting_import_without_tensorflow():
    modules = package_modules("analysis") + package_modules("reporting")
    modules.append("ferstudy.tools.accounting")  # reads JSON only
    code = (
        "import sys\n"
        "for blocked in ('tensorflow', 'tf_keras', 'keras'):\n"
        "    sys.modules[blocked] = None  # any import of it raises ImportError\n"
        "import importlib\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def _dvc_stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _covered(file: Path, deps: list[str]) -> bool:
    relative = file.relative_to(ROOT)
    return any(relative == Path(d) or Path(d) in relative.parents for d in deps)


def missing_code_deps(stage: dict) -> list[str]:
    """The files in the import closure of a dvc.yaml stage's module that its deps miss."""
    command = stage["cmd"].split()[1]
    module = f"ferstudy.stages.{command}"
    deps = [d for d in stage.get("deps", []) if isinstance(d, str)]
    return [str(f.relative_to(ROOT)) for f in import_closure(module) if not _covered(f, deps)]


@pytest.mark.parametrize("name", sorted(_dvc_stages()))
def test_stage_deps_cover_the_import_closure_of_its_module(name):
    stage = _dvc_stages()[name]
    assert missing_code_deps(stage) == [], f"dvc.yaml stage {name} misses these code deps"
    for dep in stage.get("deps", []):
        if str(dep).startswith("src/"):
            assert (ROOT / dep).exists(), f"dvc.yaml stage {name}: {dep} does not exist"


def test_the_closure_follows_imports_inside_functions_and_packages():
    files = import_closure("ferstudy.stages.split")
    assert module_file("ferstudy.data.splits") in files  # a module-level import
    assert module_file("ferstudy") in files  # ferstudy/__init__.py sets the Keras variable
    assert module_file("ferstudy.stages.features") not in files
    assert module_file("ferstudy.tools.predict") in import_closure("ferstudy.cli")  # in a function
    evaluate = import_closure("ferstudy.stages.evaluate")
    assert module_file("ferstudy.models.onet") not in evaluate  # a port: imported by name
    pins = module_file("ferstudy.models.wheels").with_suffix(".yaml")
    assert pins in import_closure("ferstudy.stages.outside")  # the data a module reads beside it


def test_the_closure_check_fails_when_a_dep_is_dropped():
    stage = dict(_dvc_stages()["train"])
    stage["deps"] = [d for d in stage["deps"] if d != "src/ferstudy/models/store.py"]
    assert "src/ferstudy/models/store.py" in missing_code_deps(stage)


PORT_DEP = "ports/${item.run}"


def _linked_files(folder: Path) -> set[Path]:
    return {p.resolve() for p in folder.rglob("*") if p.is_symlink()}


def test_the_registry_imports_no_port_and_every_port_has_the_three_builders():
    import importlib

    shared = import_closure(REGISTRY_MODULE)
    for spec in SPECS.values():
        assert module_file(spec.port_module) not in shared, spec.name
        port = importlib.import_module(spec.port_module)
        for name in ("architecture", "load_pretrained", "preprocess"):
            assert callable(getattr(port, name)), f"{spec.port_module}.{name}"


def test_every_port_folder_links_exactly_its_backbones_port_files():
    """``ports/<backbone>-<init>/`` (``scripts/stage_deps.py``) for every initialisation each
    backbone has: links to the files its port adds, no more, no less, none broken."""
    expected = {f"{s.name}-{init}": s.name for s in SPECS.values() for init in s.inits}
    assert sorted(p.name for p in (ROOT / "ports").iterdir()) == sorted(expected)
    for run, backbone in expected.items():
        folder = ROOT / "ports" / run
        assert all(p.exists() for p in folder.rglob("*")), f"{folder}: a broken link"
        assert _linked_files(folder) == {f.resolve() for f in port_files(backbone)}, run


def test_every_stage_that_builds_a_backbone_declares_its_runs_port_folder():
    registry = module_file(REGISTRY_MODULE)
    for name, stage in _dvc_stages().items():
        command = stage["cmd"].split()[1]
        builds = registry in import_closure(f"ferstudy.stages.{command}")
        assert (PORT_DEP in stage.get("deps", [])) == builds, name
        if builds:
            assert "${item.run}" in stage["cmd"], name


def test_a_stages_code_digest_holds_its_own_port_and_no_other():
    digest = code_digest("ferstudy.data.extraction", "onet")
    assert "ferstudy/models/onet.py" in digest
    assert "ferstudy/models/registry.py" in digest
    assert not {"ferstudy/models/facenet.py", "ferstudy/models/dlib_face.py"} & set(digest)
    assert "ferstudy/models/dlib_net.py" in code_digest("ferstudy.data.extraction", "dlib")


def test_the_port_check_fails_when_a_link_is_missing(tmp_path):
    files = port_files("dlib")
    for file in files:
        (tmp_path / file.name).symlink_to(file)
    assert _linked_files(tmp_path) == {f.resolve() for f in files}
    (tmp_path / files[-1].name).unlink()
    assert _linked_files(tmp_path) != {f.resolve() for f in files}
