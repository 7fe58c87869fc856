"""The wheel installs one top-level package, `tornstore`, and works in a bot's venv beside other packages.

A bot's environment is rarely empty: another package may install its own top-level `cli` or
`migrations`, and the bot's folder may hold a `migrations/` package of its own (it is first on
sys.path). None of that may touch tornstore.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

NEIGHBOUR_SETUP = """\
from setuptools import setup
setup(name="neighbour", version="1.0", packages=["cli", "migrations"])
"""


def _run(cmd: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "TORNSTORE_DB", "VIRTUAL_ENV"}}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
          str(ROOT)], cwd=out)
    return next(out.glob("tornstore-*.whl"))


def test_the_wheel_holds_only_the_tornstore_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"tornstore", next(t for t in top if t.endswith(".dist-info"))}
    for inside in ["tornstore/__init__.py", "tornstore/__main__.py", "tornstore/py.typed",
                   "tornstore/migrations/0001_initial.sql", "tornstore/eventstore/collector/client.py",
                   "tornstore/projections/compactor/folds.py", "tornstore/cli/main.py",
                   "tornstore/migrations/0007_stat_history.sql", "tornstore/eventstore/postgres/0001_initial.sql", "tornstore/eventstore/postgres/0007_stat_history.sql"]:
        assert inside in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "tornstore = tornstore.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_a_bot_venv_with_its_own_cli_and_migrations(wheel, tmp_path):
    # A neighbour package that installs top-level `cli` and `migrations`, as pyCLI and others do.
    neighbour = tmp_path / "neighbour"
    for package in ("cli", "migrations"):
        (neighbour / package).mkdir(parents=True)
        (neighbour / package / "__init__.py").write_text(f"NEIGHBOUR = {package!r}\n")
    (neighbour / "setup.py").write_text(NEIGHBOUR_SETUP)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", str(wheel)], cwd=tmp_path)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(neighbour),
          str(neighbour)], cwd=tmp_path)
    _run([str(python), "-m", "pip", "install", "-q", str(next(neighbour.glob("neighbour-*.whl")))], cwd=tmp_path)

    # The bot's own folder, with a `migrations` package first on sys.path.
    bot = tmp_path / "bot"
    (bot / "migrations").mkdir(parents=True)
    (bot / "migrations" / "__init__.py").write_text("")
    (bot / "migrations" / "0001_bot.sql").write_text("CREATE TABLE bot_only (x);\n")
    capture = bot / "capture.ndjson"
    body = {"player_id": 7, "name": "Seven", "level": 12, "rank": "Average", "life": {"current": 80, "maximum": 100},
            "status": {"state": "Okay", "description": "Okay", "until": 0},
            "faction": {"faction_id": 0}, "last_action": {"status": "Online", "timestamp": 1764100000}}
    capture.write_text(json.dumps({"url": "https://api.torn.com/user/7?selections=profile",
                                   "observed_at": 1764100000, "body": body}) + "\n")

    tornstore = str(env_dir / "bin" / "tornstore")
    assert "created schema version" in _run([tornstore, "--db", "bot.db", "init"], cwd=bot).stdout
    _run([tornstore, "--db", "bot.db", "ingest", "capture.ndjson"], cwd=bot)
    shown = json.loads(_run([tornstore, "--db", "bot.db", "player", "7", "--json"], cwd=bot).stdout)
    assert shown["name"] == "Seven" and shown["level"] == 12

    query = ("import asyncio, migrations, cli\n"
             "from tornstore import Store, __version__\n"
             "async def main():\n"
             "    async with Store.open('bot.db') as store:\n"
             "        p = await store.player(7)\n"
             "    print(p.name, __version__, migrations.__file__, cli.NEIGHBOUR)\n"
             "asyncio.run(main())\n")
    out = _run([str(python), "-c", query], cwd=bot).stdout.split()
    assert out[0] == "Seven" and out[1] == "0.1.0"
    assert out[2] == str(bot / "migrations" / "__init__.py")   # the bot's own package is untouched
    assert out[3] == "cli"                                      # and so is the neighbour's
    # `python -m tornstore` is the same command line.
    assert "Usage: tornstore" in _run([str(python), "-m", "tornstore", "--help"], cwd=bot).stdout


def test_the_installed_package_works_from_the_checkout_root(wheel, tmp_path):
    """A user who clones, installs (not editable) and runs from the clone's root, as the README's first
    command does: there `tornstore` is the repository's folder, and the demo's child processes must still
    start."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", str(wheel)], cwd=tmp_path)
    assert "Usage: tornstore" in _run([str(python), "-m", "tornstore", "--help"], cwd=ROOT).stdout
    child = ("from tornstore.eventstore.simulator.process import SimulatorProcess\n"
             "sim = SimulatorProcess(seed=1, factions=2, territories=50).start_process()\n"
             "print(sim.url.startswith('http://127.0.0.1:'))\n"
             "sim.close()\n")
    assert _run([str(python), "-c", child], cwd=ROOT).stdout.strip() == "True"
