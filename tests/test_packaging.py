"""A wheel built from the repository carries the migrations, so `pip install .` then `init` works."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_carries_migrations_and_init_works(tmp_path):
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheel_dir), str(ROOT)], check=True, cwd=tmp_path)
    wheel = next(wheel_dir.glob("tornstore-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "migrations/0001_initial.sql" in names
    assert any(n.endswith("entry_points.txt") for n in names)
    # Install the wheel alone into a folder and run `tornstore init` from it, away from the source tree.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    str(wheel)], check=True, cwd=tmp_path)
    code = "import sys; sys.argv = ['tornstore', '--db', 'x.db', 'init']; from cli.main import main; main()"
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "created schema version" in run.stdout
    again = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert "nothing to do" in again.stdout
