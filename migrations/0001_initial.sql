-- 0001: the plan's tables plus the event log, projection bookkeeping, collector and compactor state.
--
-- Types follow the plan except where real Torn data contradicts it (names kept, type fixed):
--  * territory ids are 3-letter codes such as 'AAC' in both API versions, so every territory_id is TEXT,
--    not INTEGER;
--  * v1 says "no faction" with 0 (faction_id, co-leader, winner). Projections turn 0 into NULL before it
--    meets a foreign key: there is no faction 0;
--  * coordinates arrive as numbers in v2 and as a mix of strings ("502.67") and numbers in v1: the plan's
--    `coordinates` TEXT column keeps a normalised "x,y" and coordinate_x / coordinate_y hold the numbers;
--  * battle stats and networth exceed 2^31: SQLite INTEGER is 64-bit, which is enough.
-- All times are Unix seconds, UTC. Every time column written by tornstore comes from an event's
-- observed_at (or an explicit clock), never from the DEFAULTs below, which the plan asked for and which only
-- serve people who insert rows by hand.

CREATE TABLE schema_version (
    version INTEGER PRIMARY KEY,
    applied_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    description TEXT,
    checksum TEXT NOT NULL              -- sha256 of the migration file, checked on every open
);

-- ---------------------------------------------------------------- the event log
-- A stream is one entity's view from one kind of endpoint: ('user', '123', 'v2.profile').
CREATE TABLE streams (
    stream_id INTEGER PRIMARY KEY,
    entity_type TEXT NOT NULL,          -- user, faction, territory, rankedwar, territorywar, torn, raw
    entity_id TEXT NOT NULL,
    view TEXT NOT NULL,                 -- api version and selection, e.g. v1.profile, v2.members
    version INTEGER NOT NULL DEFAULT 0 CHECK (version >= 0),
    hash TEXT,                          -- canonical hash of the head event (hex, 128 bits)
    rules TEXT,                         -- tag of the noise rule set that made `hash`
    head_observed_at INTEGER,           -- observed_at of the head event (latest in time)
    first_seen INTEGER NOT NULL,
    last_changed INTEGER NOT NULL,
    last_checked INTEGER NOT NULL,
    UNIQUE (entity_type, entity_id, view)
);

-- position is AUTOINCREMENT so a position is never reused after pruning.
CREATE TABLE events (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id INTEGER NOT NULL REFERENCES streams(stream_id),
    version INTEGER NOT NULL CHECK (version >= 1),
    observed_at INTEGER NOT NULL,       -- when the response was fetched, never the insert clock
    hash TEXT NOT NULL,
    rules TEXT NOT NULL,
    source_url TEXT NOT NULL,           -- without key=
    payload TEXT NOT NULL,              -- JSON of the part of the response that belongs to the stream
    UNIQUE (stream_id, version)
);
CREATE INDEX idx_events_observed ON events(observed_at);
CREATE INDEX idx_events_stream_time ON events(stream_id, observed_at);  -- state in force at a time

-- Bodies that could not be stored as events, with the reason: nothing is dropped.
CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    observed_at INTEGER,
    source_url TEXT,
    reason TEXT NOT NULL,
    body TEXT NOT NULL,
    body_hash TEXT NOT NULL,            -- the same bad body seen again is not stored twice
    UNIQUE (source_url, observed_at, body_hash)
);

-- Polls that brought no data: Torn error bodies, HTTP errors, timeouts. "No data between" comes from here,
-- "unchanged since" from streams.last_checked.
CREATE TABLE gaps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    observed_at INTEGER NOT NULL,
    source_url TEXT NOT NULL,
    target TEXT,                        -- entity the poll was for, e.g. faction:9420
    error_code INTEGER,                 -- Torn error code; NULL for HTTP errors and timeouts
    reason TEXT NOT NULL
);
CREATE INDEX idx_gaps_target_time ON gaps(target, observed_at);
CREATE INDEX idx_gaps_time ON gaps(observed_at);

-- Small facts about the store as a whole, e.g. prune_horizon: detail observed before it has been folded
-- and deleted, so replay must not write history rows older than it.
CREATE TABLE store_meta (
    key TEXT PRIMARY KEY,
    value INTEGER
);

