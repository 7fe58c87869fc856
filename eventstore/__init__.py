"""The log: connections, migrations, streams and events, canonical hashing, ingest, and the Torn API wire.

It knows which entity a payload belongs to, never what the payload means (that is `projections`).
"""
