"""A PostgreSQL connection that the store's synchronous code can use as it uses a `sqlite3.Connection`.

The store does its work as plain functions over a DB-API connection (`conn.execute(sql, params)`,
`executemany`, `in_transaction`, `BEGIN IMMEDIATE ... COMMIT`), run in one worker thread per connection.
`PgConnection` gives those functions the same surface over psycopg 3, so routing, ingest, the projections,
the compactor and the queries are one body of code for both backends. The SQL they write is SQLite's;
`translate` rewrites the few places where the dialects differ, once per statement text (cached):

* placeholders `?` and `:name` become `%s` and `%(name)s` (a literal `%` is doubled);
* `main.` names the store's schema (`public`), `temp.` the connection's own (`pg_temp`): a TEMP table
  shadows the live one of the same name on both backends, which is how replay rebuilds beside the live tables;
* `a IS b` / `a IS NOT b` between values become `IS [NOT] DISTINCT FROM`; scalar `MIN(a, b)` / `MAX(a, b)`
  become `LEAST` / `GREATEST`; `INDEXED BY` hints go, and so does CROSS in `CROSS JOIN t ON ...` (SQLite's
  way to fix the join order);
* `CAST(x AS BLOB)` (text read as bytes for the JSON decoder) becomes `convert_to(x, 'UTF8')`;
* in the tables the code makes itself (the compactor's scratch tables), `INTEGER` is `bigint`, 64-bit as
  in SQLite;
* `x IN (SELECT value FROM json_each(?))` becomes `x = ANY(?)` with the JSON list decoded into an array
  (`NOT IN` into `<> ALL`), so a key column keeps its type and its index.

Transactions keep SQLite's meaning: `BEGIN IMMEDIATE` is the one write lock of the database
(`pg_advisory_xact_lock`, held to COMMIT), so writers on any host queue one after another as processes
queue on a SQLite file, and positions are committed in the order they are handed out: a reader following
`position > last seen` never skips an event committed late. A plain `BEGIN` is a read snapshot
(REPEATABLE READ), like a read transaction on a WAL file. The PRAGMAs the shared code asks are answered
here (`table_info`, `foreign_keys`, `data_version`, ...) or are no-ops; what has no meaning on PostgreSQL
(the file's pages, VACUUM INTO) is a separate branch in the code that asks it (`db.is_postgres`).

Errors come out as the sqlite3 classes the shared code already handles (a unique violation is a
`sqlite3.IntegrityError`), with PostgreSQL's message and the original exception as the cause.
"""
from __future__ import annotations

import functools
import itertools
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg.adapt import Loader
from psycopg.pq import TransactionStatus

from tornstore.eventstore.db import busy_timeout_ms

SCHEMA = "public"
# The store's write lock: pg_advisory_xact_lock(WRITE_LOCK), the one key of "tornstore" (two int4 halves).
WRITE_LOCK = (0x746F726E, 0x73746F72)
# The compactor's lock: one run at a time across hosts (pg_try_advisory_lock, held for the run).
COMPACT_LOCK = (0x746F726E, 0x636F6D70)


def redact(url: str) -> str:
    """The URL without its password (in the user part or as a `password=` parameter), for messages."""
    url = re.sub(r"(://[^:/@]*):[^/]*@", r"\1:***@", url)   # (up to the last @ before the path)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url, flags=re.IGNORECASE)


class NumericLoader(Loader):
    """numeric as SQLite's NUMERIC affinity gives it back: an int when whole, else a float (SUM of bigint
    is numeric on PostgreSQL, an integer on SQLite)."""

    def load(self, data: Any) -> int | float:
        text = bytes(data).decode()
        if "." in text or "e" in text or "E" in text or text in ("NaN", "Infinity", "-Infinity"):
            value = float(text)
            return int(value) if value.is_integer() and abs(value) < 2 ** 63 and "." not in text else value
        return int(text)


