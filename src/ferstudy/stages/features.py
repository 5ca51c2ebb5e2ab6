"""Stage ``features``: the frozen part's output for every image of one run under one seed.

A *random* backbone's weights come from the seed, so its features are extracted here, per
seed (:func:`ferstudy.data.extraction.extract`), into ``data/features/<run>/seed<seed>/``. A
*pretrained* backbone's features do not depend on the seed: stage ``pretrained_features``
extracts them once into ``data/features/<run>/pretrained/``, which this stage declares as a
dep and links into the seed's folder (DVC's content-addressed cache stores them once).
Either way the seed's folder is whole, and its health goes to
``metrics/features/<run>/seed<seed>.json``.
"""

from __future__ import annotations

import time
from typing import Any

from ferstudy.core import paths
from ferstudy.core.errors import FerError
from ferstudy.core.files import atomic_path, read_json, write_json
from ferstudy.core.params import Params
from ferstudy.core.paths import health_file
from ferstudy.data.extraction import PRETRAINED, extract, link_or_copy
from ferstudy.data.feature_cache import HEALTH, META


def run(params: Params, run: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """The ``features`` stage for one run (``<backbone>-<init>``) under one seed."""
    _, init = paths.parse_run_name(run)
    run_id = paths.run_id(run, seed)
    if init == "random":
        result = extract(params, run, seed, f"seed{seed}")
    else:
        result = link_pretrained(run, run_id)
    write_json(health_file(run_id), result["health"])
    return result


def link_pretrained(run: str, run_id: str) -> dict[str, Any]:
    """Link the run's pretrained features (stage ``pretrained_features``) as ``run_id``'s."""
    start = time.perf_counter()
    shared = paths.features_dir(f"{run}/{PRETRAINED}")
    if not (shared / META).is_file() or read_json(shared / META).get("init") != "pretrained":
        raise FerError(
            f"{shared}: no pretrained features (run: dvc repro pretrained_features@{run})"
        )
    with atomic_path(paths.features_dir(run_id), directory=True) as tmp:
        for path in sorted(shared.iterdir()):
            link_or_copy(path, tmp / path.name)
    meta = read_json(shared / META)
    print(f"features {run_id}: linked {shared} (pretrained: the same for every seed)")
    return {
        **meta,
        "health": read_json(shared / HEALTH),
        "seconds": round(time.perf_counter() - start, 1),
        "images_per_second": {},
        "reused": str(shared),
    }


def describe(result: dict[str, Any]) -> str:
    run_id = f"{result['backbone']}-{result['init']}"
    speed = ", ".join(f"{k} {v} img/s" for k, v in result["images_per_second"].items())
    health = result["health"]
    state = (
        f"DEGENERATE: {health['reason']}"
        if health["degenerate"]
        else f"healthy: across-image std {health['across_image_std']:.3g} "
        f"({100 * health['relative_std']:.0f} % of RMS {health['rms']:.3g})"
    )
    return (
        f"features {run_id}: {result['feature_size']} values per image "
        f"({result['precision']}), {result['counts']} images, {speed or 'reused'}; "
        f"{result['seconds']} s; {state}"
    )
