"""The wheel carries what a pip-installed compiler needs beyond Python modules."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_ships_the_board_installer(tmp_path):
    """``targets/board/install.sh`` (the emulated board's installer) is package data: a
    wheel without it could not set up the board after ``pip install``."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("compiler", "passes", "targets"):  # sources only: no models, no caches
        shutil.copytree(ROOT / package, src / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist"), str(src)], check=True,
                   capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "targets/board/install.sh" in names
    assert "compiler/cli.py" in names and "targets/board/server_main.py" in names
