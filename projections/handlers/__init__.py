"""One handler per target table. ORDER is the order handlers see each event (factions before players,
so a player's faction exists before the player points at it)."""
