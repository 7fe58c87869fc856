"""`tornstore export history|wars|summaries --csv [-o FILE]`: tables as CSV for spreadsheets.

Every column of the table but its row id, in the table's order; each Unix-seconds column is followed by a
readable UTC twin (`timestamp`, `timestamp_utc`). Exporting several tables into one file puts a `table`
column first and the union of their columns after it (a cell is empty where a table has no such column).
"""
from __future__ import annotations

from collections.abc import Iterator

import click

from tornstore.eventstore import db
from tornstore.eventstore.migrate import migrate

from .common import csv_writer, db_option, emit_json, existing_db, friendly_errors, output_to, utc_iso

# The tables of each family, and the order their rows come out in (entity, then time).
FAMILIES: dict[str, dict[str, str]] = {
    "history": {
        "player_stats_history": "player_id, timestamp, id",
        "faction_history": "faction_id, timestamp, id",
        "territory_ownership_history": "territory_id, recorded_at, id",
    },
    "wars": {
        "war_status_history": "war_id, war_type, recorded_at, id",
    },
    "summaries": {
        "player_stats_summary": "player_id, period_start, id",
        "faction_summary": "faction_id, period_start, id",
        "war_summary": "war_id, war_type, period_start, id",
        "territory_ownership_summary": "territory_id, period_start, id",
    },
}
# Columns holding Unix seconds: each gets a `<name>_utc` column beside it.
TIME_COLUMNS = {"timestamp", "recorded_at", "started_at", "ends_at", "period_start", "period_end", "created_at"}


def export_columns(conn, tables: list[str]) -> list[str]:
    """The CSV header for these tables: a `table` column when there are several, then the union of their
    columns (row ids left out), each time column followed by its `_utc` twin."""
    columns: list[str] = ["table"] if len(tables) > 1 else []
    for table in tables:
        for name in [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]:
            if name == "id" or name in columns:
                continue
            columns.append(name)
            if name in TIME_COLUMNS:
                columns.append(f"{name}_utc")
    return columns


def export_rows(conn, family: str, tables: list[str], columns: list[str]) -> Iterator[tuple[str, list]]:
    """(table, CSV row) for every row of these tables, in FAMILIES order; streamed, never all in memory."""
    for table in tables:
        cursor = conn.execute(f"SELECT * FROM {table} ORDER BY {FAMILIES[family][table]}")  # names from FAMILIES
        names = [d[0] for d in cursor.description]
        for row in cursor:
            values = dict(zip(names, row, strict=True))
            values["table"] = table
            for name in TIME_COLUMNS.intersection(names):
                values[f"{name}_utc"] = utc_iso(values[name])
            yield table, [values.get(c) for c in columns]


def _export(ctx: click.Context, family: str, table: str | None, output: str, as_json: bool) -> None:
    if as_json and output == "-":
        raise click.UsageError("--json needs -o FILE: without it stdout carries the CSV")
    path = existing_db(ctx)
    tables = [table] if table else list(FAMILIES[family])
    conn = db.connect_sync(path)
    counts = dict.fromkeys(tables, 0)
    try:
        migrate(conn)
        columns = export_columns(conn, tables)

        def write(out) -> None:
            writer = csv_writer(out)
            writer.writerow(columns)
            for name, row in export_rows(conn, family, tables, columns):
                writer.writerow(row)
                counts[name] += 1

        with output_to(output, binary=False) as out:
            write(out)
    finally:
        db.close_sync(conn)
    if as_json:
        emit_json({"database": path, "output": output, "columns": columns, "tables": counts,
                   "rows": sum(counts.values())})
    elif output != "-":
        click.echo(f"wrote {sum(counts.values())} rows to {output} "
                   f"({', '.join(f'{t}: {n}' for t, n in counts.items())})", err=True)


def _options(family: str, table_help: str | None):
    def decorate(fn):
        fn = friendly_errors(fn)
        fn = click.pass_context(fn)
        fn = db_option(fn)
        fn = click.option("--json", "as_json", is_flag=True,
                          help="After writing -o FILE, print what was written (rows per table) as JSON.")(fn)
        fn = click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), default="-",
                          show_default=True, help="File to write ('-' for stdout).")(fn)
        fn = click.option("--csv", "as_csv", is_flag=True, default=True,
                          help="CSV with a header row (the only format, and the default).")(fn)
        if table_help:
            fn = click.option("--table", type=click.Choice(list(FAMILIES[family])), metavar="TABLE",
                              help=table_help)(fn)
        return fn
    return decorate


@click.group()
def export() -> None:
    """Write tables as CSV for spreadsheets: history rows, war snapshots, monthly summaries.

    A header row, then one row per table row; every Unix-seconds column is followed by a readable UTC
    column (timestamp, timestamp_utc = 2025-11-25T19:46:40Z). Several tables in one file get a `table`
    column first; --table picks one.

    \b
    Examples:
      tornstore --db torn.db export history --csv -o history.csv
      tornstore --db torn.db export history --table faction_history --csv > factions.csv
      tornstore --db torn.db export wars --csv -o wars.csv
      tornstore --db torn.db export summaries --table player_stats_summary --csv -o months.csv --json
    """


@export.command("history")
@_options("history", "Only this table: " + ", ".join(FAMILIES["history"]) + " (default: all three).")
def export_history(ctx: click.Context, table: str | None, as_csv: bool, output: str, as_json: bool) -> None:
    """History rows (player_stats_history, faction_history, territory_ownership_history) as CSV.

    Ranked and territory war snapshots are `export wars`.

    \b
    Examples:
      tornstore --db torn.db export history --csv -o history.csv
      tornstore --db torn.db export history --table player_stats_history --csv > stats.csv
    """
    _export(ctx, "history", table, output, as_json)


@export.command("wars")
@_options("wars", None)
def export_wars(ctx: click.Context, as_csv: bool, output: str, as_json: bool) -> None:
    """War snapshots (war_status_history) as CSV: scores, status, winner, start and end times.

    \b
    Examples:
      tornstore --db torn.db export wars --csv -o wars.csv
      tornstore --db torn.db export wars --csv | grep ',completed,'
    """
    _export(ctx, "wars", None, output, as_json)


@export.command("summaries")
@_options("summaries", "Only this table: " + ", ".join(FAMILIES["summaries"]) + " (default: all four).")
def export_summaries(ctx: click.Context, table: str | None, as_csv: bool, output: str, as_json: bool) -> None:
    """Monthly summaries (the *_summary tables the compactor keeps forever) as CSV.

    \b
    Examples:
      tornstore --db torn.db export summaries --csv -o summaries.csv
      tornstore --db torn.db export summaries --table faction_summary --csv -o factions.csv --json
    """
    _export(ctx, "summaries", table, output, as_json)


def register(group: click.Group) -> None:
    group.add_command(export)
