-- PostgreSQL dialect of migrations/0004_state_at_horizon.sql: projection_snapshots, sequences_at_horizon and
-- the *_at_horizon copies of the projected tables. See that file for what they hold.
--
-- Where the dialect differs: INTEGER -> bigint, REAL -> double precision. The copies' ids (INTEGER PRIMARY
-- KEY in SQLite) are plain bigint keys, not identities: every row is copied with its id. sequences_at_horizon
-- keeps, per table, what SQLite keeps in sqlite_sequence (here: the table's identity sequence).

CREATE TABLE projection_snapshots (
    horizon bigint PRIMARY KEY,
    prefix_position bigint NOT NULL CHECK (prefix_position >= 0),
    sealed_position bigint NOT NULL CHECK (sealed_position >= 0),
    made_at bigint
);

INSERT INTO projection_snapshots (horizon, prefix_position, sealed_position, made_at)
SELECT value, 0, 0, NULL FROM store_meta WHERE key = 'prune_horizon' AND value > 0;

-- The AUTOINCREMENT sequence of each history table at the prefix: rows replayed after it get the ids
-- inline projection gave them.
CREATE TABLE sequences_at_horizon (
    table_name text PRIMARY KEY,
    seq bigint NOT NULL
);

-- The snapshot's rows: the projected tables' columns, in their order, without their constraints (these
-- are copies). Current state: every row; replay starts from them. History: per entity, the latest row
-- observed before the horizon (for war_status_history per war, type, territory and start: every row a
-- handler may look up); the handlers read the row in force before the horizon here, inline projection and
-- replay alike, with the indexes below.
-- A migration that adds a column to a projected table adds it here too (tests/test_replay_after_prune.py
-- checks that the columns match).
CREATE TABLE factions_at_horizon (
    faction_id bigint PRIMARY KEY,
    name text,
    tag text,
    leader_id bigint,
    co_leader_id bigint,
    respect bigint,
    age bigint,
    best_chain bigint,
    member_count bigint,
    is_stub bigint,
    created_at bigint,
    last_updated bigint
);

CREATE TABLE players_at_horizon (
    player_id bigint PRIMARY KEY,
    name text,
    level bigint,
    rank text,
    faction_id bigint,
    status_state text,
    status_description text,
    life_current bigint,
    life_maximum bigint,
    last_action_status text,
    last_action_at bigint,
    created_at bigint,
    last_updated bigint
);

CREATE TABLE territories_at_horizon (
    territory_id text PRIMARY KEY,
    faction_id bigint,
    sector text,
    coordinates text,
    coordinate_x double precision,
    coordinate_y double precision,
    racket_level bigint,
    racket_type text,
    war_status text,
    last_updated bigint
);

CREATE TABLE player_stats_history_at_horizon (
    id bigint PRIMARY KEY,
    player_id bigint,
    timestamp bigint,
    strength bigint,
    defense bigint,
    speed bigint,
    dexterity bigint,
    total_stats bigint,
    level bigint,
    life_maximum bigint,
    networth bigint,
    event_position bigint
);

CREATE TABLE war_status_history_at_horizon (
    id bigint PRIMARY KEY,
    war_id bigint,
    war_type text,
    territory_id text,
    attacking_faction_id bigint,
    defending_faction_id bigint,
    attacking_score bigint,
    defending_score bigint,
    required_score bigint,
    status text,
    started_at bigint,
    ends_at bigint,
    winner_faction_id bigint,
    recorded_at bigint,
    event_position bigint
);

CREATE TABLE territory_ownership_history_at_horizon (
    id bigint PRIMARY KEY,
    territory_id text,
    faction_id bigint,
    sector text,
    coordinates text,
    coordinate_x double precision,
    coordinate_y double precision,
    racket_level bigint,
    racket_type text,
    war_status text,
    recorded_at bigint,
    event_position bigint
);

CREATE TABLE faction_history_at_horizon (
    id bigint PRIMARY KEY,
    faction_id bigint,
    timestamp bigint,
    respect bigint,
    member_count bigint,
    best_chain bigint,
    event_position bigint
);

CREATE INDEX idx_at_horizon_player_stats ON player_stats_history_at_horizon(player_id, timestamp);
CREATE INDEX idx_at_horizon_faction_history ON faction_history_at_horizon(faction_id, timestamp);
CREATE INDEX idx_at_horizon_territory_ownership ON territory_ownership_history_at_horizon(territory_id, recorded_at);
CREATE INDEX idx_at_horizon_war_status_war ON war_status_history_at_horizon(war_id, recorded_at);
CREATE INDEX idx_at_horizon_war_status_territory ON war_status_history_at_horizon(territory_id, started_at);
CREATE INDEX idx_at_horizon_war_status_open ON war_status_history_at_horizon(status, war_type);
