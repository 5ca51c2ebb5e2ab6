"""TensorFlow runtime settings shared by the stages: precision, devices, threads, determinism."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import tensorflow as tf

import ferstudy  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from ferstudy.core.errors import FerError

PRECISIONS = ("fp32", "bf16", "auto")


def has_fast_bf16() -> bool:
    """True on CPUs with AMX-BF16 or AVX512-BF16 and on GPUs of compute capability >= 8.0."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return tuple(details.get("compute_capability", (0, 0))) >= (8, 0)
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str) -> str:
    """``fp32`` | ``bf16`` | ``auto`` (bf16 where the hardware computes it fast) -> fp32|bf16."""
    if precision not in PRECISIONS:
        raise FerError(f"precision must be one of {', '.join(PRECISIONS)} (got '{precision}')")
    if precision == "auto":
        return "bf16" if has_fast_bf16() else "fp32"
    return precision


def set_precision(precision: str, *, bf16_supported: bool = True, bf16_auto: bool = True) -> str:
    """Set Keras' global dtype policy for models built from now on; return fp32|bf16.

    A model with ops that have no bfloat16 kernel (``bf16_supported=False``) stays fp32;
    ``auto`` also stays fp32 for a model where bf16 gains nothing (``bf16_auto=False``).
    """
    if precision == "auto" and not bf16_auto:
        precision = "fp32"
    resolved = resolve_precision(precision) if bf16_supported else "fp32"
    tf.keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if resolved == "bf16" else "float32"
    )
    return resolved


def configure(seed: int, *, deterministic: bool = True) -> None:
    """Seed every source of randomness, make ops deterministic, let GPUs grow their memory.

    ``FERSTUDY_THREADS`` caps TensorFlow's thread pools (set it when several DVC queue
    workers share one machine, e.g. cores / workers).
    """
    for gpu in tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(RuntimeError):  # already initialised
            tf.config.experimental.set_memory_growth(gpu, True)
    threads = int(os.environ.get("FERSTUDY_THREADS", "0"))
    if threads:
        with contextlib.suppress(RuntimeError):
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, threads // 2))
    tf.keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def device_name() -> str:
    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU ({len(gpus)})" if gpus else "CPU"


def checkpoint_seconds() -> float:
    """``FERSTUDY_CHECKPOINT_SECONDS`` (default 300): the seconds between two checkpoints of
    a long stage (training epochs, feature extraction), a number >= 0."""
    value = os.environ.get("FERSTUDY_CHECKPOINT_SECONDS", "300")
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise FerError(
            f"FERSTUDY_CHECKPOINT_SECONDS: expected a number of seconds >= 0 (got {value!r})"
        )
    return seconds
