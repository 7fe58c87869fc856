"""The benchmark runs and prints the agreed JSON shape (its cheapest section, quick size; no timing asserts)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION_KEYS = {
    "ingest": {"per_s", "limit_per_s", "naive_per_s", "responses"},
    "replay": {"per_s", "limit_per_s", "events", "peak_rss_mb"},
    "compact": {"seconds", "limit_seconds", "rows"},
    "storage": {"bytes", "naive_bytes", "polls"},
    "query": {"player_p99_ms", "player_baseline_p99_ms", "history_p99_ms", "history_baseline_p99_ms"},
}


def test_bench_quick_json_compact(tmp_path):
    env = dict(os.environ, TORNSTORE_BENCH_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "tests.bench", "--quick", "--json", "--only", "compact"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert set(SECTION_KEYS) <= set(result)
    for name, keys in SECTION_KEYS.items():
        if name == "compact":
            assert "skipped" not in result[name] and "error" not in result[name], result[name]
            assert keys <= set(result[name]), result[name]
            assert result[name]["rows"] >= 50_000
            assert isinstance(result[name]["workload"], str)
        else:
            assert result[name] == {"skipped": "not selected (--only)"}
    assert list(tmp_path.iterdir()) == []  # the scratch directory is cleaned up
