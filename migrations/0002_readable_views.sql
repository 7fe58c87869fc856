-- 0002: readable views for Datasette, sqlite-utils and the sqlite3 shell. Views only: no table, row or index
-- changes.
--
-- One view per history and summary table, named <table>_view: every column of the table, in its order,
-- and beside each id the name it stands for and beside each Unix time the same time in UTC:
--  * <time>_utc ('2025-11-05T00:00:00Z') for history times, war start and end, and created_at;
--  * period_start_date / period_end_date ('2025-11-01' / '2025-11-30') for summaries: period_end is the
--    month's last second, so its date is the month's last day;
--  * player_name, faction_name, attacking_/defending_/winner_faction_name, faction_name_start/_end: the
--    CURRENT name in players / factions (Torn names change; the history tables keep ids, not names); a
--    faction only ever named by another response is a stub named by that response or 'Faction <id>';
--  * territory_sector: the sector of the territory from `territories` (Torn territories have codes, no
--    names).
-- Every join is a LEFT JOIN: a row whose id names nothing known (a war on a territory never polled, a row
-- added by hand in a shell with foreign keys off) still shows, with NULL names.
--
-- No foreign key from territory_id to `territories` (considered for this migration and not added):
--  * war_status_history.territory_id can legitimately name a territory that is not in `territories`.
--    The wars projection writes a row for every war it sees; the territories projection adds a
--    territory only when something is known about it, and a war first seen already over ('completed',
--    e.g. in a faction's wars or territory_wars list) says nothing about its territory, so no row is made.
--    war_summary.territory_id is folded from those rows. With the key, such a war fails the ingest: a
--    DEFERRABLE INITIALLY DEFERRED key is checked at COMMIT, so the whole batch's transaction (events
--    included, not just the war) is refused and nothing of it is stored; an immediate key turns the war's
--    snapshot into a projection error and loses it. tornstore's own check (`PRAGMA foreign_key_check` in
--    the crash tests) would fail too. tests/test_views.py keeps such a war and shows it in the view.
--  * territory_ownership_history and territory_ownership_summary never name a missing territory (the
--    projection writes the territory's row before its history, replay keeps territory rows, the
--    compactor never deletes them), so a key there would only restate that, at the price of rebuilding
--    both tables (every row copied, indexes and AUTOINCREMENT sequences remade) inside this migration's
--    one write transaction, while the war tables, the ones that can differ, stay without it.
--    tests/test_views.py checks the invariant instead.

CREATE VIEW player_stats_history_view AS
SELECT h.id, h.player_id, p.name AS player_name,
       h.timestamp, strftime('%Y-%m-%dT%H:%M:%SZ', h.timestamp, 'unixepoch') AS timestamp_utc,
       h.strength, h.defense, h.speed, h.dexterity, h.total_stats, h.level, h.life_maximum, h.networth,
       h.event_position
FROM player_stats_history AS h
LEFT JOIN players AS p ON p.player_id = h.player_id;

CREATE VIEW faction_history_view AS
SELECT h.id, h.faction_id, f.name AS faction_name,
       h.timestamp, strftime('%Y-%m-%dT%H:%M:%SZ', h.timestamp, 'unixepoch') AS timestamp_utc,
       h.respect, h.member_count, h.best_chain,
       h.event_position
FROM faction_history AS h
LEFT JOIN factions AS f ON f.faction_id = h.faction_id;

CREATE VIEW war_status_history_view AS
SELECT h.id, h.war_id, h.war_type, h.territory_id, t.sector AS territory_sector,
       h.attacking_faction_id, fa.name AS attacking_faction_name,
       h.defending_faction_id, fd.name AS defending_faction_name,
       h.attacking_score, h.defending_score, h.required_score, h.status,
       h.started_at, strftime('%Y-%m-%dT%H:%M:%SZ', h.started_at, 'unixepoch') AS started_utc,
       h.ends_at, strftime('%Y-%m-%dT%H:%M:%SZ', h.ends_at, 'unixepoch') AS ends_utc,
       h.winner_faction_id, fw.name AS winner_faction_name,
       h.recorded_at, strftime('%Y-%m-%dT%H:%M:%SZ', h.recorded_at, 'unixepoch') AS recorded_utc,
       h.event_position
FROM war_status_history AS h
LEFT JOIN territories AS t ON t.territory_id = h.territory_id
LEFT JOIN factions AS fa ON fa.faction_id = h.attacking_faction_id
LEFT JOIN factions AS fd ON fd.faction_id = h.defending_faction_id
LEFT JOIN factions AS fw ON fw.faction_id = h.winner_faction_id;