-- ---------------------------------------------------------------- projections bookkeeping
CREATE TABLE projection_checkpoints (
    projection TEXT PRIMARY KEY,
    position INTEGER NOT NULL DEFAULT 0 CHECK (position >= 0)
);

CREATE TABLE projection_errors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    projection TEXT NOT NULL,
    position INTEGER NOT NULL,
    stream TEXT NOT NULL,               -- entity_type:entity_id:view
    reason TEXT NOT NULL,
    observed_at INTEGER NOT NULL,
    UNIQUE (projection, position)
);

-- ---------------------------------------------------------------- Type 1: current state (upsert)
CREATE TABLE factions (
    faction_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    tag TEXT,
    leader_id INTEGER,
    co_leader_id INTEGER,
    respect INTEGER CHECK (respect >= 0),
    age INTEGER CHECK (age >= 0),
    best_chain INTEGER CHECK (best_chain >= 0),
    member_count INTEGER CHECK (member_count >= 0),
    is_stub INTEGER NOT NULL DEFAULT 0 CHECK (is_stub IN (0, 1)),  -- named by a player or war, not fetched yet
    created_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    last_updated INTEGER NOT NULL DEFAULT (strftime('%s', 'now'))
);
CREATE INDEX idx_factions_last_updated ON factions(last_updated);

CREATE TABLE players (
    player_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    level INTEGER CHECK (level >= 1),
    rank TEXT,
    faction_id INTEGER,                 -- NULL when factionless (v1 sends 0)
    status_state TEXT,
    status_description TEXT,            -- live column: refreshed on every poll
    life_current INTEGER CHECK (life_current >= 0),
    life_maximum INTEGER CHECK (life_maximum > 0),
    last_action_status TEXT,            -- live column
    last_action_at INTEGER,             -- live column
    created_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    last_updated INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    FOREIGN KEY (faction_id) REFERENCES factions(faction_id)
);
CREATE INDEX idx_players_faction ON players(faction_id);
CREATE INDEX idx_players_last_updated ON players(last_updated);

-- Current state of each territory (not in the plan: the plan keeps territories only as history; the
-- projection needs the state the next history row starts from, and bots ask "who owns AAC now").
CREATE TABLE territories (
    territory_id TEXT PRIMARY KEY,
    faction_id INTEGER,
    sector TEXT,
    coordinates TEXT,
    coordinate_x REAL,
    coordinate_y REAL,
    racket_level INTEGER CHECK (racket_level >= 0),
    racket_type TEXT,
    war_status TEXT NOT NULL DEFAULT 'none' CHECK (war_status IN ('none', 'under_attack', 'defending')),
    last_updated INTEGER NOT NULL,
    FOREIGN KEY (faction_id) REFERENCES factions(faction_id)
);
CREATE INDEX idx_territories_faction ON territories(faction_id);

-- ---------------------------------------------------------------- Type 2: history (append-only)
CREATE TABLE player_stats_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    player_id INTEGER NOT NULL,
    timestamp INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    strength INTEGER CHECK (strength >= 0),
    defense INTEGER CHECK (defense >= 0),
    speed INTEGER CHECK (speed >= 0),
    dexterity INTEGER CHECK (dexterity >= 0),
    total_stats INTEGER CHECK (total_stats >= 0),
    level INTEGER CHECK (level >= 1),
    life_maximum INTEGER CHECK (life_maximum > 0),
    networth INTEGER,
    event_position INTEGER,             -- the event that made this row
    FOREIGN KEY (player_id) REFERENCES players(player_id)
);
CREATE INDEX idx_player_stats_player_time ON player_stats_history(player_id, timestamp DESC);
CREATE INDEX idx_player_stats_timestamp ON player_stats_history(timestamp);