def _error(exc: psycopg.Error, sql: str = "") -> sqlite3.Error:
    """The sqlite3 class the shared code catches for this PostgreSQL error, with its message and the start
    of the statement (its text only: parameters, which may hold anything, are not repeated)."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if sql:
        message += f" (in: {' '.join(sql.split())[:200]})"
    if isinstance(exc, psycopg.errors.IntegrityError):
        cls: type[sqlite3.Error] = sqlite3.IntegrityError
    elif isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        cls, message = sqlite3.OperationalError, f"attempt to write a readonly database ({message})"
    elif isinstance(exc, psycopg.errors.UndefinedTable):
        cls, message = sqlite3.OperationalError, f"no such table ({message})"
    elif isinstance(exc, (psycopg.errors.DataError, psycopg.errors.NumericValueOutOfRange)):
        cls = sqlite3.DataError
    else:
        cls = sqlite3.OperationalError
    error = cls(message)
    error.sqlite_errorname = type(exc).__name__
    return error


# ------------------------------------------------------------------------------------------ translation
_TOKEN = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|[^'"-]+|-""")
_JSON_IN = re.compile(r"\b(NOT\s+)?IN\s*\(\s*SELECT\s+value\s+FROM\s+json_each\(\s*\?\s*\)\s*\)", re.IGNORECASE)
_IS_NOT = re.compile(r"\bIS\s+NOT\s+(?!NULL\b|TRUE\b|FALSE\b|DISTINCT\b)", re.IGNORECASE)
_IS = re.compile(r"\bIS\s+(?!NOT\b|NULL\b|TRUE\b|FALSE\b|DISTINCT\b)", re.IGNORECASE)
_SCHEMA = re.compile(r"\b(main|temp)\.(?=[A-Za-z_\"])", re.IGNORECASE)
_INDEXED_BY = re.compile(r"\s+INDEXED\s+BY\s+(\"[^\"]*\"|\w+)", re.IGNORECASE)
_MINMAX = re.compile(r"\b(MIN|MAX)\s*\(", re.IGNORECASE)
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_REAL = re.compile(r"\bAS\s+REAL\b", re.IGNORECASE)
_CREATE = re.compile(r"\s*CREATE\s+(TEMP\s+|TEMPORARY\s+)?TABLE\b", re.IGNORECASE)
_INTEGER = re.compile(r"\bINTEGER\b", re.IGNORECASE)
_CROSS_ON = re.compile(r"\bCROSS\s+JOIN(\s+[\w.]+(?:\s+AS)?\s+\w+\s+ON\b)", re.IGNORECASE)
_BLOB = re.compile(r"\bCAST\(\s*([\w.]+)\s+AS\s+BLOB\s*\)", re.IGNORECASE)


class Statement:
    """One SQLite statement text rewritten for PostgreSQL."""
    __slots__ = ("sql", "json_params", "named")

    def __init__(self, sql: str, json_params: tuple[int, ...], named: bool):
        self.sql = sql
        self.json_params = json_params   # positions of `?` parameters that carry a JSON list
        self.named = named

    def params(self, params: Any) -> Any:
        if params is None:
            return None
        if self.named:
            return {k: _storable(v) for k, v in params.items()}
        values = [_storable(v) for v in params]
        for i in self.json_params:
            values[i] = json.loads(values[i]) if isinstance(values[i], (str, bytes)) else list(values[i])
        return values


_INT64 = 2 ** 63


