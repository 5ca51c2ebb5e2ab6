"""Outputs written atomically keep the ordinary permissions of a file the process creates."""

from __future__ import annotations

import os
import stat

from ferstudy.core.files import atomic_path, write_json


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_outputs_get_the_umasks_permissions_not_a_temporary_files(tmp_path):
    ordinary_file, ordinary_folder = tmp_path / "plain.txt", tmp_path / "plain"
    ordinary_file.write_text("x")
    ordinary_folder.mkdir()
    write_json(tmp_path / "out.json", {"a": 1})
    with atomic_path(tmp_path / "folder", directory=True) as tmp:
        (tmp / "inside.txt").write_text("x")
    assert _mode(tmp_path / "out.json") == _mode(ordinary_file)
    assert _mode(tmp_path / "folder") == _mode(ordinary_folder)
    assert _mode(ordinary_file) & stat.S_IRGRP  # under the usual umask: readable by the group
