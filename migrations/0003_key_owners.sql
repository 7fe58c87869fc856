-- Own-key URLs (`/v2/user/bars`, `/v2/faction/members`, v1 `user/?selections=personalstats`) name no
-- entity: the key's owner is the entity. The store learns each key's owner from responses made with it
-- (`/v2/key/info`, an own profile) and keeps it here, by the key's fingerprint: never the key itself.
CREATE TABLE key_owners (
    key_fp TEXT PRIMARY KEY,              -- 'k:' and 8 hex digits of the key's sha256
    player_id INTEGER NOT NULL,
    faction_id INTEGER,                   -- 0: in no faction; NULL: not known yet
    learned_at INTEGER NOT NULL,          -- observed_at of the response it was learned from
    source_url TEXT NOT NULL
);

-- A quarantined body that only lacked its owner is kept with the key's fingerprint, so it can be routed
-- once the owner is known (`tornstore quarantine retry`, or the next /v2/key/info made with that key).
ALTER TABLE quarantine ADD COLUMN key_fp TEXT;
ALTER TABLE quarantine ADD COLUMN needs_owner INTEGER NOT NULL DEFAULT 0;
CREATE INDEX idx_quarantine_needs_owner ON quarantine(key_fp) WHERE needs_owner = 1;