def _storable(value: Any) -> Any:
    """A parameter as SQLite would take it: an int beyond 64 bits is refused (OverflowError, as sqlite3
    raises, where psycopg would send a numeric and the query would run), and a NUL in a text, which
    PostgreSQL's text cannot hold, is kept as the JSON escape \\u0000 instead of failing the batch."""
    kind = type(value)
    if kind is str:
        return value.replace("\x00", "\\u0000") if "\x00" in value else value
    if kind is int and not -_INT64 <= value < _INT64:
        raise OverflowError("Python int too large to convert to a 64-bit integer")
    return value


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> Statement:
    """The PostgreSQL text of a statement the store writes in SQLite's dialect (see the module's list)."""
    json_params: list[int] = []
    out: list[str] = []
    placeholder = itertools.count()
    sql = _INDEXED_BY.sub("", sql)   # (before the split: the index's name may be a quoted token)
    named = bool(_NAMED.search(_strip_literals(sql)))
    for token in _TOKEN.findall(sql):
        if token[0] in "'\"" or token.startswith("--"):
            out.append(token.replace("%", "%%") if token[0] == "'" else token)
            continue
        token = _SCHEMA.sub(lambda m: (SCHEMA if m[1].lower() == "main" else "pg_temp") + ".", token)
        token = _IS_NOT.sub("IS DISTINCT FROM ", token)
        token = _IS.sub("IS NOT DISTINCT FROM ", token)
        token = _REAL.sub("AS double precision", token)
        token = _BLOB.sub(r"convert_to(\1, 'UTF8')", token)
        token = _CROSS_ON.sub(r"JOIN\1", token)
        token = token.replace("%", "%%")
        if named:
            token = _NAMED.sub(r"%(\1)s", token)
            out.append(token)
            continue
        pieces: list[str] = []
        last = 0
        for match in _JSON_IN.finditer(token):
            pieces.append(_placeholders(token[last:match.start()], placeholder))
            json_params.append(next(placeholder))
            pieces.append("<> ALL(%s)" if match[1] else "= ANY(%s)")
            last = match.end()
        pieces.append(_placeholders(token[last:], placeholder))
        out.append("".join(pieces))
    text = _alias_subqueries(_least_greatest("".join(out)))
    if _CREATE.match(text):
        text = _INTEGER.sub("bigint", text)
    return Statement(text, tuple(json_params), named)


def _strip_literals(sql: str) -> str:
    return "".join(t for t in _TOKEN.findall(sql) if t[0] not in "'\"" and not t.startswith("--"))


def _placeholders(text: str, counter: itertools.count) -> str:
    parts = text.split("?")
    for _ in parts[1:]:
        next(counter)
    return "%s".join(parts)


_SUBQUERY = re.compile(r"\b(FROM|JOIN)\s*\(\s*(?=SELECT\b|WITH\b)", re.IGNORECASE)
_AFTER = re.compile(r"\s*(AS\b|WHERE\b|GROUP\b|ORDER\b|LIMIT\b|UNION\b|EXCEPT\b|INTERSECT\b|JOIN\b|LEFT\b|"
                    r"INNER\b|CROSS\b|ON\b|HAVING\b|WINDOW\b|\)|,|;|$|[A-Za-z_])", re.IGNORECASE)
_KEYWORDS = {"where", "group", "order", "limit", "union", "except", "intersect", "join", "left", "inner", "cross",
             "on", "having", "window", ")", ",", ";", ""}


