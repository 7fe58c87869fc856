"""The projection handlers, in the order they see each batch of events.

factions first (players, wars and territories point at factions), players before player_stats (the
stats row needs its player), wars before territories (a territory's war_status is read from the wars rows).
stat_history refers to no other row; it is a fold, so it runs with the folds, before wars and territories.
"""
from __future__ import annotations

from .faction_history import FactionHistoryHandler
from .factions import FactionsHandler
from .player_stats import PlayerStatsHandler
from .players import PlayersHandler
from .stat_history import StatHistoryHandler
from .territories import TerritoriesHandler
from .wars import WarsHandler

HANDLERS = [
    FactionsHandler(),
    PlayersHandler(),
    PlayerStatsHandler(),
    FactionHistoryHandler(),
    StatHistoryHandler(),
    WarsHandler(),
    TerritoriesHandler(),
]
