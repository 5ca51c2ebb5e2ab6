"""Feature health: does a run's frozen part say anything about the image?

A frozen backbone whose output barely changes from one image to the next gives its tail
nothing to learn from, and the run then measures nothing. The features stage computes, on
the cached training features:

- ``rms``: root mean square of all values;
- ``across_image_std``: per-dimension standard deviation across images, averaged over
  dimensions (how much the features move with the image);
- ``relative_std``: ``across_image_std / rms``;
- ``constant_fraction``: share of dimensions whose values are identical on every image;
- ``top1_variance``, ``top10_variance``: share of the across-image variance held by the first
  1 and 10 principal components (1.0 for a single direction of change).

A run is **degenerate** when its features move with the image by less than ``MIN_STD``
(1e-3) in absolute terms (the tail's layers are initialised for inputs of unit scale; a
signal a thousand times smaller moves their outputs, and their gradients, by as little), or
by less than ``MIN_RELATIVE_STD`` of their own size (1 %, 1.3 to 2.6 units in the last place
of bfloat16, the cache's storage precision: below that, what varies between images is the
size of rounding). The reason given names the likeliest cause.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Across-image standard deviation below which features carry no usable signal.
MIN_STD = 1e-3
#: The same, relative to the features' RMS.
MIN_RELATIVE_STD = 0.01


def feature_health(features: np.ndarray) -> dict[str, float]:
    """Health numbers of a (images, dimensions) feature matrix (see module doc)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError("feature_health needs a 2-D array of at least 2 images")
    rms = float(np.sqrt(np.mean(x**2)))
    std = x.std(axis=0)
    across = float(std.mean())
    centered = x - x.mean(axis=0)
    # Principal-component variances are the eigenvalues of the (images x images) Gram matrix.
    variance = np.sort(np.clip(np.linalg.eigvalsh(centered @ centered.T), 0, None))[::-1]
    total = float(variance.sum())
    share = variance / total if total > 0 else np.zeros_like(variance)
    return {
        "rms": rms,
        "across_image_std": across,
        "relative_std": across / rms if rms > 0 else 0.0,
        "constant_fraction": float(np.mean(std == 0)),
        "top1_variance": float(share[:1].sum()),
        "top10_variance": float(share[:10].sum()),
        "images": int(len(x)),
        "dimensions": int(x.shape[1]),
    }


def degenerate_reason(
    health: dict[str, float], *, init: str, frozen_bn: str, frozen_batchnorm_layers: int
) -> str | None:
    """Why a run's features are degenerate, or None when they are healthy."""
    std, relative = health["across_image_std"], health["relative_std"]
    if std >= MIN_STD and relative >= MIN_RELATIVE_STD:
        return None
    if health["constant_fraction"] == 1.0:
        what = "every feature is the same on every image"
    elif std < MIN_STD:
        what = (
            f"features vary across images by {std:.2g} on average (RMS {health['rms']:.2g}; "
            f"below {MIN_STD:g})"
        )
    else:
        what = (
            f"features vary across images by {100 * relative:.2g} % of their size "
            f"(below {100 * MIN_RELATIVE_STD:g} %)"
        )
    if init == "random" and frozen_bn == "inference" and frozen_batchnorm_layers:
        cause = (
            f"the frozen part's {frozen_batchnorm_layers} BatchNormalization layers run in "
            "inference mode with their random-init statistics (mean 0, variance 1), so they "
            "renormalise nothing and the signal shrinks layer by layer; frozen_bn: "
            "recalibrated re-estimates them on training images"
        )
    else:
        cause = (
            "the frozen part maps every image to (almost) the same output (randomly "
            "initialised layers without normalisation shrink the signal layer by layer)"
            if init == "random" and not frozen_batchnorm_layers
            else "the frozen part maps every image to (almost) the same output"
        )
    return f"{what}: {cause}"


def health_summary(
    features: np.ndarray,
    *,
    init: str,
    frozen_bn: str,
    frozen_batchnorm_layers: int,
    calibration: dict[str, Any] | None,
) -> dict[str, Any]:
    """The features stage's metrics file: health numbers, the flag and its reason."""
    health = {
        k: round(v, 8) if isinstance(v, float) else v for k, v in feature_health(features).items()
    }
    reason = degenerate_reason(
        health, init=init, frozen_bn=frozen_bn, frozen_batchnorm_layers=frozen_batchnorm_layers
    )
    return {
        **health,
        "degenerate": reason is not None,
        "reason": reason or "",
        "frozen_batchnorm_layers": frozen_batchnorm_layers,
        "batchnorm_recalibrated_on": calibration["images"] if calibration else 0,
    }
