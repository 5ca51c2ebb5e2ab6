"""Stage ``flipped``: cached features of the horizontally flipped training images.

A horizontal flip is the one augmentation under which caching stays exact: a flipped face is
still a face of the same emotion, and its features are one more fixed row per image, so a
classifier on cached features can train on twice the images without recomputing anything.
For a run's cached features (``data/features/<run>/seed<seed>``, the ``features`` stage),
this rebuilds the frozen part exactly as cached (the saved backbone weights, the run's
precision and cut) and writes ``data/features_flipped/<run>/seed<seed>/train.npy``: row ``i``
holds the features of training image ``i`` mirrored left to right, in the stored dtype of the
originals. The ``heads`` stage adds them to its training set under ``heads.flip: true``.
"""

from __future__ import annotations

import time
from typing import Any

from ferstudy.core import paths, runtime
from ferstudy.core.errors import FerError
from ferstudy.core.files import atomic_path, load_dataset, write_json
from ferstudy.core.params import Params
from ferstudy.data.feature_cache import (
    FLIPPED_TRAIN,
    META,
    CachedFeatures,
    extract_to_file,
    extractor,
    flipped_dir,
    mirror,
    rebuild_classifier,
)
from ferstudy.models.registry import get_backbone
from ferstudy.models.transfer import image_transform


def run(params: Params, run: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """The ``flipped`` stage for one run under one seed."""
    run_id = paths.run_id(run, seed)
    cache = CachedFeatures(paths.features_dir(run_id))
    meta = cache.meta
    entry = get_backbone(meta["backbone"])
    runtime.configure(seed, deterministic=False)  # inference only, as the features stage
    precision = runtime.set_precision(
        meta["precision"], bf16_supported=entry.bf16, bf16_auto=entry.bf16_auto
    )
    if precision != meta["precision"]:
        raise FerError(
            f"{cache.folder}: cached at {meta['precision']}, this machine runs {precision}"
        )
    start = time.perf_counter()
    _, cut = rebuild_classifier(cache, seed)
    extract = extractor(cut.frozen, image_transform(entry.preprocess, meta["input_size"]))
    images = mirror(load_dataset(paths.DATASET_FILE).images[cache.rows["train"]])
    out_dir = flipped_dir(run_id)
    batch_size = params.features_batch_size
    with atomic_path(out_dir, directory=True) as tmp:
        speed = extract_to_file(
            extract, images, tmp / FLIPPED_TRAIN, batch_size, f"{run_id} flipped"
        )
        write_json(
            tmp / META,
            {"run": run_id, "images": int(len(images)), "dtype": meta["dtype"], "of": meta},
        )
    runtime.set_precision("fp32")
    return {
        "run": run_id,
        "images": int(len(images)),
        "images_per_second": round(speed, 1),
        "seconds": round(time.perf_counter() - start, 1),
    }


def describe(result: dict[str, Any]) -> str:
    return (
        f"flipped {result['run']}: {result['images']} mirrored training images, "
        f"{result['images_per_second']} img/s; {result['seconds']} s"
    )
