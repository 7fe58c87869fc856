-- PostgreSQL dialect of migrations/0003_key_owners.sql: key_owners, and quarantine's key_fp / needs_owner
-- with the partial index. INTEGER -> bigint; needs_owner stays a 0/1 integer as in SQLite (the code compares
-- it with = 1), not a boolean. See that file for what they are for.

CREATE TABLE key_owners (
    key_fp text PRIMARY KEY,              -- 'k:' and 8 hex digits of the key's sha256
    player_id bigint NOT NULL,
    faction_id bigint,                    -- 0: in no faction; NULL: not known yet
    learned_at bigint NOT NULL,           -- observed_at of the response it was learned from
    source_url text NOT NULL
);

-- A quarantined body that only lacked its owner is kept with the key's fingerprint, so it can be routed
-- once the owner is known (`tornstore quarantine retry`, or the next /v2/key/info made with that key).
ALTER TABLE quarantine ADD COLUMN key_fp text;
ALTER TABLE quarantine ADD COLUMN needs_owner bigint NOT NULL DEFAULT 0;
CREATE INDEX idx_quarantine_needs_owner ON quarantine(key_fp) WHERE needs_owner = 1;
