"""Personal stats: one value per stat and player, in v2's nested shapes (cat=) and by flat name (stat=, v1).

Counters grow as a player plays: each player has an activity level, and each of their stats a rate drawn
from the seed. About one stat in five is one the player uses (0.3 to 12 steps a day; `xantaken` at most 3 a
day, `refills` at most 1), the rest move about once in two months; the clock-like ones (activity time,
streaks, days as donator, time spent travelling) move as the clock does. A counter steps at evenly spaced
times from a phase drawn per stat, so the stats of one player move at different hours and most polls an hour
apart see a handful of them change. Networth and the battle stats are the world's own values.

One number per stat whatever the spelling: a v2 leaf, its `stat=` name and the v1 personalstats key of the
same stat (attacking.attacks.won, attackswon; travel.united_kingdom, uktravel, lontravel) give the same
value. The v2 shapes are the spec's (personalstats_shapes.py, generated from it).
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
# the other v2 leaves -> their stat= name (or, for the few with none, the v1 key or a name of that style)
_MORE_LEAVES = {
    "attacking.defends.total": "defendstotal", "attacking.unarmored_wins": "unarmoredwon",
    "attacking.highest_level_beaten": "highestbeaten", "attacking.escapes.player": "yourunaway",
    "attacking.escapes.foes": "theyrunaway", "attacking.hits.success": "attackhits",
    "attacking.hits.miss": "attackmisses", "attacking.hits.critical": "attackcriticalhits",
    "attacking.hits.one_hit_kills": "onehitkills", "attacking.damage.total": "attackdamage",
    "attacking.damage.best": "bestdamage", "attacking.networth.money_mugged": "moneymugged",
    "attacking.networth.largest_mug": "largestmug", "attacking.networth.items_looted": "itemslooted",
    "attacking.ammunition.total": "roundsfired", "attacking.ammunition.special": "specialammoused",
    "attacking.ammunition.hollow_point": "hollowammoused", "attacking.ammunition.tracer": "tracerammoused",
    "attacking.ammunition.piercing": "piercingammoused", "attacking.ammunition.incendiary": "incendiaryammoused",
    "attacking.faction.retaliations": "retals", "attacking.faction.raid_hits": "raidhits",
    "attacking.faction.territory.wall_clears": "territoryclears",
    "attacking.faction.territory.wall_time": "territorytime", "jobs.job_points_used": "jobpointsused",
    "jobs.trains_received": "trainsreceived", "trading.items.bought.market": "marketitemsbought",
    "trading.items.bought.shops": "cityitemsbought", "trading.items.auctions.won": "auctionswon",
    "trading.items.auctions.sold": "auctionsells", "trading.items.sent": "itemssent", "trading.trades": "trades",
    "trading.points.bought": "pointsbought", "trading.points.sold": "pointssold",
    "trading.bazaar.customers": "bazaarcustomers", "trading.bazaar.sales": "bazaarsales",
    "trading.bazaar.profit": "bazaarprofit", "trading.item_market.customers": "itemmarketcustomers",
    "trading.item_market.sales": "itemmarketsales", "trading.item_market.revenue": "itemmarketrevenue",
    "trading.item_market.fees": "itemmarketfees", "jail.busts.success": "peoplebusted",
    "jail.busts.fails": "failedbusts", "jail.bails.amount": "peoplebought", "jail.bails.fees": "peopleboughtspent",
    "hospital.medical_items_used": "medicalitemsused", "hospital.blood_withdrawn": "bloodwithdrawn",
    "hospital.reviving.skill": "reviveskill", "hospital.reviving.revives_received": "revivesreceived",
    "finishing_hits.heavy_artillery": "heavyhits", "finishing_hits.machine_guns": "machinehits",
    "finishing_hits.rifles": "riflehits", "finishing_hits.sub_machine_guns": "smghits",
    "finishing_hits.shotguns": "shotgunhits", "finishing_hits.pistols": "pistolhits",
    "finishing_hits.temporary": "temphits", "finishing_hits.piercing": "piercinghits",
    "finishing_hits.slashing": "slashinghits", "finishing_hits.clubbing": "clubbinghits",
    "finishing_hits.mechanical": "mechanicalhits", "finishing_hits.hand_to_hand": "h2hhits",
    "communication.mails_sent.total": "mailssent", "communication.mails_sent.friends": "friendmailssent",
    "communication.mails_sent.faction": "factionmailssent",
    "communication.mails_sent.colleagues": "companymailssent",
    "communication.mails_sent.spouse": "spousemailssent", "communication.classified_ads": "classifiedadsplaced",
    "communication.personals": "personalsplaced", "crimes.offenses.vandalism": "vandalism",
    "crimes.offenses.fraud": "fraud", "crimes.offenses.theft": "theft",
    "crimes.offenses.counterfeiting": "counterfeiting", "crimes.offenses.illicit_services": "illicitservices",
    "crimes.offenses.cybercrime": "cybercrime", "crimes.offenses.extortion": "extortion",
    "crimes.offenses.illegal_production": "illegalproduction",
    "crimes.offenses.organized_crimes": "organizedcrimes", "crimes.skills.search_for_cash": "searchforcashskill",
    "crimes.skills.bootlegging": "bootleggingskill", "crimes.skills.graffiti": "graffitiskill",
    "crimes.skills.shoplifting": "shopliftingskill", "crimes.skills.pickpocketing": "pickpocketingskill",
    "crimes.skills.card_skimming": "cardskimmingskill", "crimes.skills.burglary": "burglaryskill",
    "crimes.skills.hustling": "hustlingskill", "crimes.skills.disposal": "disposalskill",
    "crimes.skills.cracking": "crackingskill", "crimes.skills.forgery": "forgeryskill",
    "crimes.skills.scamming": "scammingskill", "crimes.skills.arson": "arsonskill",
    "bounties.placed.amount": "bountiesplaced", "bounties.placed.value": "totalbountyspent",
    "bounties.collected.amount": "bountiescollected", "bounties.collected.value": "totalbountyreward",
    "bounties.received.amount": "bountiesreceived", "bounties.received.value": "receivedbountyvalue",
    "items.found.city": "cityfinds", "items.found.dump": "dumpfinds", "items.found.easter_eggs": "eastereggsfound",
    "items.trashed": "itemsdumped", "items.used.books": "booksread", "items.used.boosters": "boostersused",
    "items.used.consumables": "consumablesused", "items.used.candy": "candyused",
    "items.used.alcohol": "alcoholused", "items.used.energy_drinks": "energydrinkused",
    "items.used.stat_enhancers": "statenhancersused", "items.used.easter_eggs": "eastereggsused",
    "items.viruses_coded": "virusescoded", "travel.time_spent": "timespenttraveling",
    "travel.items_bought": "itemsboughtabroad", "travel.hunting.skill": "huntingskill",
    "travel.attacks_won": "attackswonabroad", "travel.defends_lost": "defendslostabroad",
    "travel.argentina": "argtravel", "travel.canada": "cantravel", "travel.cayman_islands": "caytravel",
    "travel.china": "chitravel", "travel.hawaii": "hawtravel", "travel.japan": "japtravel",
    "travel.mexico": "mextravel", "travel.united_arab_emirates": "uaetravel", "travel.united_kingdom": "uktravel",
    "travel.south_africa": "satravel", "travel.switzerland": "switravel", "drugs.cannabis": "cantaken",
    "drugs.ecstasy": "exttaken", "drugs.ketamine": "kettaken", "drugs.lsd": "lsdtaken", "drugs.opium": "opitaken",
    "drugs.pcp": "pcptaken", "drugs.shrooms": "shrtaken", "drugs.speed": "spetaken", "drugs.vicodin": "victaken",
    "drugs.rehabilitations.amount": "rehabs", "drugs.rehabilitations.fees": "rehabcost",
    "missions.contracts.total": "contractscompleted", "missions.contracts.duke": "dukecontractscompleted",
    "missions.credits": "missioncreditsearned", "racing.skill": "racingskill",
    "racing.points": "racingpointsearned", "other.activity.time": "timeplayed",
    "other.refills.nerve": "nerverefills", "other.refills.token": "tokenrefills",
    "other.donator_days": "daysbeendonator", "other.ranked_war_wins": "rankedwarringwins",
}
LEAF_NAMES = {**FLAT_NAME, **_MORE_LEAVES}
# stat= spellings that differ from the v1 personalstats key of the same number -> the v1 key
V1_SPELLING = {
    "heavyhits": "heahits", "machinehits": "machits", "riflehits": "rifhits", "shotgunhits": "shohits",
    "pistolhits": "pishits", "temphits": "grehits", "piercinghits": "piehits", "slashinghits": "slahits",
    "clubbinghits": "axehits", "mechanicalhits": "chahits", "uktravel": "lontravel", "satravel": "soutravel",
    "uaetravel": "dubtravel", "timespenttraveling": "traveltime", "currentkillstreak": "killstreak",
    "eastereggsfound": "eastereggs", "organizedcrimes": "organisedcrimes", "timeplayed": "useractivity",
    "marketitemsbought": "itemsbought",
}
# stats that grow with the clock rather than with play: (seconds of the stat per day of a player's life)
_CLOCK = {"useractivity": 3 * 3600, "traveltime": 1800, "territorytime": 600, "daysbeendonator": 1,
          "activestreak": 1, "bestactivestreak": 1}
_CAPPED = {"xantaken": 3.0, "refills": 1.0, "nerverefills": 0.5, "overdosed": 0.05}

# stat= names only the key's owner may ask: those of the leaves in FULL (own key) and not in PUBLIC
OWN_STATS = frozenset(FLAT_NAME[p] for p in FULL if p not in set(PUBLIC) and p in FLAT_NAME)


def rate(world: World, player: Player, name: str) -> float:
    """Steps a day of one counter (the same draw for the same name, seed and player)."""
    activity = 0.2 + 0.8 * _h01(world.seed, "ps-activity", player.id)
    if name in _CAPPED:
        return _CAPPED[name] * _h01(world.seed, "ps-rate", name, player.id) * activity
    if _h01(world.seed, "ps-used", name, player.id) < 0.2:
        return (0.3 + 12 * _h01(world.seed, "ps-rate", name, player.id) ** 2) * activity
    return 1 / 60


def counter(world: World, player: Player, name: str, t: int) -> int:
    """A counter that has grown since signup: a base, plus one step (of a size drawn per stat: 1 for four
    stats in five, damage-like amounts for the rest) at evenly spaced times, `rate` a day, from a phase drawn
    per stat."""
    base = int(_h01(world.seed, "ps", name, player.id) * 500)
    age = max(0, t - player.signup)
    if name in _CLOCK:
        if name == "daysbeendonator" and not player.donator:
            return 0
        if name in ("activestreak", "bestactivestreak"):
            return base // 5 + age // DAY
        return base + age // DAY * _CLOCK[name] + (age % DAY) * _CLOCK[name] // DAY
    phase = _h01(world.seed, "ps-phase", name, player.id)
    steps = int(age / DAY * rate(world, player, name) + phase)
    size = 1 if name in _CAPPED or _h01(world.seed, "ps-size", name, player.id) < 0.8 else 1 + int(
        _h01(world.seed, "ps-size2", name, player.id) * 5000)
    return base + steps * size


def canonical(name: str) -> str:
    """The v1 personalstats key of a stat given by v1 key, stat= name or v2 leaf path."""
    name = LEAF_NAMES.get(name, name)
    return V1_SPELLING.get(name, name)


def value(world: World, player: Player, name: str, t: int) -> int:
    """One stat by v1 name, stat= name or v2 path: the world's networth and battle stats, a counter for the
    rest."""
    name = canonical(name)
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
