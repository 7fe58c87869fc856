"""Killing the demo's ingest child ends the demo with one clear line, not a traceback."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _children(pid: int) -> dict[int, str]:
    found = {}
    for entry in Path(os.sep, "proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def test_killing_the_ingest_child_ends_the_demo_with_one_error_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TORNSTORE_DB"}
    demo = subprocess.Popen([sys.executable, "-m", "tornstore", "demo", "--months", "1", "--factions", "1",
                             "--out", str(tmp_path / "demo.db"), "--chart", str(tmp_path / "demo.png")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        child = None
        deadline = time.monotonic() + 60
        while child is None and time.monotonic() < deadline and demo.poll() is None:
            child = next((pid for pid, cmd in _children(demo.pid).items() if "ingest_process" in cmd), None)
            time.sleep(0.1)
        assert child is not None, "the demo's ingest child never started"
        time.sleep(1.0)                                  # let it store a batch or two
        os.kill(child, signal.SIGKILL)
        out, err = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    assert demo.returncode == 1, err[-2000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "the demo stopped" in errors[0], err[-2000:]
