"""`collect --once` against the simulator started as a real `tornstore simulate-api --port 0 --json` process:
exit code 0 when every poll succeeded, 1 with one Error: line saying how many failed and why otherwise."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from tornstore.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
KEY = "CLItestCLItest01"


@pytest.fixture
def simulator():
    """`tornstore simulate-api --port 0 --json`: its one stdout line says where it listens."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TORNSTORE_DB", None)
    proc = subprocess.Popen([sys.executable, "-m", "tornstore", "simulate-api", "--port", "0", "--seed", "3",
                             "--factions", "2", "--territories", "20", "--speed", "0", "--json"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        info = json.loads(line)
        assert info["url"] == f"http://127.0.0.1:{info['port']}" and info["port"] > 0 and info["seed"] == 3
        yield info["url"]
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert out == "" and "Traceback" not in err  # nothing after the one JSON line on stdout


def control(base: str, what: str, payload: dict | None = None) -> dict:
    request = urllib.request.Request(f"{base}/__sim/{what}", method="POST" if payload else "GET",
                                     data=json.dumps(payload).encode() if payload else None)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def write_config(path: Path, base: str) -> Path:
    faction = control(base, "world")["factions"][0]["id"]
    path.write_text("\n".join([
        'interval = "1m"', "jitter = 0", 'flush_every = "1s"', "max_tries = 1",
        "[[keys]]", 'key = "env:TK_CLI"', 'owner = "1"', 'access = "limited"',
        "[[factions]]", f"id = {faction}",
        'fetch = ["basic"]',
    ]) + "\n")
    return path


def collect_once(db: Path, config: Path, base: str, *extra: str):
    return CliRunner().invoke(cli, ["collect", "--db", str(db), "-c", str(config), "--api-base", base, "--once",
                                    "-q", *extra], env={"TK_CLI": KEY, "TORNSTORE_DB": None})


def test_collect_once_exits_1_and_says_which_polls_failed(simulator, tmp_path):
    config = write_config(tmp_path / "collect.toml", simulator)
    db = tmp_path / "torn.db"

    fine = collect_once(db, config, simulator, "--json")
    assert fine.exit_code == 0, fine.output
    data = json.loads(fine.stdout)
    assert data["polls"] > 0 and data["polls_failed"] == 0

    # The next request answers HTTP 503; with max_tries = 1 its poll fails.
    control(simulator, "fault", {"kind": "http", "status": 503, "count": 1})
    failed = collect_once(db, config, simulator, "--json")
    assert failed.exit_code == 1, failed.output
    data = json.loads(failed.stdout)  # the report is still printed whole, as JSON
    assert data["polls_failed"] == 1 and data["failures"] == {"HTTP 503": 1}
    assert failed.stderr.splitlines() == [
        f"Error: 1 of {data['polls']} polls failed (other failures: HTTP 503: 1); each is recorded as a gap"]

    # A Torn error code, in the human report this time.
    control(simulator, "fault", {"kind": "error", "code": 9, "count": 1})
    human = collect_once(db, config, simulator)
    assert human.exit_code == 1, human.output
    assert "1 failed" in human.stdout and "Torn errors by code: 9: 1" in human.stdout
    error = human.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: 1 of ") and "Torn errors by code: 9: 1" in error
    assert KEY not in human.output + failed.output
