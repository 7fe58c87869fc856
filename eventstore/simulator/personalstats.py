"""Personal stats: one value per stat and player, in v2's nested shapes (cat=) and by flat name (stat=, v1).

Counters grow by the day from a base and a rate drawn per player from the seed, so they move at most once a
day; networth and the battle stats are the world's own values. A v2 leaf that is a v1 stat of another name
(attacking.attacks.won is attackswon) has the same value under both names. The v2 shapes are the spec's
(personalstats_shapes.py, generated from it).
"""
from __future__ import annotations

from .personalstats_shapes import CATEGORIES, FULL, POPULAR, PUBLIC, STAT_NAMES
from .world import DAY, Player, World, _h01

__all__ = ["CATEGORIES", "FULL", "OWN_STATS", "POPULAR", "PUBLIC", "STAT_NAMES", "counter", "nested", "value"]

_BATTLE = {"battle_stats.strength": "strength", "battle_stats.defense": "defense", "battle_stats.speed": "speed",
           "battle_stats.dexterity": "dexterity", "battle_stats.total": "totalstats"}
_NETWORTH = {"total": "networth", "wallet": "networthwallet", "vaults": "networthvault", "bank": "networthbank",
             "overseas_bank": "networthcayman", "points": "networthpoints", "inventory": "networthitems",
             "display_case": "networthdisplaycase", "bazaar": "networthbazaar", "item_market": "networthitemmarket",
             "property": "networthproperties", "stock_market": "networthstockmarket",
             "auction_house": "networthauctionhouse", "bookie": "networthbookie", "company": "networthcompany",
             "enlisted_cars": "networthenlistedcars", "piggy_bank": "networthpiggybank",
             "pending": "networthpending", "loans": "networthloan", "unpaid_fees": "networthunpaidfees"}
# v2 leaf -> the v1 (stat=) name of the same number
FLAT_NAME = {
    **_BATTLE, **{f"networth.{k}": v for k, v in _NETWORTH.items()},
    "attacking.attacks.won": "attackswon", "attacking.attacks.lost": "attackslost",
    "attacking.attacks.stalemate": "attacksdraw", "attacking.attacks.assist": "attacksassisted",
    "attacking.attacks.stealth": "attacksstealthed", "attacking.defends.won": "defendswon",
    "attacking.defends.lost": "defendslost", "attacking.defends.stalemate": "defendsstalemated",
    "attacking.elo": "elo", "attacking.killstreak.best": "bestkillstreak",
    "attacking.killstreak.current": "currentkillstreak", "attacking.faction.respect": "respectforfaction",
    "attacking.faction.ranked_war_hits": "rankedwarhits", "attacking.faction.territory.wall_joins": "territoryjoins",
    "jobs.stats.manual": "manuallabor", "jobs.stats.intelligence": "intelligence",
    "jobs.stats.endurance": "endurance", "jobs.stats.total": "totalworkingstats",
    "jail.times_jailed": "jailed", "hospital.times_hospitalized": "hospital", "hospital.reviving.revives": "revives",
    "crimes.total": "criminaloffenses", "crimes.offenses.total": "criminaloffenses",
    "investments.bank.total": "moneyinvested", "investments.bank.profit": "investedprofit",
    "investments.bank.current": "investamount", "investments.bank.time_remaining": "banktimeleft",
    "investments.stocks.profits": "stockprofits", "investments.stocks.losses": "stocklosses",
    "investments.stocks.fees": "stockfees", "investments.stocks.net_profits": "stocknetprofits",
    "investments.stocks.payouts": "stockpayouts",
    "drugs.total": "drugsused", "drugs.xanax": "xantaken", "drugs.overdoses": "overdosed",
    "travel.total": "traveltimes",
    "missions.missions": "missionscompleted", "racing.races.entered": "racesentered", "racing.races.won": "raceswon",
    "other.awards": "awards", "other.merits_bought": "meritsbought", "other.refills.energy": "refills",
    "other.activity.streak.current": "activestreak", "other.activity.streak.best": "bestactivestreak",
}
# stat= names only the key's owner may ask: those of the leaves in FULL (own key) and not in PUBLIC
OWN_STATS = frozenset(FLAT_NAME[p] for p in FULL if p not in set(PUBLIC) and p in FLAT_NAME)


def counter(world: World, player: Player, name: str, t: int) -> int:
    """A counter that has grown daily since signup (the same draw for the same name, seed and player)."""
    days = max(0, (t - player.signup) // DAY)
    base = int(_h01(world.seed, "ps", name, player.id) * 500)
    return base + int(days * _h01(world.seed, "ps-rate", name, player.id) * 5)


def value(world: World, player: Player, name: str, t: int) -> int:
    """One stat by v1 name or v2 path: the world's networth and battle stats, a counter for the rest."""
    name = FLAT_NAME.get(name, name)
    if name == "networth":
        return player.networth
    if name in player.stats:
        return player.stats[name]
    if name == "totalstats":
        return player.total_stats
    if name.startswith("networth"):
        return int(player.networth * _h01(world.seed, "nw", name, player.id) / 5)
    return counter(world, player, name, t)


def nested(world: World, player: Player, paths: tuple[str, ...] | list[str], t: int) -> dict:
    """The v2 object for a shape: {"attacking": {"attacks": {"won": 12, ...}}, ...}."""
    out: dict = {}
    for path in paths:
        *parents, leaf = path.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = "v2" if leaf == "version" else value(world, player, path, t)
    return out
