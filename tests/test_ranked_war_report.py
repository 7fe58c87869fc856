"""A ranked war's final report (v1 torn rankedwarreport, v2 faction rankedwarreport) closes its history."""
from __future__ import annotations

import sqlite3

from tornstore import Store

T = 1764100000
WAR = {"factions": {"7935": {"name": "The Collective", "score": 1200, "chain": 40},
                    "35739": {"name": "Kingsmen", "score": 900, "chain": 12}},
       "war": {"start": T - 86400, "end": 0, "target": 7400, "winner": 0}}
V1_REPORT = {"rankedwarreport": {
    "factions": {"7935": {"name": "The Collective", "score": 7400, "attacks": 512, "rewards": {"respect": 300},
                          "members": {"1": {"name": "a", "level": 50, "attacks": 10, "score": 100.5}}},
                 "35739": {"name": "Kingsmen", "score": 5210, "attacks": 420, "rewards": {"respect": 100},
                           "members": {}}},
    "war": {"start": T - 86400, "end": T + 3000, "winner": 7935, "forfeit": False}}}
V2_REPORT = {"rankedwarreport": {
    "id": 139, "start": T - 86400, "end": T + 3000, "winner": 7935, "forfeit": False,
    "factions": [{"id": 7935, "name": "The Collective", "score": 7400, "attacks": 512,
                  "rank": {"before": "Gold I", "after": "Gold II"}, "rewards": {}, "members": []},
                 {"id": 35739, "name": "Kingsmen", "score": 5210, "attacks": 420,
                  "rank": {"before": "Gold I", "after": "Silver III"}, "rewards": {}, "members": []}]}}


def _latest(db) -> tuple:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT status, attacking_faction_id, defending_faction_id, attacking_score, defending_score, "
            "required_score, ends_at, winner_faction_id FROM war_status_history WHERE war_id = 139 "
            "ORDER BY recorded_at DESC, id DESC LIMIT 1").fetchone()
    finally:
        conn.close()


async def _with_report(tmp_path, url: str, report: dict) -> tuple:
    db = tmp_path / "torn.db"
    async with Store.open(db, create=True) as store:
        await store.ingest("https://api.torn.com/torn/?selections=rankedwars", {"rankedwars": {"139": WAR}},
                           observed_at=T)
        assert _latest(db)[0] == "ongoing"
        result = await store.ingest(url, report, observed_at=T + 7200)
        assert result.rejected == []
    return _latest(db)


async def test_the_v1_report_gives_final_scores_and_winner(tmp_path):
    final = await _with_report(tmp_path, "https://api.torn.com/torn/139?selections=rankedwarreport", V1_REPORT)
    assert final == ("completed", 7935, 35739, 7400, 5210, 7400, T + 3000, 7935)


async def test_the_v2_report_gives_final_scores_and_winner(tmp_path):
    final = await _with_report(tmp_path, "https://api.torn.com/v2/faction/139/rankedwarreport", V2_REPORT)
    assert final == ("completed", 7935, 35739, 7400, 5210, 7400, T + 3000, 7935)
