"""Reading ``params.yaml`` and the paths every stage agrees on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ferstudy.errors import FerError

PARAMS_FILE = "params.yaml"

DATASET_FILE = Path("data/fer2013.npz")
DATASET_SUMMARY = Path("data/fer2013_summary.json")
SPLIT_FILE = Path("data/split.npz")
SPLIT_SUMMARY = Path("data/split_summary.json")
FEATURES_DIR = Path("data/features")
MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")

INITS: tuple[str, ...] = ("pretrained", "random")


def load_params(path: str | os.PathLike = PARAMS_FILE) -> dict[str, Any]:
    """Load the parameter file as a dict (one-line error when missing or malformed)."""
    try:
        params = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise FerError(f"{path}: parameter file not found") from None
    except yaml.YAMLError as err:
        raise FerError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(params, dict):
        raise FerError(f"{path}: expected a mapping of parameters")
    return params


def require(params: dict[str, Any], dotted: str) -> Any:
    """Return ``params[a][b]...`` for ``"a.b"``, with a one-line error when a key is missing."""
    value: Any = params
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise FerError(f"{PARAMS_FILE}: missing parameter '{dotted}'")
        value = value[key]
    return value


def run_name(backbone: str, init: str) -> str:
    """Name of one backbone x initialisation run, as used in stage and folder names."""
    return f"{backbone}-{init}"


def parse_run_name(name: str) -> tuple[str, str]:
    """Inverse of :func:`run_name`."""
    backbone, sep, init = name.rpartition("-")
    if not sep or init not in INITS:
        raise FerError(f"'{name}' is not a run name of the form <backbone>-<init>")
    return backbone, init


def runs(params: dict[str, Any]) -> list[str]:
    """The runs of the pipeline: every backbone x init listed in params, in that order."""
    backbones, inits = require(params, "backbones"), require(params, "inits")
    bad = [i for i in inits if i not in INITS]
    if bad:
        raise FerError(f"{PARAMS_FILE}: unknown init {bad} (pretrained or random)")
    return [run_name(b, i) for b in backbones for i in inits]


def features_dir(run: str) -> Path:
    return FEATURES_DIR / run


def model_dir(run: str) -> Path:
    return MODELS_DIR / run


def live_dir(run: str) -> Path:
    """Folder of the run's dvclive per-epoch log."""
    return METRICS_DIR / "train" / run
