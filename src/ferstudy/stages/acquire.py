"""Stage ``acquire``: read FER2013 from the source params name (or ``$FER2013_PATH``) into
``data/fer2013.npz``, with a summary of what was read."""

from __future__ import annotations

import time
from typing import Any

from ferstudy.core import paths
from ferstudy.core.files import save_dataset, write_json
from ferstudy.core.params import Params
from ferstudy.data.acquire import Limits, acquire, resolve_source, summarize


def run(params: Params, run: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """Read the source and write the dataset and its summary."""
    data = params.data
    start = time.perf_counter()
    acquired = acquire(
        resolve_source(data.source),
        kaggle_dataset=data.kaggle_dataset,
        sha256=data.sha256,
        download_dir=paths.DATASET_FILE.parent / "downloads",
        limits=Limits(data.max_unpacked_bytes, data.max_image_pixels),
    )
    summary = summarize(acquired)
    save_dataset(paths.DATASET_FILE, acquired.dataset)
    write_json(paths.DATASET_SUMMARY, summary)
    return {**summary, "seconds": round(time.perf_counter() - start, 1)}


def describe(result: dict[str, Any]) -> str:
    counts = ", ".join(f"{c} {n}" for c, n in result["per_class"].items())
    return (
        f"acquired {result['total']} images from {result['source']['kind']} ({counts}); "
        f"{result['converted_to_48x48_gray']} converted, "
        f"{result['exact_duplicate_images']} exact duplicates kept"
    )
