-- PostgreSQL dialect of migrations/0005_owner_requests.sql: the requests each key owner sent in the last
-- minute. `sent` stays JSON as text (INTEGER -> bigint). See that file for what it holds.

CREATE TABLE owner_requests (
    owner text PRIMARY KEY,
    sent text NOT NULL DEFAULT '{}',
    saved_at bigint NOT NULL
);
