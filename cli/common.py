"""What every command shares: the --db option, one-line errors, tables for people and JSON for programs."""
from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import wraps
from typing import IO, Any

import click


class UserError(click.ClickException):
    """A mistake the user can fix: printed as one line, exit code 1, never a traceback."""

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


def _set_db(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(dict)["db"] = value


def db_option(fn: Callable) -> Callable:
    """`--db PATH` after the command name too: `tornstore status --db x.db` works as `tornstore --db x.db status`.

    The group's --db (or TORNSTORE_DB) fills ctx.obj["db"]; this one, given after the command, replaces it.
    It reads no environment variable itself, so TORNSTORE_DB never overrides a --db typed on the line.
    """
    return click.option("--db", metavar="PATH", expose_value=False, callback=_set_db,
                        help="SQLite database file, or a postgresql://user@host/db URL (may also come before "
                             "the command, or from TORNSTORE_DB; this one wins).")(fn)


def db_path(ctx: click.Context) -> str:
    path = ctx.obj.get("db") if ctx.obj else None
    if not path:
        raise UserError("no database given: use --db PATH or set TORNSTORE_DB")
    return path


def existing_db(ctx: click.Context) -> str:
    path = db_path(ctx)
    from tornstore.eventstore import db
    try:
        there = db.exists(path)
    except sqlite3.DatabaseError as exc:
        raise UserError(str(exc)) from None
    if not there:
        raise UserError(f"no database at {db.describe(path)}: create it with `tornstore --db {db.describe(path)} init`")
    return path


def run_async(coro):
    """Run a coroutine from a command; known failures become one clear line."""
    try:
        return asyncio.run(coro)
    except UserError:
        raise
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    except OverflowError:
        raise UserError("a number is out of range (the store's integers are 64-bit)") from None
    except sqlite3.DatabaseError as exc:
        raise UserError(f"database error: {exc}") from None


def friendly_errors(fn: Callable) -> Callable:
    """Turn the library's own error types into one-line messages for the user."""
    from tornstore.eventstore.migrate import MigrationError

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MigrationError as exc:
            raise UserError(str(exc)) from None
        except OverflowError:
            raise UserError("a number is out of range (the store's integers are 64-bit)") from None
        except sqlite3.DatabaseError as exc:
            raise UserError(f"database error: {exc}") from None
    return wrapper


def json_option(fn: Callable) -> Callable:
    """`--json`: the command's result as one JSON document on stdout (and nothing else on stdout)."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")(fn)


def progress_option(fn: Callable) -> Callable:
    return click.option("--progress/--no-progress", default=None,
                        help="Progress on stderr (default: only when stderr is a terminal).")(fn)


class StageBars:
    """One click progress bar per stage on stderr, only when stderr is a terminal: the `progress(stage, done,
    total)` callback of the library's multi-stage work (compact's stages, copy's tables). Call `close()` at
    the end."""

    def __init__(self, label_width: int = 14):
        self.enabled = sys.stderr.isatty()
        self.label_width = label_width
        self.stage: str | None = None
        self.bar: Any = None   # click's progress bar while a stage runs
        self.done = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self.stage:
            self.close()
            self.stage, self.done = stage, 0
            self.bar = click.progressbar(length=max(total, 1), label=stage.ljust(self.label_width),
                                         file=sys.stderr, show_eta=True, show_pos=True)
            self.bar.__enter__()
        if done > self.done and self.bar is not None:
            self.bar.update(done - self.done)
            self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


class Progress:
    """Progress on stderr, never stdout: a bar on a terminal; where stderr is not one, plain count lines
    (at most one a second, and the last) when --progress asks for them; otherwise nothing.

    Use as a context manager; `update(n)` is the `progress` callback the library functions take.
    """

    def __init__(self, label: str, total: int, wanted: bool | None, *, every: float = 1.0):
        terminal = sys.stderr.isatty()
        self.enabled = terminal if wanted is None else wanted
        self.label, self.total, self.done = label, total, 0
        self.every, self.last = every, float("-inf")
        self.bar = None
        if self.enabled and terminal:
            self.bar = click.progressbar(length=max(total, 1), label=label, file=sys.stderr, show_pos=True,
                                         show_eta=True)

    def __enter__(self) -> Progress:
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def update(self, n: int) -> None:
        if not self.enabled:
            return
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line()

    def _line(self) -> None:
        share = min(100, 100 * self.done // self.total) if self.total else 100
        click.echo(f"{self.label}: {self.done:,}/{self.total:,} ({share}%)", err=True)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
        elif self.enabled and exc[0] is None:
            self._line()


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@contextlib.contextmanager
def output_to(output: str, *, binary: bool) -> Iterator[Any]:
    """Where a command writes its data: stdout for "-", else the file. A reader that goes away
    (`| head`) stops the command quietly; a file that cannot be written is one Error: line."""
    try:
        if output == "-":
            stream = sys.stdout.buffer if binary else sys.stdout
            yield stream
            stream.flush()
        elif binary:
            with open(output, "wb") as out:
                yield out
        else:
            with open(output, "w", newline="", encoding="utf-8") as out:
                yield out
    except BrokenPipeError:
        stdout_closed()
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror or exc}") from None


def stdout_closed() -> None:
    """The reader of stdout went away (`tornstore export wars | head`): stop quietly, as Unix tools do.

    Python's recipe (docs of the signal module, "Note on SIGPIPE"): point stdout at /dev/null so the
    flush at exit cannot fail again, then exit 1 without a message.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file behind stdout (a test runner's capture)
        pass
    sys.exit(1)


def utc_iso(ts: int | None) -> str:
    """Unix seconds as a readable UTC time, 2025-11-25T19:46:40Z ('' for none or out of range)."""
    if ts is None:
        return ""
    try:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return ""


def csv_writer(out: IO[str]):
    """A csv.writer for spreadsheets: a header row first, '\n' line ends, None written as an empty cell."""
    return csv.writer(out, lineterminator="\n")


def emit_table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> None:
    """A plain aligned text table (no dependency), None shown as '-'."""
    rows = [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    click.echo(line)
    click.echo("  ".join("-" * w for w in widths))
    for row in rows:
        click.echo("  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(row, widths, strict=True)))


def emit_record(record: dict[str, Any]) -> None:
    """A key: value listing for one object."""
    width = max((len(k) for k in record), default=0)
    for key, value in record.items():
        click.echo(f"{key.ljust(width)}  {'-' if value is None else value}")


def _numeric(value: str) -> bool:
    try:
        float(value.replace(",", ""))
        return True
    except ValueError:
        return False


def env_db() -> str | None:
    return os.environ.get("TORNSTORE_DB")