CREATE TABLE war_status_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    war_id INTEGER NOT NULL,
    war_type TEXT NOT NULL CHECK (war_type IN ('territory', 'ranked')),
    territory_id TEXT,                  -- 3-letter code; NULL for ranked wars
    attacking_faction_id INTEGER,
    defending_faction_id INTEGER,
    attacking_score INTEGER CHECK (attacking_score >= 0),
    defending_score INTEGER CHECK (defending_score >= 0),
    required_score INTEGER CHECK (required_score >= 0),
    status TEXT CHECK (status IN ('ongoing', 'completed', 'cancelled')),
    started_at INTEGER,
    ends_at INTEGER,
    winner_faction_id INTEGER,          -- NULL while unresolved
    recorded_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    event_position INTEGER,
    FOREIGN KEY (attacking_faction_id) REFERENCES factions(faction_id),
    FOREIGN KEY (defending_faction_id) REFERENCES factions(faction_id),
    FOREIGN KEY (winner_faction_id) REFERENCES factions(faction_id)
);
CREATE INDEX idx_war_status_war_time ON war_status_history(war_id, recorded_at DESC);
CREATE INDEX idx_war_status_territory ON war_status_history(territory_id, recorded_at);
CREATE INDEX idx_war_status_timestamp ON war_status_history(recorded_at);
CREATE INDEX idx_war_status_territory_start ON war_status_history(territory_id, started_at);  -- id-less v1 wars

CREATE TABLE territory_ownership_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    territory_id TEXT NOT NULL,         -- 3-letter code
    faction_id INTEGER,                 -- NULL if unowned
    sector TEXT,
    coordinates TEXT,
    coordinate_x REAL,
    coordinate_y REAL,
    racket_level INTEGER CHECK (racket_level >= 0),
    racket_type TEXT,
    war_status TEXT CHECK (war_status IN ('none', 'under_attack', 'defending')),
    recorded_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    event_position INTEGER,
    FOREIGN KEY (faction_id) REFERENCES factions(faction_id)
);
CREATE INDEX idx_territory_ownership_territory_time ON territory_ownership_history(territory_id, recorded_at DESC);
CREATE INDEX idx_territory_ownership_faction ON territory_ownership_history(faction_id, recorded_at);
CREATE INDEX idx_territory_ownership_timestamp ON territory_ownership_history(recorded_at);

CREATE TABLE faction_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    faction_id INTEGER NOT NULL,
    timestamp INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    respect INTEGER CHECK (respect >= 0),
    member_count INTEGER CHECK (member_count >= 0),
    best_chain INTEGER CHECK (best_chain >= 0),
    event_position INTEGER,
    FOREIGN KEY (faction_id) REFERENCES factions(faction_id)
);
CREATE INDEX idx_faction_history_faction_time ON faction_history(faction_id, timestamp DESC);
CREATE INDEX idx_faction_history_timestamp ON faction_history(timestamp);

-- ---------------------------------------------------------------- Type 3: monthly summaries (kept forever)
CREATE TABLE player_stats_summary (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    player_id INTEGER NOT NULL,
    period_start INTEGER NOT NULL,
    period_end INTEGER NOT NULL,
    period_type TEXT NOT NULL DEFAULT 'monthly',
    strength_start INTEGER, strength_end INTEGER, strength_change INTEGER,
    defense_start INTEGER, defense_end INTEGER, defense_change INTEGER,
    speed_start INTEGER, speed_end INTEGER, speed_change INTEGER,
    dexterity_start INTEGER, dexterity_end INTEGER, dexterity_change INTEGER,
    total_stats_start INTEGER, total_stats_end INTEGER, total_stats_change INTEGER,
    level_start INTEGER, level_end INTEGER, level_change INTEGER,
    life_maximum_start INTEGER, life_maximum_end INTEGER,
    networth_start INTEGER, networth_end INTEGER, networth_change INTEGER,
    record_count INTEGER CHECK (record_count >= 0),
    created_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    FOREIGN KEY (player_id) REFERENCES players(player_id),
    UNIQUE (player_id, period_start, period_end, period_type)
);
CREATE INDEX idx_player_stats_summary_player_period ON player_stats_summary(player_id, period_start, period_end);
CREATE INDEX idx_player_stats_summary_period_type ON player_stats_summary(period_type, period_start);

