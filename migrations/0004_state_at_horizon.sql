-- 0004: the projections' state at the prune horizon, so that replay = that state + the retained log.
--
-- Pruning deletes old events and history rows; the values they carried (a territory's sector seen once in
-- August, a player's life maximum from a profile polled before the horizon, a war still open) live on in
-- the projected tables. Before pruning, the compactor now replays the projections up to the horizon beside
-- the live tables and keeps the result here: every current-state row, and each entity's history rows in
-- force at the horizon. Replay starts from these rows instead of from empty tables.
--
-- projection_snapshots: one row per snapshot ever taken (a few a year). Only the newest one's rows are
-- kept in the *_at_horizon tables.
--  * horizon: the snapshot is the state in force just before this second (a month's start);
--  * prefix_position: it is the projection of the events at positions 1..prefix_position, all observed
--    before the horizon (the log's longest such prefix when it was taken). Replay applies the events after
--    it; the compactor deletes no event after it;
--  * sealed_position: the end of the log when the snapshot was written. Events appended after it were
--    projected inline with this horizon (no history row before it), events before it with the older one:
--    replay gives each event the horizon inline projection gave it;
--  * made_at: the compactor's clock. NULL for the row this migration adds to a database pruned before it.
--
-- A database pruned before 0004 kept no state: its row says "the state at the horizon is empty" (prefix 0,
-- no *_at_horizon rows), which is what replay assumed until now. `tornstore replay` once adopts what can be
-- rebuilt from its retained log; values that only pruned events carried cannot be recovered.
CREATE TABLE projection_snapshots (
    horizon INTEGER PRIMARY KEY,
    prefix_position INTEGER NOT NULL CHECK (prefix_position >= 0),
    sealed_position INTEGER NOT NULL CHECK (sealed_position >= 0),
    made_at INTEGER
);

INSERT INTO projection_snapshots (horizon, prefix_position, sealed_position, made_at)
SELECT value, 0, 0, NULL FROM store_meta WHERE key = 'prune_horizon' AND value > 0;

-- The AUTOINCREMENT sequence of each history table at the prefix: rows replayed after it get the ids
-- inline projection gave them.
CREATE TABLE sequences_at_horizon (
    table_name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);

-- The snapshot's rows: the projected tables' columns, in their order, without their constraints (these
-- are copies). Current state: every row; replay starts from them. History: per entity, the latest row
-- observed before the horizon (for war_status_history per war, type, territory and start: every row a
-- handler may look up); the handlers read the row in force before the horizon here, inline projection and
-- replay alike, with the indexes below.
-- A migration that adds a column to a projected table adds it here too (tests/test_replay_after_prune.py
-- checks that the columns match).
CREATE TABLE factions_at_horizon (
    faction_id INTEGER PRIMARY KEY,
    name TEXT,
    tag TEXT,
    leader_id INTEGER,
    co_leader_id INTEGER,
    respect INTEGER,
    age INTEGER,
    best_chain INTEGER,
    member_count INTEGER,
    is_stub INTEGER,
    created_at INTEGER,
    last_updated INTEGER
);

CREATE TABLE players_at_horizon (
    player_id INTEGER PRIMARY KEY,
    name TEXT,
    level INTEGER,
    rank TEXT,
    faction_id INTEGER,
    status_state TEXT,
    status_description TEXT,
    life_current INTEGER,
    life_maximum INTEGER,
    last_action_status TEXT,
    last_action_at INTEGER,
    created_at INTEGER,
    last_updated INTEGER
);

CREATE TABLE territories_at_horizon (
    territory_id TEXT PRIMARY KEY,
    faction_id INTEGER,
    sector TEXT,
    coordinates TEXT,
    coordinate_x REAL,
    coordinate_y REAL,
    racket_level INTEGER,
    racket_type TEXT,
    war_status TEXT,
    last_updated INTEGER
);

CREATE TABLE player_stats_history_at_horizon (
    id INTEGER PRIMARY KEY,
    player_id INTEGER,
    timestamp INTEGER,
    strength INTEGER,
    defense INTEGER,
    speed INTEGER,
    dexterity INTEGER,
    total_stats INTEGER,
    level INTEGER,
    life_maximum INTEGER,
    networth INTEGER,
    event_position INTEGER
);

CREATE TABLE war_status_history_at_horizon (
    id INTEGER PRIMARY KEY,
    war_id INTEGER,
    war_type TEXT,
    territory_id TEXT,
    attacking_faction_id INTEGER,
    defending_faction_id INTEGER,
    attacking_score INTEGER,
    defending_score INTEGER,
    required_score INTEGER,
    status TEXT,
    started_at INTEGER,
    ends_at INTEGER,
    winner_faction_id INTEGER,
    recorded_at INTEGER,
    event_position INTEGER
);

CREATE TABLE territory_ownership_history_at_horizon (
    id INTEGER PRIMARY KEY,
    territory_id TEXT,
    faction_id INTEGER,
    sector TEXT,
    coordinates TEXT,
    coordinate_x REAL,
    coordinate_y REAL,
    racket_level INTEGER,
    racket_type TEXT,
    war_status TEXT,
    recorded_at INTEGER,
    event_position INTEGER
);

CREATE TABLE faction_history_at_horizon (
    id INTEGER PRIMARY KEY,
    faction_id INTEGER,
    timestamp INTEGER,
    respect INTEGER,
    member_count INTEGER,
    best_chain INTEGER,
    event_position INTEGER
);

CREATE INDEX idx_at_horizon_player_stats ON player_stats_history_at_horizon(player_id, timestamp);
CREATE INDEX idx_at_horizon_faction_history ON faction_history_at_horizon(faction_id, timestamp);
CREATE INDEX idx_at_horizon_territory_ownership ON territory_ownership_history_at_horizon(territory_id, recorded_at);
CREATE INDEX idx_at_horizon_war_status_war ON war_status_history_at_horizon(war_id, recorded_at);
CREATE INDEX idx_at_horizon_war_status_territory ON war_status_history_at_horizon(territory_id, started_at);
CREATE INDEX idx_at_horizon_war_status_open ON war_status_history_at_horizon(status, war_type);
