-- 0007: every numeric stat of a player or faction over time.
--
-- stat_history: a row when a tracked stat of an entity changes (projections/handlers/stat_history.py), one
-- row per (entity, stat, change), so a poll where 3 of 200 personal stats moved costs 3 rows.
--  * entity_type: 'player' or 'faction'; entity_id: the Torn id;
--  * stat: the stable name (the v1 flat name where Torn has one: xantaken, refills, attackswon, ...);
--  * recorded_at: the observation's time (Unix seconds, UTC); value: INTEGER, REAL for the rare float;
--  * event_position: the event that carried the value.
-- The first value seen of a stat is a row too (the start of its series).
CREATE TABLE stat_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_type TEXT NOT NULL CHECK (entity_type IN ('player', 'faction')),
    entity_id INTEGER NOT NULL,
    stat TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    value NUMERIC NOT NULL,
    event_position INTEGER
);
CREATE INDEX idx_stat_history_entity_stat_time ON stat_history(entity_type, entity_id, stat, recorded_at DESC);
CREATE INDEX idx_stat_history_time ON stat_history(recorded_at);

-- One row per closed UTC month, entity and stat, kept forever (the compactor folds and prunes, with the
-- rules of the other *_summary tables: start = the value in force when the month began, else the first value
-- in the month; end = the last value in the month, else start; change = end - start; an entity and stat
-- with a known value and no row in the month is carried: start = end, change 0, record_count 0).
CREATE TABLE stat_summary (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_type TEXT NOT NULL CHECK (entity_type IN ('player', 'faction')),
    entity_id INTEGER NOT NULL,
    stat TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    period_end INTEGER NOT NULL,
    period_type TEXT NOT NULL DEFAULT 'monthly',
    value_start NUMERIC,
    value_end NUMERIC,
    change NUMERIC,
    value_min NUMERIC,
    value_max NUMERIC,
    record_count INTEGER CHECK (record_count >= 0),
    created_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    UNIQUE (entity_type, entity_id, stat, period_start, period_end, period_type)
);
-- (look-ups by entity, stat and period use the UNIQUE key's index)
CREATE INDEX idx_stat_summary_stat_period ON stat_summary(stat, period_start);

-- The state at the prune horizon (as migration 0004): per (entity_type, entity_id, stat), the row in force
-- just before the horizon. The projection reads a row in force before the horizon here.
CREATE TABLE stat_history_at_horizon (
    id INTEGER PRIMARY KEY,
    entity_type TEXT,
    entity_id INTEGER,
    stat TEXT,
    recorded_at INTEGER,
    value NUMERIC,
    event_position INTEGER
);
CREATE INDEX idx_at_horizon_stat_history ON stat_history_at_horizon(entity_type, entity_id, stat, recorded_at);

-- Readable views, as migration 0002 makes for the other history and summary tables: beside each time the
-- same time in UTC, beside the id the CURRENT name of the player or faction.
CREATE VIEW stat_history_view AS
SELECT h.id, h.entity_type, h.entity_id,
       CASE h.entity_type WHEN 'player' THEN p.name ELSE f.name END AS entity_name,
       h.stat, h.recorded_at, strftime('%Y-%m-%dT%H:%M:%SZ', h.recorded_at, 'unixepoch') AS recorded_at_utc,
       h.value, h.event_position
FROM stat_history AS h
LEFT JOIN players AS p ON h.entity_type = 'player' AND p.player_id = h.entity_id
LEFT JOIN factions AS f ON h.entity_type = 'faction' AND f.faction_id = h.entity_id;

CREATE VIEW stat_summary_view AS
SELECT s.id, s.entity_type, s.entity_id,
       CASE s.entity_type WHEN 'player' THEN p.name ELSE f.name END AS entity_name,
       s.stat,
       s.period_start, date(s.period_start, 'unixepoch') AS period_start_date,
       s.period_end, date(s.period_end, 'unixepoch') AS period_end_date,
       s.period_type,
       s.value_start, s.value_end, s.change, s.value_min, s.value_max,
       s.record_count,
       s.created_at, strftime('%Y-%m-%dT%H:%M:%SZ', s.created_at, 'unixepoch') AS created_utc
FROM stat_summary AS s
LEFT JOIN players AS p ON s.entity_type = 'player' AND p.player_id = s.entity_id
LEFT JOIN factions AS f ON s.entity_type = 'faction' AND f.faction_id = s.entity_id;
