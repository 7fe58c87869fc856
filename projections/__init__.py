"""The meaning: typed models of payloads, handlers that fill the plan's tables, replay, compaction, queries."""
