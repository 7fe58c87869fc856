-- PostgreSQL dialect of migrations/0006_projection_marks.sql: each projection's newest observation, beside
-- its checkpoint (INTEGER -> bigint). See that file for what it is for.

ALTER TABLE projection_checkpoints ADD COLUMN newest_observed_at bigint;
