"""Monthly partitions of the history tables on PostgreSQL (migration 0008): time chunks, pruned by dropping.

Each history table is `PARTITION BY RANGE` on its time column with one partition per UTC month,
`<table>_yYYYYmMM` for [first second of the month, first second of the next), and `<table>_default` for rows of
a month without a partition yet. A partition cannot be made for a month while the default partition holds rows
of it, so making one moves those rows across, in the caller's transaction (the compactor's, under the write
lock). Dropping a month's partition is what a prune of that month does to history: no delete row by row, no
index to rewrite, the space back to the file system at once. (A month whose rows still sit in the default
partition when it is pruned, because no compactor ran while it was current, is deleted there instead.)

Plain functions over a connection from eventstore.db (the sqlite3-shaped adapter); the callers choose months
and hold the transaction.
"""
from __future__ import annotations

import sqlite3
import time

DEFAULT = "_default"


def partition_name(table: str, start: int) -> str:
    return time.strftime(f"{table}_y%Ym%m", time.gmtime(start))


def is_partitioned(conn: sqlite3.Connection, table: str) -> bool:
    row = conn.execute("SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname = 'public' AND c.relname = ?", (table,)).fetchone()
    return bool(row) and row[0] == "p"


def months(conn: sqlite3.Connection, table: str) -> dict[int, str]:
    """month start -> partition name, for every monthly partition `table` has."""
    rows = conn.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = CAST(? AS regclass)", (f"public.{table}",))
    out = {}
    for name, bound in rows:
        # FOR VALUES FROM ('1727740800') TO ('1730419200'), or DEFAULT
        if bound.startswith("FOR VALUES FROM"):
            out[int(bound.split("(", 1)[1].split(")", 1)[0].strip("'"))] = name
    return out


def months_in_default(conn: sqlite3.Connection, table: str, column: str) -> list[tuple[int, int]]:
    """The UTC months rows of `table` in its default partition fall in: (first second, first second of the
    next month), oldest first."""
    month = f"date_trunc('month', to_timestamp({column}) AT TIME ZONE 'UTC')"
    return [tuple(r) for r in conn.execute(
        f"SELECT DISTINCT CAST(extract(epoch FROM {month}) AS bigint), "
        f"CAST(extract(epoch FROM {month} + interval '1 month') AS bigint) FROM {table}{DEFAULT} ORDER BY 1")]


def ensure_month(conn: sqlite3.Connection, table: str, column: str, start: int, end: int) -> str:
    """Inside the caller's transaction: the partition of the month [start, end), made if missing, with the rows
    of that month the default partition held moved into it (ids and all). Returns its name."""
    have = months(conn, table)
    if start in have:
        return have[start]
    name = partition_name(table, start)
    moving = f"_moving_{table}"
    conn.execute(f"DROP TABLE IF EXISTS pg_temp.{moving}")
    conn.execute(f"CREATE TEMP TABLE {moving} (LIKE {table})")
    conn.execute(f"WITH gone AS (DELETE FROM {table}{DEFAULT} WHERE {column} >= ? AND {column} < ? RETURNING *) "
                 f"INSERT INTO pg_temp.{moving} SELECT * FROM gone", (start, end))
    conn.execute(f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM ({int(start)}) TO ({int(end)})")
    conn.execute(f"INSERT INTO {table} SELECT * FROM pg_temp.{moving}")
    conn.execute(f"DROP TABLE pg_temp.{moving}")
    return name


def drop_month(conn: sqlite3.Connection, table: str, start: int) -> int | None:
    """Inside the caller's transaction: every row of `table` in the month starting at `start` gone, by detaching
    and dropping the month's partition. Returns the rows it held, or None when the month has no partition (its
    rows, if any, are in the default partition: the caller deletes them there)."""
    name = months(conn, table).get(start)
    if name is None:
        return None
    rows = conn.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
    conn.execute(f"ALTER TABLE {table} DETACH PARTITION {name}")
    conn.execute(f"DROP TABLE {name}")
    return rows


def maintain(conn: sqlite3.Connection, tables: list[tuple[str, str]], wanted: list[tuple[int, int]],
             keep_from: int) -> list[str]:
    """Inside the caller's transaction: for each (table, time column), a partition for each month [start, end)
    in `wanted` (the compactor asks for this month and the next, so new rows land in their own) and for every
    month from `keep_from` on whose rows wait in the default partition. (Rows of older months stay there: they
    are pruned soon, and deleting them costs less than moving them first.) Returns the partitions made."""
    made = []
    for table, column in tables:
        if not is_partitioned(conn, table):
            continue
        have = months(conn, table)
        waiting = [m for m in months_in_default(conn, table, column) if m[0] >= keep_from]
        for start, end in sorted({*waiting, *wanted}):
            if start not in have:
                made.append(ensure_month(conn, table, column, start, end))
    return made
