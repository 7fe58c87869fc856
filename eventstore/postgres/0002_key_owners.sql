-- PostgreSQL 0002: who owns each key (SQLite 0003's key_owners), by fingerprint only, never the key.
-- Own-key URLs (`/v2/user/bars`, v1 `user/?selections=personalstats`) name their entity only through it;
-- bodies that waited in quarantine for an owner (quarantine.needs_owner = 1) are routed once it is known.
CREATE TABLE key_owners (
    key_fp text PRIMARY KEY,              -- 'k:' and 8 hex digits of the key's sha256
    player_id bigint NOT NULL,
    faction_id bigint,                    -- 0: in no faction; NULL: not known yet
    learned_at bigint NOT NULL,           -- observed_at of the response it was learned from
    source_url text NOT NULL
);
