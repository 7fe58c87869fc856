-- PostgreSQL 0001: the event log (streams, events, gaps, quarantine), with the columns and meaning of the
-- SQLite migrations (0001, and 0003's quarantine.key_fp / needs_owner). Projection tables come with the rest
-- of issue 18; this line of migrations is numbered on its own until then.
--
-- Types: every time is Unix seconds, UTC, as bigint; ids and versions are bigint (SQLite INTEGER is 64-bit).
-- events.payload is text, not jsonb: the text is exactly what was hashed and what replay reads back (jsonb
-- would reorder keys, drop duplicate ones and rewrite numbers such as 1e300 into 301 digits that decode as an
-- integer, so a payload read back could hash differently); `payload::jsonb` serves ad-hoc queries.

CREATE TABLE schema_version (
    version integer PRIMARY KEY,
    applied_at bigint NOT NULL DEFAULT (extract(epoch FROM now())::bigint),
    description text,
    checksum text NOT NULL              -- sha256 of the migration file, checked on every open
);

-- A stream is one entity's view from one kind of endpoint: ('user', '123', 'v2.profile').
CREATE TABLE streams (
    stream_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity_type text NOT NULL,          -- user, faction, territory, rankedwar, territorywar, torn, raw
    entity_id text NOT NULL,
    view text NOT NULL,                 -- api version and selection, e.g. v1.profile, v2.members
    version bigint NOT NULL DEFAULT 0 CHECK (version >= 0),
    hash text,                          -- canonical hash of the head event (hex, 128 bits)
    rules text,                         -- tag of the noise rule set that made `hash`
    head_observed_at bigint,            -- observed_at of the head event (latest in time)
    first_seen bigint NOT NULL,
    last_changed bigint NOT NULL,
    last_checked bigint NOT NULL,
    UNIQUE (entity_type, entity_id, view)
);

-- The last event position handed out: one row, what SQLite's sqlite_sequence is for AUTOINCREMENT (a position
-- is never reused after pruning). A writer takes its positions with UPDATE ... RETURNING, which locks the row
-- until the writer commits: positions are gapless (a rollback gives them back) and committed in order, so a
-- reader following `position > last seen` never skips one (see eventstore/postgres/log.py).
CREATE TABLE log_position (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last_position bigint NOT NULL DEFAULT 0 CHECK (last_position >= 0)
);
INSERT INTO log_position (only_row, last_position) VALUES (true, 0);

CREATE TABLE events (
    position bigint PRIMARY KEY CHECK (position >= 1),   -- from log_position, never from a sequence
    stream_id bigint NOT NULL REFERENCES streams(stream_id),
    version bigint NOT NULL CHECK (version >= 1),
    observed_at bigint NOT NULL,        -- when the response was fetched, never the insert clock
    hash text NOT NULL,
    rules text NOT NULL,
    source_url text NOT NULL,           -- without key=
    payload text NOT NULL,              -- JSON of the part of the response that belongs to the stream
    UNIQUE (stream_id, version)
);
CREATE INDEX idx_events_observed ON events(observed_at);
CREATE INDEX idx_events_stream_time ON events(stream_id, observed_at);  -- state in force at a time

-- Bodies that could not be stored as events, with the reason: nothing is dropped.
CREATE TABLE quarantine (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    observed_at bigint,
    source_url text,
    reason text NOT NULL,
    body text NOT NULL,
    body_hash text NOT NULL,            -- the same bad body seen again is not stored twice
    key_fp text,                        -- fingerprint of the key that made it, never the key
    needs_owner integer NOT NULL DEFAULT 0 CHECK (needs_owner IN (0, 1)),  -- waits for its key's owner
    UNIQUE (source_url, observed_at, body_hash)
);
CREATE INDEX idx_quarantine_needs_owner ON quarantine(key_fp) WHERE needs_owner = 1;

-- Polls that brought no data: Torn error bodies, HTTP errors, timeouts.
CREATE TABLE gaps (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    observed_at bigint NOT NULL,
    source_url text NOT NULL,
    target text,                        -- entity the poll was for, e.g. faction:9420
    error_code bigint,                  -- Torn error code; NULL for HTTP errors and timeouts
    reason text NOT NULL
);
CREATE INDEX idx_gaps_target_time ON gaps(target, observed_at);
CREATE INDEX idx_gaps_time ON gaps(observed_at);
