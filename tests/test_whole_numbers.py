"""Numbers with a fraction where Torn gives integers are refused with the field named, never rounded."""
from __future__ import annotations

import sqlite3

import pytest

from tornstore import Store
from tornstore.projections.models import opt_int, opt_score

from .conftest import OBSERVED_AT, fixture_body

URL = "https://api.torn.com/user/1879891?selections=profile"


async def test_a_fractional_level_is_a_projection_error_naming_the_field(tmp_path):
    db = tmp_path / "torn.db"
    body = fixture_body("v1/user_profile.json")
    async with Store.open(db, create=True) as store:
        await store.ingest(URL, body, observed_at=OBSERVED_AT)
        report = await store.ingest(URL, body | {"level": 9.5}, observed_at=OBSERVED_AT + 60)
        assert report.appended == 1                                   # the event is kept in the log
    conn = sqlite3.connect(db)
    try:
        level = conn.execute("SELECT level FROM players WHERE player_id = 1879891").fetchone()[0]
        errors = [r for (r,) in conn.execute("SELECT reason FROM projection_errors")]
        levels = [lv for (lv,) in conn.execute("SELECT DISTINCT level FROM player_stats_history")]
    finally:
        conn.close()
    assert level == body["level"]                                     # not 10
    assert levels == [body["level"]]
    assert errors and all("level 9.5 is not a whole number" in e for e in errors)


def test_whole_numbers_and_war_scores():
    assert [opt_int(v) for v in (12, 12.0, "12", "12.0", "1,234", "", None)] == [12, 12, 12, 12, 1234, None, None]
    for bad in (9.5, "9.5", "ten"):
        with pytest.raises(ValueError, match="level"):
            opt_int(bad, "level")
    assert [opt_score(v) for v in (100.5, 99.4, "7400.7", 3, "12")] == [100, 99, 7401, 3, 12]