def _closing(sql: str, start: int) -> tuple[int, int]:
    """For an opening parenthesis just before `start`: the index after its closing one, and the commas at
    its own level (quoted text skipped)."""
    depth, commas, i, quote = 1, 0, start, ""
    while i < len(sql) and depth:
        ch = sql[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 1:
            commas += 1
        i += 1
    return i, commas


def _alias_subqueries(sql: str) -> str:
    """`FROM (SELECT ...) WHERE` -> `FROM (SELECT ...) AS _q1 WHERE`: SQLite lets a subquery in FROM go
    without a name, PostgreSQL before 16 does not."""
    inserts: list[int] = []
    for match in _SUBQUERY.finditer(sql):
        i, _ = _closing(sql, match.end())
        after = _AFTER.match(sql, i)
        word = after[1].lower() if after else ""
        if word in _KEYWORDS or word == "":
            inserts.append(i)
    for n, at in enumerate(sorted(inserts, reverse=True)):
        sql = f"{sql[:at]} AS _q{n + 1}{sql[at:]}"
    return sql


def _least_greatest(sql: str) -> str:
    """`MIN(a, b)` -> `LEAST(a, b)`, `MAX(a, b)` -> `GREATEST(a, b)`: SQLite's scalar forms (two or more
    arguments at the top level of the call); the one-argument aggregates stay."""
    result, pos = [], 0
    for match in _MINMAX.finditer(sql):
        if match.start() < pos:
            continue
        _, commas = _closing(sql, match.end())
        if commas:
            result.append(sql[pos:match.start()])
            result.append("LEAST(" if match[1].upper() == "MIN" else "GREATEST(")
            pos = match.end()
    result.append(sql[pos:])
    return "".join(result)


# ------------------------------------------------------------------------------------------ PRAGMAs
_PRAGMA = re.compile(r"^\s*PRAGMA\s+(?:(main|temp)\.)?(\w+)\s*(?:\(\s*\"?([^)\"]*)\"?\s*\)|=\s*(\S+))?\s*;?\s*$",
                     re.IGNORECASE)
_TABLE_INFO = """
SELECT a.attnum - 1, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull::int,
       pg_get_expr(d.adbin, d.adrelid), COALESCE(array_position(i.indkey::int2[], a.attnum) + 1, 0)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
WHERE c.relname = %s AND n.nspname = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


class _Rows:
    """A cursor over rows the adapter made itself (a PRAGMA's answer)."""

    def __init__(self, rows: list[tuple] | None = None, rowcount: int = -1):
        self._rows = rows or []
        self.rowcount = rowcount
        self.lastrowid = None
        self.description = None

    def fetchone(self) -> tuple | None:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[tuple]:
        rows, self._rows = self._rows, []
        return rows

    def fetchmany(self, size: int = 1) -> list[tuple]:
        rows, self._rows = self._rows[:size], self._rows[size:]
        return rows

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.fetchall())


class PgCursor:
    """The cursor of one statement: sqlite3's fetch calls, rowcount, and lastrowid (read on demand with
    `lastval()`, the id the statement's INSERT just took from its identity sequence)."""

    def __init__(self, conn: PgConnection, cursor: psycopg.Cursor):
        self._conn = conn
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def lastrowid(self) -> int | None:
        row = self._conn.raw.execute("SELECT lastval()").fetchone()
        return row[0] if row else None

    def fetchone(self) -> tuple | None:
        return self._conn.call(self._cursor.fetchone) if self._cursor.description else None

    def fetchall(self) -> list[tuple]:
        return self._conn.call(self._cursor.fetchall) if self._cursor.description else []

    def fetchmany(self, size: int = 1) -> list[tuple]:
        return self._conn.call(self._cursor.fetchmany, size) if self._cursor.description else []

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.fetchall())


