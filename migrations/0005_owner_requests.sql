-- 0005: the requests each key owner sent in the last minute, so the 100 a minute survive a restart.
--
-- Torn allows 100 requests a rolling minute per key owner (a user, across all of their keys). The collector
-- kept that window in memory only: two `collect --once` runs back to back sent more than 100 in a minute and
-- met code 5. It now saves, with the key state (api_keys) at each flush and at close, the Unix times of the
-- requests it sent per owner, and loads the last 60 s of them at start.
--  * owner: as in api_keys.owner (a Torn user id, or the name the config gives);
--  * sent: a JSON object, key fingerprint -> Unix times (seconds, to the millisecond) of the requests sent
--    with that key in the last 60 s. Never a key: fingerprints only ('k:' and 8 hex digits);
--  * saved_at: the saving collector's clock (Unix seconds).
-- A save adds a collector's own new times to the row and drops those older than 60 s, so collectors that
-- share an owner (a bot and a collector) count together. A time ahead of the saving clock (the clock was
-- set back) is kept as "just now": it ages out after a minute, not after the clock catches up.
CREATE TABLE owner_requests (
    owner TEXT PRIMARY KEY,
    sent TEXT NOT NULL DEFAULT '{}',
    saved_at INTEGER NOT NULL
);
