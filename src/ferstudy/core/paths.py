"""Where every stage reads and writes, and how runs are named: the paths all stages agree on.

A run is ``<backbone>-<init>`` (``<backbone>-<init>-finetune`` when fine-tuned); a run id is
one run under one seed, ``<run>/seed<seed>``, the folder of its outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ferstudy.core.errors import FerError
from ferstudy.models.specs import INITS

DATASET_FILE = Path("data/fer2013.npz")
DATASET_SUMMARY = Path("data/fer2013_summary.json")
SPLIT_FILE = Path("data/split.npz")
SPLIT_SUMMARY = Path("data/split_summary.json")
FEATURES_DIR = Path("data/features")
PARTIAL_FEATURES_DIR = Path(".ferstudy/partial/features")
MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
REPORTS_DIR = Path("reports")
PAPER_TABLES = Path("reference/paper_tables.csv")
FIDELITY_FILE = METRICS_DIR / "fidelity.json"
COMPARISONS_FILE = METRICS_DIR / "comparisons.json"
RANKING_FILE = METRICS_DIR / "ranking.json"
#: The shipped model's choice and scores (stage export).
EXPORT_FILE = METRICS_DIR / "export.json"
#: One file per run with its headline numbers: the pipeline's declared metrics.
HEADLINE_DIR = METRICS_DIR / "headline"
#: Mean and best test accuracy across runs: the columns of ``dvc exp show``.
SUMMARY_FILE = METRICS_DIR / "summary.json"
#: Per-epoch curves of each run (mean over seeds), for ``dvc plots``.
CURVES_DIR = PLOTS_DIR / "curves"
#: The aggregate stage's tables.
TABLES_FILE = METRICS_DIR / "aggregate.md"
#: The ``outside`` stage's outputs: the scores, and fer's per-image probabilities.
OUTSIDE_FILE = METRICS_DIR / "outside" / "fer.json"
OUTSIDE_PROBABILITIES = METRICS_DIR / "outside" / "fer" / "test_probabilities.npz"
#: Per-image test probabilities of one run id, in its ``eval_dir``.
TEST_PROBABILITIES = "test_probabilities.npz"
#: A report figure of FER2013 images (DVC cache only, never git).
EXAMPLES = "examples.png"
#: A fine-tuned run is named after its backbone and init with this suffix.
FINETUNE_SUFFIX = "-finetune"


def run_name(backbone: str, init: str) -> str:
    """Name of one backbone x initialisation run, as used in stage and folder names."""
    return f"{backbone}-{init}"


def parse_run_name(name: str) -> tuple[str, str]:
    """Inverse of :func:`run_name` (and of :func:`finetune_run` on it)."""
    backbone, sep, init = name.removesuffix(FINETUNE_SUFFIX).rpartition("-")
    if not sep or init not in INITS:
        raise FerError(f"'{name}' is not a run name of the form <backbone>-<init>[-finetune]")
    return backbone, init


def finetune_run(run: str) -> str:
    """Name of the fine-tuned counterpart of a run: ``<backbone>-<init>-finetune``."""
    return run + FINETUNE_SUFFIX


def is_finetune(run: str) -> bool:
    return run.endswith(FINETUNE_SUFFIX)


def run_id(run: str, seed: int) -> str:
    """One run under one seed, ``<backbone>-<init>/seed<seed>``: the folder of its outputs."""
    return f"{run}/seed{int(seed)}"


def parse_run_id(name: str) -> tuple[str, int]:
    """Inverse of :func:`run_id`."""
    run, sep, seed = name.partition("/seed")
    if not sep or not seed.isdigit():
        raise FerError(f"'{name}' is not a run id of the form <backbone>-<init>/seed<seed>")
    parse_run_name(run)
    return run, int(seed)


def features_dir(run_id: str) -> Path:
    return FEATURES_DIR / run_id


def partial_features_dir(run_id: str) -> Path:
    """Where the features of a run are computed before they are whole (resumable)."""
    return PARTIAL_FEATURES_DIR / run_id


def model_dir(run_id: str) -> Path:
    return MODELS_DIR / run_id


def live_dir(run_id: str) -> Path:
    """Folder of the run's dvclive per-epoch log."""
    return METRICS_DIR / "train" / run_id


def _metrics_json(folder: str) -> Callable[[str], Path]:
    """``name -> metrics/<folder>/<name>.json``."""
    return lambda name: METRICS_DIR / folder / f"{name}.json"


# Per run id (``<run>/seed<seed>``): test scores (``metrics/eval/<run>/seed<seed>.json``),
# inference speed, the study's rates, feature health (the features stage) and the scores of
# the classical heads; per run name: its metrics aggregated across its seeds.
eval_file, speed_file, study_file, health_file, heads_file, aggregate_file = (
    _metrics_json(folder) for folder in ("eval", "speed", "study", "features", "heads", "aggregate")
)


def eval_dir(run_id: str) -> Path:
    """Per-image test outputs of one run id (predictions, probabilities)."""
    return METRICS_DIR / "eval" / run_id


def training_time_file(run_id: str) -> Path:
    """How long a fine-tuned run trained: a timing, kept out of the model folder."""
    return METRICS_DIR / "speed" / f"{run_id}.train.json"


def predictions_file(run_id: str, kind: str) -> Path:
    """Test predictions of one head kind of one run id."""
    return METRICS_DIR / "heads" / run_id / f"{kind}_test_predictions.npz"