class PgConnection:
    """A psycopg connection with the surface of the sqlite3 connection the store's code uses."""

    dialect = "postgresql"

    def __init__(self, raw: psycopg.Connection, url: str, read_only: bool = False):
        self.raw = raw
        self.url = url
        self.read_only = read_only
        self.stream_cache = None   # ingest's cache of stream states (always refreshed: see data_version)
        self._data_version = itertools.count(1)

    # -- what sqlite3.Connection offers
    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR)

    @property
    def total_changes(self) -> int:
        return 0

    def call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except psycopg.Error as exc:
            raise _error(exc) from exc

    def execute(self, sql: str, params: Sequence[Any] | dict | None = None) -> Any:
        head = sql.lstrip()[:16].upper()
        if head.startswith("PRAGMA"):
            return self._pragma(sql)
        if head.startswith("BEGIN"):
            return self._begin(sql)
        statement = translate(sql)
        has_params = params is not None and (len(params) > 0 or statement.named)
        cursor = self.raw.cursor()
        try:
            if has_params:
                cursor.execute(statement.sql, statement.params(params))
            else:
                cursor.execute(statement.sql.replace("%%", "%"))
        except psycopg.Error as exc:
            raise _error(exc, sql) from exc
        return PgCursor(self, cursor)

    def executemany(self, sql: str, seq: Iterable[Sequence[Any] | dict]) -> _Rows:
        statement = translate(sql)
        rows = [statement.params(p) for p in seq]
        if not rows:
            return _Rows(rowcount=0)
        cursor = self.raw.cursor()
        try:
            cursor.executemany(statement.sql, rows)
        except psycopg.Error as exc:
            raise _error(exc, sql) from exc
        return _Rows(rowcount=cursor.rowcount)

    def executescript(self, sql: str) -> _Rows:
        for statement in (s for s in sql.split(";") if s.strip()):
            self.execute(statement)
        return _Rows()

    def commit(self) -> None:
        if self.in_transaction:
            self.execute("COMMIT")

    def rollback(self) -> None:
        if self.in_transaction:
            self.execute("ROLLBACK")

    def close(self) -> None:
        self.raw.close()

    # -- SQLite's transaction kinds
    def _begin(self, sql: str) -> _Rows:
        words = sql.upper().split()
        try:
            if len(words) > 1 and words[1] in ("IMMEDIATE", "EXCLUSIVE"):
                if self.read_only:
                    raise sqlite3.OperationalError("attempt to write a readonly database")
                self.raw.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
                # Wait for another writer as long as SQLite's busy_timeout would, then fail as SQLite does
                # ("database is locked"): the collector spools instead of waiting for ever.
                timeout = busy_timeout_ms()
                self.raw.execute(f"SET LOCAL lock_timeout = {max(int(timeout), 1)}")   # (0: no limit there)
                try:
                    self.raw.execute("SELECT pg_advisory_xact_lock(%s, %s)", WRITE_LOCK)
                except psycopg.errors.LockNotAvailable:
                    self.raw.execute("ROLLBACK")
                    raise sqlite3.OperationalError(
                        f"database is locked (another writer held the write lock for {timeout} ms)") from None
            else:
                self.raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        except psycopg.Error as exc:
            raise _error(exc) from exc
        return _Rows()

    # -- PRAGMAs the shared code asks
    def _pragma(self, sql: str) -> _Rows:
        match = _PRAGMA.match(sql)
        if not match:
            return _Rows()
        schema, name, arg, value = match[1], match[2].lower(), match[3], match[4]
        if name == "table_info":
            rows = self.raw.execute(_TABLE_INFO, (arg, self._schema_of(arg, schema))).fetchall()
            return _Rows([tuple(r) for r in rows])
        if name == "data_version":
            # Another host may have committed: ingest's stream cache is read afresh for every batch.
            return _Rows([(next(self._data_version),)])
        if name == "foreign_keys" and value is None:
            return _Rows([(1,)])
        if name == "integrity_check":
            return _Rows([("ok",)])
        if name in ("foreign_key_check", "index_list", "index_info", "database_list"):
            return _Rows([])
        return _Rows()   # the file's settings (journal, cache, mmap, optimize, ...): nothing to do here

    def _schema_of(self, table: str | None, schema: str | None) -> str:
        if schema and schema.lower() == "temp":
            row = self.raw.execute("SELECT nspname FROM pg_namespace WHERE oid = pg_my_temp_schema()").fetchone()
            return row[0] if row else "pg_temp"
        return SCHEMA


def connect_sync(url: str, *, read_only: bool = False) -> PgConnection:
    """A PgConnection in autocommit mode (the store issues BEGIN itself), numerics loaded as SQLite does."""
    try:
        raw = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise sqlite3.OperationalError(f"cannot connect to PostgreSQL at {redact(url)}: "
                                       f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}") from None
    raw.adapters.register_loader("numeric", NumericLoader)
    raw.execute("SET TIME ZONE 'UTC'")
    if read_only:
        raw.execute("SET default_transaction_read_only = on")
    return PgConnection(raw, url, read_only)
