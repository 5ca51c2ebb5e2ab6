"""What CPU this is, in one line, without TensorFlow: the timing log and the bench record it, so
that a stage's time is compared with floors measured on the same kind of machine."""

from __future__ import annotations

import os
import platform
from pathlib import Path

#: The instruction sets that change TensorFlow's speed on a CPU.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_kind() -> str:
    """``<model name>, <n> cores, <speed flags>``, e.g. ``AMD EPYC, 2 cores, avx2``."""
    fields: dict[str, str] = {}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first processor's
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    present = " ".join(flag for flag in SPEED_FLAGS if flag in flags)
    return f"{name}, {os.cpu_count()} cores" + (f", {present}" if present else "")
