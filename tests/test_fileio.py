"""compiler.fileio: atomic writes leave the old file or the new one, and no temp file."""
import json
import os
import stat

import pytest

from compiler.fileio import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text


def test_writes_replace_and_leave_no_temporary(tmp_path):
    p = tmp_path / "a.bin"
    assert atomic_write_bytes(p, b"old") == 3
    atomic_write_bytes(p, b"new!")
    assert p.read_bytes() == b"new!"
    atomic_write_text(tmp_path / "t.txt", "h\u00e9")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "h\u00e9"
    atomic_write_json(tmp_path / "j.json", {"k": [1, 2]})
    assert json.loads((tmp_path / "j.json").read_text()) == {"k": [1, 2]}
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.bin", "j.json", "t.txt"]


def test_failure_keeps_the_old_file(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert p.read_bytes() == b"old"
    assert [f.name for f in tmp_path.iterdir()] == ["a.bin"]


def test_mode_is_masked_by_the_umask(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "run.sh", "#!/bin/sh\n", mode=0o755)
        atomic_write_text(tmp_path / "plain", "x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o644


def test_missing_directory_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        atomic_write_bytes(tmp_path / "nope" / "a.bin", b"x")
