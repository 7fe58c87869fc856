"""The PostgreSQL backend: the same store in a PostgreSQL database, named by a `postgresql://` URL.

`connection.PgConnection` lets the store's shared code (ingest, projections, compactor, queries) run on
PostgreSQL unchanged; the `NNNN_*.sql` files here are the PostgreSQL dialect of `migrations/`, with the
same versions and names. Needs the `postgresql` extra (`pip install 'tornstore[postgresql]'`, psycopg 3);
nothing imports this package unless a `postgresql://` URL is opened.
"""