CREATE TABLE war_summary (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    war_id INTEGER NOT NULL,
    war_type TEXT NOT NULL CHECK (war_type IN ('territory', 'ranked')),
    territory_id TEXT,                  -- 3-letter code; NULL for ranked wars
    period_start INTEGER NOT NULL,
    period_end INTEGER NOT NULL,
    period_type TEXT NOT NULL DEFAULT 'monthly',
    attacking_faction_id INTEGER,
    defending_faction_id INTEGER,
    final_attacking_score INTEGER,
    final_defending_score INTEGER,
    winner_faction_id INTEGER,
    duration_seconds INTEGER CHECK (duration_seconds >= 0),
    record_count INTEGER CHECK (record_count >= 0),
    created_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    FOREIGN KEY (attacking_faction_id) REFERENCES factions(faction_id),
    FOREIGN KEY (defending_faction_id) REFERENCES factions(faction_id),
    FOREIGN KEY (winner_faction_id) REFERENCES factions(faction_id),
    -- war_type is in the key (the plan's key lacks it): ranked and territory wars are numbered apart by
    -- Torn, so one id can name one of each in the same month.
    UNIQUE (war_id, war_type, period_start, period_end, period_type)
);
CREATE INDEX idx_war_summary_war_period ON war_summary(war_id, period_start, period_end);
CREATE INDEX idx_war_summary_territory ON war_summary(territory_id, period_start);

CREATE TABLE territory_ownership_summary (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    territory_id TEXT NOT NULL,         -- 3-letter code
    period_start INTEGER NOT NULL,
    period_end INTEGER NOT NULL,
    period_type TEXT NOT NULL DEFAULT 'monthly',
    faction_id_start INTEGER,
    faction_id_end INTEGER,
    ownership_changes INTEGER CHECK (ownership_changes >= 0),
    days_owned INTEGER CHECK (days_owned >= 0),
    record_count INTEGER CHECK (record_count >= 0),
    created_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    FOREIGN KEY (faction_id_start) REFERENCES factions(faction_id),
    FOREIGN KEY (faction_id_end) REFERENCES factions(faction_id),
    UNIQUE (territory_id, period_start, period_end, period_type)
);
CREATE INDEX idx_territory_summary_territory_period ON territory_ownership_summary(territory_id, period_start, period_end);
CREATE INDEX idx_territory_summary_faction ON territory_ownership_summary(faction_id_end, period_start);

CREATE TABLE faction_summary (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    faction_id INTEGER NOT NULL,
    period_start INTEGER NOT NULL,
    period_end INTEGER NOT NULL,
    period_type TEXT NOT NULL DEFAULT 'monthly',
    respect_start INTEGER, respect_end INTEGER, respect_change INTEGER,
    member_count_start INTEGER, member_count_end INTEGER, member_count_change INTEGER,
    best_chain_start INTEGER, best_chain_end INTEGER, best_chain_change INTEGER,
    record_count INTEGER CHECK (record_count >= 0),
    created_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    FOREIGN KEY (faction_id) REFERENCES factions(faction_id),
    UNIQUE (faction_id, period_start, period_end, period_type)
);
CREATE INDEX idx_faction_summary_faction_period ON faction_summary(faction_id, period_start, period_end);
CREATE INDEX idx_faction_summary_period_type ON faction_summary(period_type, period_start);

-- ---------------------------------------------------------------- compactor
-- One row per closed month: folded (summaries written), pruned (detail deleted), stale (late data landed
-- after the fold; the next run folds it again).
CREATE TABLE compaction_ledger (
    period_start INTEGER PRIMARY KEY,
    period_end INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('folded', 'pruned', 'stale')),
    covered_position INTEGER NOT NULL,  -- highest event position the fold saw
    summary_rows INTEGER NOT NULL DEFAULT 0,
    pruned_events INTEGER NOT NULL DEFAULT 0,
    pruned_history_rows INTEGER NOT NULL DEFAULT 0,
    folded_at INTEGER,
    pruned_at INTEGER
);

CREATE TABLE backups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    bytes INTEGER,
    reason TEXT
);

-- ---------------------------------------------------------------- collector
-- Keys are known by fingerprint only; the key itself is never stored.
CREATE TABLE api_keys (
    fingerprint TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused', 'disabled')),
    paused_until INTEGER,
    recheck_at INTEGER,
    last_error_code INTEGER,
    last_error_at INTEGER,
    last_used_at INTEGER,
    requests INTEGER NOT NULL DEFAULT 0,
    reason TEXT
);

-- Targets the API said do not exist (6) or are not visible to our keys (7, 16), reported once each.
CREATE TABLE target_problems (
    target TEXT NOT NULL,
    error_code INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    count INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (target, error_code)
);
