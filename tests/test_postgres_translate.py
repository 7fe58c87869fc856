"""The SQLite-to-PostgreSQL rewrite of the store's statements (eventstore/postgres/connection.translate).

No server needed: each rule on the statement shapes the store writes. The suite's PostgreSQL runs check the
results of the same statements on a real server; these say which rewrite a failure there comes from."""
from __future__ import annotations

import pytest

pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install 'tornstore[postgresql]')")

from tornstore.eventstore.postgres.connection import Statement, redact, translate  # noqa: E402


def sql(text: str) -> str:
    return translate(text).sql


def test_placeholders_and_percent_signs():
    assert sql("SELECT * FROM t WHERE a = ? AND b LIKE '%x?'") == "SELECT * FROM t WHERE a = %s AND b LIKE '%%x?'"
    named = translate("SELECT * FROM t WHERE a BETWEEN :ps AND :pe AND s = '12:30'")
    assert named.named and named.sql == "SELECT * FROM t WHERE a BETWEEN %(ps)s AND %(pe)s AND s = '12:30'"


def test_schemas_name_the_live_tables_and_the_connections_own():
    assert sql("INSERT INTO main.x SELECT * FROM temp.x") == "INSERT INTO public.x SELECT * FROM pg_temp.x"
    assert sql("SELECT domain.a FROM domain") == "SELECT domain.a FROM domain"


def test_is_between_values_and_is_null():
    assert sql("WHERE a IS ? AND b IS NOT c AND d IS NULL AND e IS NOT NULL") == (
        "WHERE a IS NOT DISTINCT FROM %s AND b IS DISTINCT FROM c AND d IS NULL AND e IS NOT NULL")


def test_scalar_min_max_and_the_aggregates():
    assert sql("SELECT MAX(a, MIN(b, c)), MAX(d), min(e) FROM t") == "SELECT GREATEST(a, LEAST(b, c)), MAX(d), min(e) FROM t"


def test_a_json_list_becomes_an_array_parameter():
    statement = translate("SELECT * FROM t WHERE k = ? AND id IN (SELECT value FROM json_each(?)) "
                          "AND x NOT IN (SELECT value FROM json_each(?))")
    assert statement.sql == "SELECT * FROM t WHERE k = %s AND id = ANY(%s) AND x <> ALL(%s)"
    assert statement.params((1, "[2, 3]", '["AAC"]')) == [1, [2, 3], ["AAC"]]


def test_subqueries_get_names_and_hints_go():
    assert sql("SELECT COUNT(*) FROM (SELECT 1) WHERE true") == "SELECT COUNT(*) FROM (SELECT 1) AS _q1 WHERE true"
    assert sql("SELECT * FROM (SELECT 1) AS a JOIN (SELECT 2) b ON true") == (
        "SELECT * FROM (SELECT 1) AS a JOIN (SELECT 2) b ON true")
    assert sql('SELECT * FROM h INDEXED BY "i" CROSS JOIN s AS s ON s.k = h.k') == (
        "SELECT * FROM h JOIN s AS s ON s.k = h.k")


def test_scratch_tables_are_64_bit_and_blobs_are_utf8_bytes():
    assert sql("CREATE TEMP TABLE m (k INTEGER PRIMARY KEY, n INTEGER)") == (
        "CREATE TEMP TABLE m (k bigint PRIMARY KEY, n bigint)")
    assert sql("SELECT CAST(e.payload AS BLOB) FROM events e") == "SELECT convert_to(e.payload, 'UTF8') FROM events e"


def test_statements_are_translated_once():
    assert isinstance(translate("SELECT 1"), Statement) and translate("SELECT 1") is translate("SELECT 1")


@pytest.mark.parametrize("url, shown", [
    ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:p@ss@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgresql://h/db?user=u&password=secret", "postgresql://h/db?user=u&password=***"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
])
def test_passwords_never_show(url, shown):
    assert redact(url) == shown
