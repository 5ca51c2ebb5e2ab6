"""TensorFlow's native start-up lines kept out of every stage's log.

TensorFlow's C++ code logs through absl before ``absl::InitializeLog`` is called, straight to
file descriptor 2, so ``TF_CPP_MIN_LOG_LEVEL`` does not silence all of it (oneDNN notices,
CUDA stubs, ``cuInit`` errors on a machine without a GPU). :func:`filter_native_logs` routes
descriptor 2 through a pipe whose reader drops lines in absl's format
(``E1129 03:02:03.123456  1577 file.cc:52] ...``) and forwards everything else as it comes,
progress bars included. ``FERSTUDY_VERBOSE=1`` keeps every line.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import select
import sys
import threading
from collections.abc import Callable

#: A whole native log line, the notice absl prints before its first one, or the second line
#: of TensorFlow's CPU-feature notice.
NATIVE_LINE = re.compile(
    rb"^(?:[EWIF]\d{4} [\d:.]+\s+\d+ [^\s\]]+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate)"
)
#: The longest start of a line that could still turn out to be a native line.
_PREFIX = re.compile(
    rb"^(?:[EWIF]\d{0,4}(?: [\d:.]*(?:\s+\d*(?: \S*)?)?)?|WARNING: All.*|To enable the .*)$"
)
_BREAK = re.compile(rb"(\r\n|\n|\r)")


def keep(line: bytes) -> bool:
    """Whether a complete line (without its end) is forwarded."""
    return NATIVE_LINE.match(line) is None


def split_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines (with their ends, ``\\r`` counted as one for progress bars) and the
    unfinished rest of ``buffer``."""
    parts = _BREAK.split(buffer)
    lines = [parts[i] + parts[i + 1] for i in range(0, len(parts) - 1, 2)]
    return lines, parts[-1]


def _pump(source: int, target: int, stop: int) -> None:
    """Forward what ``source`` brings, filtered, until its end or until ``stop`` is readable;
    then forward what is left in the pipe without waiting for more, and close all three."""
    try:
        _forward(source, target, stop)
    finally:
        for fd in (source, target, stop):
            os.close(fd)


def _forward(source: int, target: int, stop: int) -> None:
    pending = b""
    while True:
        ready, _, _ = select.select([source, stop], [], [])
        if source not in ready:  # stopped: a child process may still hold a write end
            os.set_blocking(source, False)
        try:
            chunk = os.read(source, 65536)
        except BlockingIOError:
            chunk = b""
        if not chunk:
            break
        lines, pending = split_lines(pending + chunk)
        out = b"".join(line for line in lines if keep(_BREAK.split(line)[0]))
        if pending and not (_PREFIX.match(pending) or NATIVE_LINE.match(pending)):
            # cannot become a native line: forward it now (a progress bar mid-line)
            out, pending = out + pending, b""
        if out:
            os.write(target, out)
    if pending and keep(pending):
        os.write(target, pending)


def filter_native_logs() -> Callable[[], None]:
    """Filter descriptor 2 from now until the returned function (also run at exit) restores
    it; a no-op under ``FERSTUDY_VERBOSE=1``. Child processes that inherited the pipe (worker
    processes) write to it until the restore; later writes of theirs fail (a broken pipe)."""
    if os.environ.get("FERSTUDY_VERBOSE", "") not in ("", "0"):
        return lambda: None
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    stop_read, stop_write = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    reader = threading.Thread(target=_pump, args=(read_end, original, stop_read), daemon=True)
    reader.start()
    done = False
    owner = os.getpid()

    def restore() -> None:
        nonlocal done
        if done or os.getpid() != owner:  # a forked child exiting leaves its parent's alone
            return
        done = True
        sys.stderr.flush()
        os.dup2(original, 2)  # this process's write end closed: it has written all it will
        # the reader drains the pipe and closes its descriptors; a broken pipe: it saw the
        # pipe's end (no child held a write end) and has done so already
        with contextlib.suppress(BrokenPipeError):
            os.write(stop_write, b"x")
        os.close(stop_write)
        reader.join(timeout=5)

    atexit.register(restore)
    return restore
