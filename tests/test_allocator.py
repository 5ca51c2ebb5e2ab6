"""The process allocator keeps freed memory: a batch loop page-faults its blocks in once, not
once a batch (``ferstudy.core.allocator``; every ``ferstudy`` command sets it first)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ferstudy.core.allocator import keep_freed_memory

#: Allocate, fill and free a 64 MB block (a batch's activations) 10 times; print the minor
#: page faults.
LOOP = """
import ctypes, json, resource
from ferstudy.core.allocator import keep_freed_memory
kept = keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    block = libc.malloc(64 * 1024 * 1024)
    ctypes.memset(block, 1, 64 * 1024 * 1024)
    libc.free(block)
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"kept": kept, "faults": after - before}))
"""

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="the setting is glibc's",
)


def faults(allocator: str) -> dict:
    env = {**os.environ, "FERSTUDY_ALLOCATOR": allocator}
    done = subprocess.run([sys.executable, "-c", LOOP], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@glibc
def test_freed_buffers_are_reused_without_page_faults():
    pages = 64 * 1024 * 1024 // os.sysconf("SC_PAGE_SIZE")
    kept, system = faults("keep"), faults("system")
    assert kept["kept"] and not system["kept"]
    assert system["faults"] > 5 * pages  # glibc's default: each block mapped afresh
    assert kept["faults"] < 2 * pages  # kept: faulted in once


def test_the_system_setting_leaves_the_defaults(monkeypatch):
    monkeypatch.setenv("FERSTUDY_ALLOCATOR", "system")
    assert keep_freed_memory() is False


def test_every_command_sets_it_before_anything_else(monkeypatch):
    from ferstudy import cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("set") or True)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert calls == ["set"]