CREATE VIEW territory_ownership_history_view AS
SELECT h.id, h.territory_id,
       h.faction_id, f.name AS faction_name,
       h.sector, h.coordinates, h.coordinate_x, h.coordinate_y, h.racket_level, h.racket_type, h.war_status,
       h.recorded_at, strftime('%Y-%m-%dT%H:%M:%SZ', h.recorded_at, 'unixepoch') AS recorded_utc,
       h.event_position
FROM territory_ownership_history AS h
LEFT JOIN factions AS f ON f.faction_id = h.faction_id;

CREATE VIEW player_stats_summary_view AS
SELECT s.id, s.player_id, p.name AS player_name,
       s.period_start, date(s.period_start, 'unixepoch') AS period_start_date,
       s.period_end, date(s.period_end, 'unixepoch') AS period_end_date,
       s.period_type,
       s.strength_start, s.strength_end, s.strength_change,
       s.defense_start, s.defense_end, s.defense_change,
       s.speed_start, s.speed_end, s.speed_change,
       s.dexterity_start, s.dexterity_end, s.dexterity_change,
       s.total_stats_start, s.total_stats_end, s.total_stats_change,
       s.level_start, s.level_end, s.level_change,
       s.life_maximum_start, s.life_maximum_end,
       s.networth_start, s.networth_end, s.networth_change,
       s.record_count,
       s.created_at, strftime('%Y-%m-%dT%H:%M:%SZ', s.created_at, 'unixepoch') AS created_utc
FROM player_stats_summary AS s
LEFT JOIN players AS p ON p.player_id = s.player_id;

CREATE VIEW war_summary_view AS
SELECT s.id, s.war_id, s.war_type, s.territory_id, t.sector AS territory_sector,
       s.period_start, date(s.period_start, 'unixepoch') AS period_start_date,
       s.period_end, date(s.period_end, 'unixepoch') AS period_end_date,
       s.period_type,
       s.attacking_faction_id, fa.name AS attacking_faction_name,
       s.defending_faction_id, fd.name AS defending_faction_name,
       s.final_attacking_score, s.final_defending_score,
       s.winner_faction_id, fw.name AS winner_faction_name,
       s.duration_seconds, s.record_count,
       s.created_at, strftime('%Y-%m-%dT%H:%M:%SZ', s.created_at, 'unixepoch') AS created_utc
FROM war_summary AS s
LEFT JOIN territories AS t ON t.territory_id = s.territory_id
LEFT JOIN factions AS fa ON fa.faction_id = s.attacking_faction_id
LEFT JOIN factions AS fd ON fd.faction_id = s.defending_faction_id
LEFT JOIN factions AS fw ON fw.faction_id = s.winner_faction_id;

CREATE VIEW territory_ownership_summary_view AS
SELECT s.id, s.territory_id, t.sector AS territory_sector,
       s.period_start, date(s.period_start, 'unixepoch') AS period_start_date,
       s.period_end, date(s.period_end, 'unixepoch') AS period_end_date,
       s.period_type,
       s.faction_id_start, fs.name AS faction_name_start,
       s.faction_id_end, fe.name AS faction_name_end,
       s.ownership_changes, s.days_owned, s.record_count,
       s.created_at, strftime('%Y-%m-%dT%H:%M:%SZ', s.created_at, 'unixepoch') AS created_utc
FROM territory_ownership_summary AS s
LEFT JOIN territories AS t ON t.territory_id = s.territory_id
LEFT JOIN factions AS fs ON fs.faction_id = s.faction_id_start
LEFT JOIN factions AS fe ON fe.faction_id = s.faction_id_end;

CREATE VIEW faction_summary_view AS
SELECT s.id, s.faction_id, f.name AS faction_name,
       s.period_start, date(s.period_start, 'unixepoch') AS period_start_date,
       s.period_end, date(s.period_end, 'unixepoch') AS period_end_date,
       s.period_type,
       s.respect_start, s.respect_end, s.respect_change,
       s.member_count_start, s.member_count_end, s.member_count_change,
       s.best_chain_start, s.best_chain_end, s.best_chain_change,
       s.record_count,
       s.created_at, strftime('%Y-%m-%dT%H:%M:%SZ', s.created_at, 'unixepoch') AS created_utc
FROM faction_summary AS s
LEFT JOIN factions AS f ON f.faction_id = s.faction_id;
