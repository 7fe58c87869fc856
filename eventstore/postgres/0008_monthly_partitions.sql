-- PostgreSQL dialect of migrations/0008_monthly_partitions.sql: each history table becomes a table
-- PARTITION BY RANGE on its time column, the monthly chunks of TimescaleDB's hypertables in plain PostgreSQL.
--
-- * Rows land in the month's partition (<table>_yYYYYmMM, made by the compactor for the current and next
--   month and for every month a row arrived in without one) or else in <table>_default; the compactor moves
--   a month's rows out of the default partition into their own before it prunes (eventstore/postgres/
--   partitions.py). Pruning a month detaches and drops its partition: no row-by-row delete, no index churn.
-- * Same columns, types, checks, foreign keys, indexes and views as before. Two things differ, because
--   PostgreSQL 15 requires them of a partitioned table: the primary key is (id, <time>) (a unique key must
--   hold the partition key; ids still come from one sequence, so no id is handed out twice), and id takes
--   its default from a sequence the column owns (an identity column cannot be partitioned before 17). The
--   sequence keeps the old identity's value.
-- * The rows already there move into the new table, ids and all.

CREATE FUNCTION pg_temp.partition_by_month(tbl text, time_col text) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    old text := tbl || '_unpartitioned';
    last_id bigint;
    item record;
BEGIN
    -- What is made again on the new table, read before anything moves: the views that read this table,
    -- its indexes and foreign keys (their SQL names the table, which the new one takes over).
    CREATE TEMP TABLE _again (kind text, name text, sql text);
    INSERT INTO _again
        SELECT DISTINCT 'view', v.relname, pg_get_viewdef(v.oid)
        FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
        WHERE d.refobjid = tbl::regclass AND v.relkind = 'v';
    INSERT INTO _again
        SELECT 'index', i.relname, pg_get_indexdef(i.oid)
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
        WHERE x.indrelid = tbl::regclass AND NOT x.indisprimary;
    INSERT INTO _again
        SELECT 'foreign key', c.conname, pg_get_constraintdef(c.oid)
        FROM pg_constraint c WHERE c.conrelid = tbl::regclass AND c.contype = 'f';
    EXECUTE format('SELECT CASE WHEN is_called THEN last_value END FROM %s', pg_get_serial_sequence(tbl, 'id'))
        INTO last_id;

    FOR item IN SELECT name FROM _again WHERE kind = 'view' LOOP
        EXECUTE format('DROP VIEW %I', item.name);
    END LOOP;
    EXECUTE format('ALTER TABLE %I RENAME TO %I', tbl, old);
    -- (LIKE copies the columns in order, NOT NULL, defaults and checks; not the identity)
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (%I)',
                   tbl, old, time_col);
    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', tbl || '_default', tbl);
    EXECUTE format('INSERT INTO %I SELECT * FROM %I', tbl, old);
    EXECUTE format('DROP TABLE %I', old);   -- and its identity sequence, indexes and key: their names are free

    EXECUTE format('CREATE SEQUENCE %I AS bigint OWNED BY %I.id', tbl || '_id_seq', tbl);
    EXECUTE format('ALTER TABLE %I ALTER COLUMN id SET DEFAULT nextval(%L::regclass)', tbl, tbl || '_id_seq');
    IF last_id IS NOT NULL THEN
        PERFORM setval(tbl || '_id_seq', last_id);
    END IF;
    EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (id, %I)', tbl, time_col);
    FOR item IN SELECT name, sql FROM _again WHERE kind = 'foreign key' ORDER BY name LOOP
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I %s', tbl, item.name, item.sql);
    END LOOP;
    FOR item IN SELECT sql FROM _again WHERE kind = 'index' ORDER BY name LOOP
        EXECUTE item.sql;
    END LOOP;
    FOR item IN SELECT name, sql FROM _again WHERE kind = 'view' ORDER BY name LOOP
        EXECUTE format('CREATE VIEW %I AS %s', item.name, item.sql);
    END LOOP;
    DROP TABLE _again;
END
$fn$;

SELECT pg_temp.partition_by_month('player_stats_history', 'timestamp');
SELECT pg_temp.partition_by_month('faction_history', 'timestamp');
SELECT pg_temp.partition_by_month('war_status_history', 'recorded_at');
SELECT pg_temp.partition_by_month('territory_ownership_history', 'recorded_at');
SELECT pg_temp.partition_by_month('stat_history', 'recorded_at');
DROP FUNCTION pg_temp.partition_by_month(text, text);
