"""Stage ``pretrained_features``: a pretrained backbone's features, extracted once for every seed.

Pretrained weights do not depend on the seed, and every seed sees the same images (a
``fraction`` subset is drawn with ``data.random_state``), so the features of a pretrained run
are extracted once (:func:`ferstudy.data.extraction.extract`) into
``data/features/<run>/pretrained/``; each seed's ``features`` stage declares that folder as a
dep and links it. For a random run the folder holds only a note: its features depend on
the seed and the ``features`` stage extracts them per seed.
"""

from __future__ import annotations

from typing import Any

from ferstudy.core import paths
from ferstudy.core.files import atomic_path, write_json
from ferstudy.core.params import Params
from ferstudy.data.extraction import PRETRAINED, extract
from ferstudy.data.feature_cache import META


def run(params: Params, run: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """The ``pretrained_features`` stage for one run (``<backbone>-<init>``); no seed."""
    backbone, init = paths.parse_run_name(run)
    if init == "pretrained":
        return extract(params, run, params.data.random_state, PRETRAINED)
    note = {
        "backbone": backbone,
        "init": init,
        "features": "per seed: data/features/<run>/seed<seed> (stage features)",
    }
    with atomic_path(paths.features_dir(f"{run}/{PRETRAINED}"), directory=True) as tmp:
        write_json(tmp / META, note)
    return note


def describe(result: dict[str, Any]) -> str:
    run = f"{result['backbone']}-{result['init']}"
    if result["init"] != "pretrained":
        return f"pretrained_features {run}: none (a random backbone's features are per seed)"
    speed = ", ".join(f"{k} {v} img/s" for k, v in result["images_per_second"].items())
    return (
        f"pretrained_features {run}: {result['feature_size']} values per image "
        f"({result['precision']}), {result['counts']} images, {speed}; {result['seconds']} s"
    )
