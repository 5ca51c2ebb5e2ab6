"""TensorFlow's native start-up lines are dropped from stderr; everything else passes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ferstudy.core.native_logs import _pump, keep, split_lines

NATIVE = [
    b"E0000 00:00:1795920508.552752    1577 cuda_platform.cc:52] failed call to cuInit: X",
    b"I1129 03:02:03.123456   42 port.cc:153] oneDNN custom operations are on.",
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
    b"with the appropriate compiler flags.",
]
OTHER = [
    b"error: params.yaml: lr: expected a number > 0",
    b"Epoch 1/20",
    b"E is for emotion",
    b"[ferstudy train] done in 3.0 s",
    b"W: a warning of our own",
]


@pytest.mark.parametrize("line", NATIVE)
def test_native_lines_are_dropped(line):
    assert not keep(line)


@pytest.mark.parametrize("line", OTHER)
def test_other_lines_are_kept(line):
    assert keep(line)


def test_progress_bars_split_at_carriage_returns():
    lines, rest = split_lines(b"a 10%\rb 20%\rdone\nhalf")
    assert lines == [b"a 10%\r", b"b 20%\r", b"done\n"] and rest == b"half"


SCRIPT = """
import os, sys
from ferstudy.core.native_logs import filter_native_logs
filter_native_logs()
os.write(2, b"I1129 03:02:03.123456   42 port.cc:153] oneDNN custom operations are on.\\n")
print("kept line", file=sys.stderr)
os.write(2, b"progress 50%\\r")
import tensorflow as tf
tf.config.list_physical_devices("GPU")  # cuInit errors on a machine without a GPU
print("last line", file=sys.stderr)
"""


@pytest.mark.parametrize("verbose", ["", "1"])
def test_a_process_that_starts_tensorflow(verbose):
    env = {**os.environ, "FERSTUDY_VERBOSE": verbose, "TF_CPP_MIN_LOG_LEVEL": "0"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, timeout=300)
    err = proc.stderr
    assert proc.returncode == 0, err
    assert b"kept line\n" in err and b"progress 50%\r" in err
    assert err.rstrip().endswith(b"last line")  # flushed before the process ends
    assert (b"oneDNN custom operations" in err) == bool(verbose)
    if not verbose:
        assert all(keep(line) for line in err.splitlines())


CHILD_SCRIPT = """
import subprocess, sys, time
from ferstudy.core.native_logs import filter_native_logs
restore = filter_native_logs()
child = subprocess.Popen(["sleep", "30"], stdout=subprocess.DEVNULL)  # holds descriptor 2
print("before restore", file=sys.stderr)
start = time.monotonic()
restore()
print(round(time.monotonic() - start, 2))
print("after restore", file=sys.stderr)
child.kill()
"""


def test_restore_does_not_wait_for_child_processes_holding_the_pipe():
    """A worker process that inherited the pipe keeps its write end open: the restore
    forwards what is there and returns, rather than waiting for an end that never comes."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD_SCRIPT],
        env={**os.environ, "FERSTUDY_VERBOSE": ""},
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) < 1.0
    assert proc.stderr == b"before restore\nafter restore\n"


def test_a_stopped_reader_forwards_what_the_pipe_holds_and_closes_its_descriptors():
    """Lines still in the pipe at the stop are forwarded, filtered, though a write end stays
    open; the reader closes the pipe's read end, its target and the stop pipe's read end."""
    source, held_open = os.pipe()
    target_read, target = os.pipe()
    stop, stop_write = os.pipe()
    os.write(held_open, b"kept\n" + NATIVE[0] + b"\nlast")
    os.write(stop_write, b"x")
    _pump(source, target, stop)
    assert os.read(target_read, 1024) == b"kept\nlast"
    for fd in (source, target, stop):
        with pytest.raises(OSError):
            os.fstat(fd)
    for fd in (held_open, target_read, stop_write):
        os.close(fd)


def test_restore_after_the_reader_saw_the_pipes_end():
    """Restoring closes the pipe's last write end, and the reader may see the end and close
    its descriptors before the stop byte is written: that is no error (a tiny switch interval
    lets the reader run first on most of the cycles)."""
    script = (
        "import sys\n"
        "sys.setswitchinterval(1e-6)\n"
        "from ferstudy.core.native_logs import filter_native_logs\n"
        "for _ in range(300):\n"
        "    filter_native_logs()()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "FERSTUDY_VERBOSE": ""},
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
