"""Keys planted in every place a response or a capture line can carry one never reach any stored text.

The collector's own paths (logs, gaps, key pool) are covered in test_secrets.py; this file covers what
arrives from outside: capture lines, a bot's `Store.ingest`, bodies that echo a request. On a SQLite file and
on a PostgreSQL database (there every value of every table's rows is searched, beside the files).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tornstore import Store
from tornstore.eventstore.db import close_sync, connect_sync, is_url

from .conftest import OBSERVED_AT
from .crashkit import table_bytes

ROOT = Path(__file__).resolve().parents[1]
PLANTED = ["HoStIlEkEy123456", "PaGiNgKeY7654321", "HtMlEcHoKeY00001", "ApIkEyHeAdEr0002", "ErRoRtExTkEy0003",
           "JsOnEcHoKeY00004", "UrLpAtHkEy000005"]
T = OBSERVED_AT


def _capture_lines() -> list[str]:
    profile = {"player_id": 11, "name": "Eleven", "level": 3, "status": {"state": "Okay", "description": "Okay"}}
    full = json.dumps({"url": f"https://api.torn.com/user/11?selections=profile&key={PLANTED[0]}",
                       "observed_at": T, "body": profile})
    return [
        # A line cut short in the middle of its body: quarantined whole, its key with it (before).
        full[:len(full) // 2 + 20],
        # A body of an endpoint we do not project, with a paging link that carries the key.
        json.dumps({"url": "https://api.torn.com/v2/market/206/itemmarket?offset=0", "observed_at": T,
                    "body": {"itemmarket": {"listings": [{"price": 10, "amount": 1}]},
                             "_metadata": {"links": {"prev": None, "next":
                                 f"https://api.torn.com/v2/market/206/itemmarket?offset=100&key={PLANTED[1]}"}}}}),
        # An HTTP 200 HTML page that echoes the request and its Authorization header.
        json.dumps({"url": "https://api.torn.com/v2/user/12/profile", "observed_at": T,
                    "body": f"<html><p>GET /v2/user/12/profile?x=1&amp;key={PLANTED[2]}</p>"
                            f"<p>Authorization: ApiKey {PLANTED[3]}</p></html>"}),
        # A Torn error whose text echoes the key.
        json.dumps({"url": "https://api.torn.com/user/13?selections=profile", "observed_at": T,
                    "body": {"error": {"code": 2, "error": f"Incorrect key (key={PLANTED[4]})"}}}),
        # A body that is not the shape its URL promises, echoing the request as JSON.
        json.dumps({"url": "https://api.torn.com/v2/faction/9/members", "observed_at": T,
                    "body": {"members": "oops", "request": {"key": PLANTED[5]}}}),
        # A URL with its key where no query parser looks for it.
        json.dumps({"url": f"https://api.torn.com/user/14?selections=profile&amp;key={PLANTED[6]}",
                    "observed_at": T, "body": {**profile, "player_id": 14}}),
    ]


def _cli(db: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TORNSTORE_DB"}
    proc = subprocess.run([sys.executable, "-m", "tornstore", "--db", str(db), *args], cwd=ROOT, env=env,
                          input=stdin, capture_output=True, text=True, timeout=120)
    return proc


def _assert_clean(where: str, blob: bytes | str) -> None:
    data = blob.encode() if isinstance(blob, str) else blob
    for key in PLANTED:
        assert key.encode() not in data, f"{key} found in {where}"


def _table_rows(url: str) -> bytes:
    return table_bytes(url, must_have=("events", "quarantine"))


def _assert_store_clean(db: Path | str) -> None:
    """On PostgreSQL the store is no file: its tables' rows are read back."""
    if is_url(db):
        _assert_clean("the database's tables", _table_rows(db))


def test_planted_keys_reach_no_table_file_export_backup_or_output(db_path, tmp_path):
    db = db_path
    capture = tmp_path / "capture.ndjson"
    capture.write_text("\n".join(_capture_lines()) + "\n")
    outputs = {}
    for args in (("init",), ("ingest", str(capture), "--json")):
        proc = _cli(db, *args)
        outputs[" ".join(args)] = proc.stdout + proc.stderr
    export = tmp_path / "events.ndjson"
    proc = _cli(db, "export-events", "-o", str(export))
    outputs["export-events"] = proc.stdout + proc.stderr
    backup = tmp_path / "copy.db"
    proc = _cli(db, "backup", "-o", str(backup))
    outputs["backup"] = proc.stdout + proc.stderr
    for command in ("status", "verify"):
        proc = _cli(db, command)
        outputs[command] = proc.stdout + proc.stderr

    # Every file the database and its tools wrote: the database, its WAL, the export, the backup (on
    # PostgreSQL a SQLite copy), and a PostgreSQL store's tables.
    files = [p for p in tmp_path.iterdir() if p.is_file() and p != capture]
    assert {export, backup} | (set() if is_url(db) else {db}) <= set(files)
    for path in files:
        _assert_clean(path.name, path.read_bytes())
    _assert_store_clean(db)
    for command, text in outputs.items():
        _assert_clean(f"the output of {command}", text)

    # And nothing was lost: each line is stored somewhere a person can find it.
    conn = connect_sync(db)
    try:
        quarantined = conn.execute("SELECT count(*) FROM quarantine").fetchone()[0]
        gaps = conn.execute("SELECT count(*) FROM gaps").fetchone()[0]
        market = conn.execute("SELECT payload FROM events JOIN streams USING (stream_id) "
                              "WHERE entity_type = 'raw'").fetchone()
        players = {r[0] for r in conn.execute("SELECT player_id FROM players").fetchall()}
    finally:
        close_sync(conn)
    assert quarantined == 3 and gaps == 1
    assert "key=<redacted>" in market[0] and "offset=100" in market[0]
    assert 14 in players


async def test_a_bot_ingest_with_planted_keys_stores_none(db_path, tmp_path):
    db = db_path
    async with Store.open(db, create=True) as store:
        await store.ingest(f"https://api.torn.com/v2/faction/9/basic?key={PLANTED[0]}",
                           {"basic": {"id": 9, "name": f"key={PLANTED[1]}"}}, observed_at=T)
        await store.ingest("https://api.torn.com/v2/user/5/profile", f"echo ApiKey {PLANTED[3]}", observed_at=T)
    for path in tmp_path.iterdir():
        _assert_clean(path.name, path.read_bytes())
    _assert_store_clean(db)
