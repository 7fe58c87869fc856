"""Shell completion, as README.md documents it: `_TORNSTORE_COMPLETE=bash_source tornstore` prints the script,
and completing --stat, --projection and --table offers the library's own names (real subprocesses)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tornstore.projections import queries
from tornstore.projections.handlers.registry import HANDLERS

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("tornstore")  # the console script, as a user runs it


def tornstore() -> list[str]:
    return [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "tornstore"]


def env(**extra: str) -> dict:
    environment = dict(os.environ, PYTHONPATH=str(ROOT), **extra)
    environment.pop("TORNSTORE_DB", None)
    return environment


def complete(words: str) -> list[str]:
    """What bash's completion asks tornstore for the last word of `words` (click's bash_complete protocol)."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    proc = subprocess.run(tornstore(), env=env(_TORNSTORE_COMPLETE="bash_complete", COMP_WORDS=words,
                                               COMP_CWORD=str(cword)),
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line.split(",", 1)[1] for line in proc.stdout.splitlines()]


@pytest.mark.parametrize("shell, marker", [
    ("bash", "complete -o nosort -F _tornstore_completion tornstore"),
    ("zsh", "compdef _tornstore_completion tornstore"),
    ("fish", "complete --no-files --command tornstore"),
])
def test_the_completion_script_is_produced(shell, marker):
    proc = subprocess.run(tornstore(), env=env(_TORNSTORE_COMPLETE=f"{shell}_source"), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert marker in proc.stdout and "_TORNSTORE_COMPLETE" in proc.stdout


def test_completing_stat_offers_the_stats_of_the_kind():
    assert complete("tornstore history player 1 --stat ") == list(queries.PLAYER_STATS)
    assert complete("tornstore --db torn.db history faction 9420 --stat ") == list(queries.FACTION_STATS)
    assert complete("tornstore plot faction 9420 --stat m") == ["member_count"]
    assert complete("tornstore plot player 1 --stat s") == ["strength", "speed"]


def test_completing_projection_table_and_commands():
    assert complete("tornstore replay --projection ") == [h.name for h in HANDLERS]
    assert complete("tornstore export summaries --table f") == ["faction_summary"]
    assert {"export", "export-events"} <= set(complete("tornstore exp"))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_evaluates_the_script_and_completes(tmp_path):
    """The README's line, in a real bash: eval the script, then run the completion function bash would."""
    if not SCRIPT.exists():
        pytest.skip("the tornstore console script is not installed beside this python")
    line = ('eval "$(_TORNSTORE_COMPLETE=bash_source tornstore)"; '
            'COMP_WORDS=(tornstore history faction 9420 --stat ""); COMP_CWORD=5; '
            '_tornstore_completion tornstore; printf "%s\\n" "${COMPREPLY[@]}"')
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", line], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60,
                          env=env(PATH=f"{SCRIPT.parent}{os.pathsep}{os.environ.get('PATH', '')}"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == list(queries.FACTION_STATS)
