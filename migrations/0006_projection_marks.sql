-- 0006: each projection's newest observation, beside its checkpoint.
--
-- The checkpoint says how far in the log a projection has come (a position); the projected tables must not
-- depend on the order in which observations arrived, only on their times. The wars and territories
-- projections read one another's rows and lists of many entities, so when an observation arrives older than
-- the newest one they have folded (two collectors, a capture ingested after live polls), they fold every
-- event from its time on again, in time order (projections/runner.py). `newest_observed_at` is that newest
-- time: NULL until the projection folds its next batch (it is then read from the log once).
ALTER TABLE projection_checkpoints ADD COLUMN newest_observed_at INTEGER;
