"""A clean clone carries everything its tests read: no tracked file names a path outside the repository."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import FIXTURES, OPENAPI_SPEC

ROOT = Path(__file__).resolve().parents[1]

# Built from pieces so this file does not match itself.
OUTSIDE = re.compile("|".join([
    re.escape("..") + r"[/\\]" + "shared",           # the folder beside our own checkouts
    r"""Path\(\s*["']/(?!(dev|proc|sys|tmp)\b)""",   # an absolute path of some machine
    "/" + "work" + "/",                               # our development machines' root
    r"parents\[[2-9]\]\s*/",                          # climbing above the repository
]))


def _tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing tracked to check")
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / n for n in names.splitlines()]


def test_no_tracked_file_reads_outside_the_repository():
    offenders = []
    for path in _tracked_files():
        if path.suffix not in {".py", ".toml", ".cfg", ".ini", ".sh", ""} or not path.is_file():
            continue
        for number, line in enumerate(path.read_text("utf-8", errors="replace").splitlines(), start=1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_the_pattern_catches_what_it_is_for():
    for line in ['FIXTURES = Path(' + '"/' + 'work/shared/x")', 'Path(__file__).parents[' + '2] /' + ' "shared"',
                 'open("..' + '/shared/torn-api/x.json")']:
        assert OUTSIDE.search(line), line
    assert not OUTSIDE.search('Path(__file__).resolve().parents[1] / "examples"')
    assert not OUTSIDE.search('Path(' + '"/proc").iterdir()')


def test_the_torn_api_facts_are_in_the_repository():
    assert OPENAPI_SPEC.is_file()
    assert (FIXTURES / "PROVENANCE.md").is_file()
    assert len(list(FIXTURES.glob("v1/*.json"))) >= 10
    assert len(list(FIXTURES.glob("v2/*.json"))) >= 10
