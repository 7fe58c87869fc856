-- PostgreSQL dialect of migrations/0002_readable_views.sql: the same views, columns and rows. See that file
-- for what they show and why territory_id has no foreign key.
--
-- Where the dialect differs: SQLite's strftime('%Y-%m-%dT%H:%M:%SZ', t, 'unixepoch') and date(t, 'unixepoch')
-- are to_char(to_timestamp(t) AT TIME ZONE 'UTC', ...) with the same text out (NULL in, NULL out).

CREATE VIEW player_stats_history_view AS
SELECT h.id, h.player_id, p.name AS player_name,
       h.timestamp, to_char(to_timestamp(h.timestamp) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS timestamp_utc,
       h.strength, h.defense, h.speed, h.dexterity, h.total_stats, h.level, h.life_maximum, h.networth,
       h.event_position
FROM player_stats_history AS h
LEFT JOIN players AS p ON p.player_id = h.player_id;

CREATE VIEW faction_history_view AS
SELECT h.id, h.faction_id, f.name AS faction_name,
       h.timestamp, to_char(to_timestamp(h.timestamp) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS timestamp_utc,
       h.respect, h.member_count, h.best_chain,
       h.event_position
FROM faction_history AS h
LEFT JOIN factions AS f ON f.faction_id = h.faction_id;

CREATE VIEW war_status_history_view AS
SELECT h.id, h.war_id, h.war_type, h.territory_id, t.sector AS territory_sector,
       h.attacking_faction_id, fa.name AS attacking_faction_name,
       h.defending_faction_id, fd.name AS defending_faction_name,
       h.attacking_score, h.defending_score, h.required_score, h.status,
       h.started_at, to_char(to_timestamp(h.started_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS started_utc,
       h.ends_at, to_char(to_timestamp(h.ends_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS ends_utc,
       h.winner_faction_id, fw.name AS winner_faction_name,
       h.recorded_at, to_char(to_timestamp(h.recorded_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS recorded_utc,
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
       h.recorded_at, to_char(to_timestamp(h.recorded_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS recorded_utc,
       h.event_position
FROM territory_ownership_history AS h
LEFT JOIN factions AS f ON f.faction_id = h.faction_id;

CREATE VIEW player_stats_summary_view AS
SELECT s.id, s.player_id, p.name AS player_name,
       s.period_start, to_char(to_timestamp(s.period_start) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS period_start_date,
       s.period_end, to_char(to_timestamp(s.period_end) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS period_end_date,
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
       s.created_at, to_char(to_timestamp(s.created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS created_utc
FROM player_stats_summary AS s
LEFT JOIN players AS p ON p.player_id = s.player_id;

CREATE VIEW war_summary_view AS
SELECT s.id, s.war_id, s.war_type, s.territory_id, t.sector AS territory_sector,
       s.period_start, to_char(to_timestamp(s.period_start) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS period_start_date,
       s.period_end, to_char(to_timestamp(s.period_end) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS period_end_date,
       s.period_type,
       s.attacking_faction_id, fa.name AS attacking_faction_name,
       s.defending_faction_id, fd.name AS defending_faction_name,
       s.final_attacking_score, s.final_defending_score,
       s.winner_faction_id, fw.name AS winner_faction_name,
       s.duration_seconds, s.record_count,
       s.created_at, to_char(to_timestamp(s.created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS created_utc
FROM war_summary AS s
LEFT JOIN territories AS t ON t.territory_id = s.territory_id
LEFT JOIN factions AS fa ON fa.faction_id = s.attacking_faction_id
LEFT JOIN factions AS fd ON fd.faction_id = s.defending_faction_id
LEFT JOIN factions AS fw ON fw.faction_id = s.winner_faction_id;

CREATE VIEW territory_ownership_summary_view AS
SELECT s.id, s.territory_id, t.sector AS territory_sector,
       s.period_start, to_char(to_timestamp(s.period_start) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS period_start_date,
       s.period_end, to_char(to_timestamp(s.period_end) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS period_end_date,
       s.period_type,
       s.faction_id_start, fs.name AS faction_name_start,
       s.faction_id_end, fe.name AS faction_name_end,
       s.ownership_changes, s.days_owned, s.record_count,
       s.created_at, to_char(to_timestamp(s.created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS created_utc
FROM territory_ownership_summary AS s
LEFT JOIN territories AS t ON t.territory_id = s.territory_id
LEFT JOIN factions AS fs ON fs.faction_id = s.faction_id_start
LEFT JOIN factions AS fe ON fe.faction_id = s.faction_id_end;

CREATE VIEW faction_summary_view AS
SELECT s.id, s.faction_id, f.name AS faction_name,
       s.period_start, to_char(to_timestamp(s.period_start) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS period_start_date,
       s.period_end, to_char(to_timestamp(s.period_end) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS period_end_date,
       s.period_type,
       s.respect_start, s.respect_end, s.respect_change,
       s.member_count_start, s.member_count_end, s.member_count_change,
       s.best_chain_start, s.best_chain_end, s.best_chain_change,
       s.record_count,
       s.created_at, to_char(to_timestamp(s.created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS created_utc
FROM faction_summary AS s
LEFT JOIN factions AS f ON f.faction_id = s.faction_id;
