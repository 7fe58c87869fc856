"""stat_history: a row when a tracked numeric stat of a player or faction changes.

Sources (stream -> stats):
  * user:<id>:v1.personalstats  `personalstats` (flat: {"xantaken": 12, ...}); names kept, but for the
    spellings below;
  * user:<id>:v2.personalstats  `personalstats` nested by category (cat=all, popular, a category: each leaf's
    dotted path is mapped to its name, table below), or the `stat=` list [{name, value, timestamp}] (an item
    counts only when stamped within a day of the poll: an older one is history the poll did not observe);
  * user:<id>:v1.battlestats / v2.battlestats  strength, defense, speed, dexterity, totalstats (own key);
  * faction:<id>:v1.faction_stats (`faction/?selections=stats`), a v1.faction payload that carries
    `stats` (`selections=basic,stats`) and faction:<id>:v2.faction_stats (v2 `faction/stats`, a list of
    {name, value}): the faction's ~40 counters, by their v1 names (v2's FactionStatEnum uses the same).

Stat names are stable across API versions: the v1 flat name where Torn has one (`xantaken`, `refills`,
`attackswon`, `respectforfaction`), whichever form the poll used. v2's `stat=` spellings that differ from v1
are mapped to v1 (`STAT_ALIASES`); every v2 leaf is mapped to the v1 name of the same number (`PATH_NAMES`);
the one v2 leaf with no flat name anywhere (`attacking.defends.total`) is `defendstotal`; a leaf Torn adds
later is named by its path with `_` for `.` (`drugs.newdrug` is `drugs_newdrug`) until it gets a name here.
`python -m tornstore.projections.handlers.stat_history` prints the whole table (markdown).

Which stats are tracked: every numeric one, minus the clock-like ones (`DEFAULT_EXCLUDED`: activity time,
activity and kill streaks, days as donator, time spent travelling and on walls, bank time left), which move
at nearly every poll without anything happening. `configure(include=..., exclude=...)` changes the set for
the process (Store.open(stats=...), the collector's `[stats]` table, or the environment variables
TORNSTORE_STATS_INCLUDE / TORNSTORE_STATS_EXCLUDE, comma-separated); replay rebuilds with the set in force.

Rules, as the other history projections (history_fold.py):
  * one row per (entity, stat) change: a stat is compared with its row in force at the event's time; the
    first value seen is a row; events of one observation fold into one row per stat;
  * arrival order does not matter: an event older than the newest one folded for its entity deletes the
    entity's rows from its time on and folds the entity's events from there again, in time order;
  * no row before Context.horizon; with the state kept at the horizon, the row in force before it is read in
    `stat_history_at_horizon`;
  * no SQL per event: the rows in force of a batch's entities are read in one statement per entity type,
    new rows written with one executemany at the working set's flush (replay: every row in memory).
"""
from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from tornstore.eventstore.db import ids_written
from tornstore.eventstore.records import Event, StreamKey

from .base import Context, FoldHandler, ProjectionError, check_int64
from .workset import WorkSet, last_row_id, newest_observed

TABLE = "stat_history"
DAY = 86400

# v2 leaf (dotted path in personalstats) -> stable name
PATH_NAMES: dict[str, str] = {
    "attacking.attacks.won": "attackswon", "attacking.attacks.lost": "attackslost",
    "attacking.attacks.stalemate": "attacksdraw", "attacking.attacks.assist": "attacksassisted",
    "attacking.attacks.stealth": "attacksstealthed", "attacking.defends.won": "defendswon",
    "attacking.defends.lost": "defendslost", "attacking.defends.stalemate": "defendsstalemated",
    "attacking.defends.total": "defendstotal", "attacking.elo": "elo", "attacking.unarmored_wins": "unarmoredwon",
    "attacking.highest_level_beaten": "highestbeaten", "attacking.escapes.player": "yourunaway",
    "attacking.escapes.foes": "theyrunaway", "attacking.killstreak.best": "bestkillstreak",
    "attacking.killstreak.current": "killstreak", "attacking.hits.success": "attackhits",
    "attacking.hits.miss": "attackmisses", "attacking.hits.critical": "attackcriticalhits",
    "attacking.hits.one_hit_kills": "onehitkills", "attacking.damage.total": "attackdamage",
    "attacking.damage.best": "bestdamage", "attacking.networth.money_mugged": "moneymugged",
    "attacking.networth.largest_mug": "largestmug", "attacking.networth.items_looted": "itemslooted",
    "attacking.ammunition.total": "roundsfired", "attacking.ammunition.special": "specialammoused",
    "attacking.ammunition.hollow_point": "hollowammoused", "attacking.ammunition.tracer": "tracerammoused",
    "attacking.ammunition.piercing": "piercingammoused", "attacking.ammunition.incendiary": "incendiaryammoused",
    "attacking.faction.respect": "respectforfaction", "attacking.faction.retaliations": "retals",
    "attacking.faction.ranked_war_hits": "rankedwarhits", "attacking.faction.raid_hits": "raidhits",
    "attacking.faction.territory.wall_joins": "territoryjoins",
    "attacking.faction.territory.wall_clears": "territoryclears",
    "attacking.faction.territory.wall_time": "territorytime",
    "battle_stats.strength": "strength", "battle_stats.defense": "defense", "battle_stats.speed": "speed",
    "battle_stats.dexterity": "dexterity", "battle_stats.total": "totalstats",
    "jobs.job_points_used": "jobpointsused", "jobs.trains_received": "trainsreceived",
    "jobs.stats.manual": "manuallabor", "jobs.stats.intelligence": "intelligence",
    "jobs.stats.endurance": "endurance", "jobs.stats.total": "totalworkingstats",
    "trading.items.bought.market": "itemsbought", "trading.items.bought.shops": "cityitemsbought",
    "trading.items.auctions.won": "auctionswon", "trading.items.auctions.sold": "auctionsells",
    "trading.items.sent": "itemssent", "trading.trades": "trades", "trading.points.bought": "pointsbought",
    "trading.points.sold": "pointssold", "trading.bazaar.customers": "bazaarcustomers",
    "trading.bazaar.sales": "bazaarsales", "trading.bazaar.profit": "bazaarprofit",
    "trading.item_market.customers": "itemmarketcustomers", "trading.item_market.sales": "itemmarketsales",
    "trading.item_market.revenue": "itemmarketrevenue", "trading.item_market.fees": "itemmarketfees",
    "jail.times_jailed": "jailed", "jail.busts.success": "peoplebusted", "jail.busts.fails": "failedbusts",
    "jail.bails.amount": "peoplebought", "jail.bails.fees": "peopleboughtspent",
    "hospital.times_hospitalized": "hospital", "hospital.medical_items_used": "medicalitemsused",
    "hospital.blood_withdrawn": "bloodwithdrawn", "hospital.reviving.skill": "reviveskill",
    "hospital.reviving.revives": "revives", "hospital.reviving.revives_received": "revivesreceived",
    "finishing_hits.heavy_artillery": "heahits", "finishing_hits.machine_guns": "machits",
    "finishing_hits.rifles": "rifhits", "finishing_hits.sub_machine_guns": "smghits",
    "finishing_hits.shotguns": "shohits", "finishing_hits.pistols": "pishits", "finishing_hits.temporary": "grehits",
    "finishing_hits.piercing": "piehits", "finishing_hits.slashing": "slahits", "finishing_hits.clubbing": "axehits",
    "finishing_hits.mechanical": "chahits", "finishing_hits.hand_to_hand": "h2hhits",
    "communication.mails_sent.total": "mailssent", "communication.mails_sent.friends": "friendmailssent",
    "communication.mails_sent.faction": "factionmailssent", "communication.mails_sent.colleagues": "companymailssent",
    "communication.mails_sent.spouse": "spousemailssent", "communication.classified_ads": "classifiedadsplaced",
    "communication.personals": "personalsplaced",
    "crimes.total": "criminaloffenses", "crimes.offenses.total": "criminaloffenses",
    "crimes.offenses.vandalism": "vandalism", "crimes.offenses.fraud": "fraud", "crimes.offenses.theft": "theft",
    "crimes.offenses.counterfeiting": "counterfeiting", "crimes.offenses.illicit_services": "illicitservices",
    "crimes.offenses.cybercrime": "cybercrime", "crimes.offenses.extortion": "extortion",
    "crimes.offenses.illegal_production": "illegalproduction", "crimes.offenses.organized_crimes": "organisedcrimes",
    "crimes.skills.search_for_cash": "searchforcashskill", "crimes.skills.bootlegging": "bootleggingskill",
    "crimes.skills.graffiti": "graffitiskill", "crimes.skills.shoplifting": "shopliftingskill",
    "crimes.skills.pickpocketing": "pickpocketingskill", "crimes.skills.card_skimming": "cardskimmingskill",
    "crimes.skills.burglary": "burglaryskill", "crimes.skills.hustling": "hustlingskill",
    "crimes.skills.disposal": "disposalskill", "crimes.skills.cracking": "crackingskill",
    "crimes.skills.forgery": "forgeryskill", "crimes.skills.scamming": "scammingskill",
    "crimes.skills.arson": "arsonskill",
    "bounties.placed.amount": "bountiesplaced", "bounties.placed.value": "totalbountyspent",
    "bounties.collected.amount": "bountiescollected", "bounties.collected.value": "totalbountyreward",
    "bounties.received.amount": "bountiesreceived", "bounties.received.value": "receivedbountyvalue",
    "investments.bank.total": "moneyinvested", "investments.bank.profit": "investedprofit",
    "investments.bank.current": "investamount", "investments.bank.time_remaining": "banktimeleft",
    "investments.stocks.profits": "stockprofits", "investments.stocks.losses": "stocklosses",
    "investments.stocks.fees": "stockfees", "investments.stocks.net_profits": "stocknetprofits",
    "investments.stocks.payouts": "stockpayouts",
    "items.found.city": "cityfinds", "items.found.dump": "dumpfinds", "items.found.easter_eggs": "eastereggs",
    "items.trashed": "itemsdumped", "items.used.books": "booksread", "items.used.boosters": "boostersused",
    "items.used.consumables": "consumablesused", "items.used.candy": "candyused", "items.used.alcohol": "alcoholused",
    "items.used.energy_drinks": "energydrinkused", "items.used.stat_enhancers": "statenhancersused",
    "items.used.easter_eggs": "eastereggsused", "items.viruses_coded": "virusescoded",
    "travel.total": "traveltimes", "travel.time_spent": "traveltime", "travel.items_bought": "itemsboughtabroad",
    "travel.hunting.skill": "huntingskill", "travel.attacks_won": "attackswonabroad",
    "travel.defends_lost": "defendslostabroad", "travel.argentina": "argtravel", "travel.canada": "cantravel",
    "travel.cayman_islands": "caytravel", "travel.china": "chitravel", "travel.hawaii": "hawtravel",
    "travel.japan": "japtravel", "travel.mexico": "mextravel", "travel.united_arab_emirates": "dubtravel",
    "travel.united_kingdom": "lontravel", "travel.south_africa": "soutravel", "travel.switzerland": "switravel",
    "drugs.cannabis": "cantaken", "drugs.ecstasy": "exttaken", "drugs.ketamine": "kettaken", "drugs.lsd": "lsdtaken",
    "drugs.opium": "opitaken", "drugs.pcp": "pcptaken", "drugs.shrooms": "shrtaken", "drugs.speed": "spetaken",
    "drugs.vicodin": "victaken", "drugs.xanax": "xantaken", "drugs.total": "drugsused", "drugs.overdoses": "overdosed",
    "drugs.rehabilitations.amount": "rehabs", "drugs.rehabilitations.fees": "rehabcost",
    "missions.missions": "missionscompleted", "missions.contracts.total": "contractscompleted",
    "missions.contracts.duke": "dukecontractscompleted", "missions.credits": "missioncreditsearned",
    "racing.skill": "racingskill", "racing.points": "racingpointsearned", "racing.races.entered": "racesentered",
    "racing.races.won": "raceswon",
    "networth.total": "networth", "networth.wallet": "networthwallet", "networth.vaults": "networthvault",
    "networth.bank": "networthbank", "networth.overseas_bank": "networthcayman", "networth.points": "networthpoints",
    "networth.inventory": "networthitems", "networth.display_case": "networthdisplaycase",
    "networth.bazaar": "networthbazaar", "networth.item_market": "networthitemmarket",
    "networth.property": "networthproperties", "networth.stock_market": "networthstockmarket",
    "networth.auction_house": "networthauctionhouse", "networth.bookie": "networthbookie",
    "networth.company": "networthcompany", "networth.enlisted_cars": "networthenlistedcars",
    "networth.piggy_bank": "networthpiggybank", "networth.pending": "networthpending",
    "networth.loans": "networthloan", "networth.unpaid_fees": "networthunpaidfees",
    "other.activity.time": "useractivity", "other.activity.streak.best": "bestactivestreak",
    "other.activity.streak.current": "activestreak", "other.awards": "awards", "other.merits_bought": "meritsbought",
    "other.refills.energy": "refills", "other.refills.nerve": "nerverefills", "other.refills.token": "tokenrefills",
    "other.donator_days": "daysbeendonator", "other.ranked_war_wins": "rankedwarringwins",
}
# v2 `stat=` names (PersonalStatsStatName) spelled differently from the v1 personalstats key -> the v1 name
STAT_ALIASES: dict[str, str] = {
    "heavyhits": "heahits", "machinehits": "machits", "riflehits": "rifhits", "shotgunhits": "shohits",
    "pistolhits": "pishits", "temphits": "grehits", "piercinghits": "piehits", "slashinghits": "slahits",
    "clubbinghits": "axehits", "mechanicalhits": "chahits", "uktravel": "lontravel", "satravel": "soutravel",
    "uaetravel": "dubtravel", "timespenttraveling": "traveltime", "currentkillstreak": "killstreak",
    "eastereggsfound": "eastereggs", "organizedcrimes": "organisedcrimes", "timeplayed": "useractivity",
    "marketitemsbought": "itemsbought",
}
# The battle stats selections: v1 top-level / v2 battlestats.<name>.value, and total
_BATTLE = {"strength": "strength", "defense": "defense", "speed": "speed", "dexterity": "dexterity",
           "total": "totalstats"}

# A faction's stats (v1 `faction/?selections=stats`; FactionStatEnum of the v2 spec): kept by these names
FACTION_STAT_NAMES = (
    "medicalitemsused", "criminaloffences", "organisedcrimerespect", "organisedcrimemoney", "organisedcrimesuccess",
    "organisedcrimefail", "attackswon", "attackslost", "attackschain", "attacksleave", "attacksmug", "attackshosp",
    "bestchain", "busts", "revives", "jails", "hosps", "medicalitemrecovery", "medicalcooldownused", "gymtrains",
    "gymstrength", "gymspeed", "gymenergy", "gymdefense", "gymdexterity", "candyused", "alcoholused",
    "energydrinkused", "drugsused", "drugoverdoses", "rehabs", "caymaninterest", "traveltimes", "traveltime",
    "hunting", "attacksdamagehits", "attacksdamage", "hosptimegiven", "hosptimereceived", "attacksdamaging",
    "attacksrunaway", "highestterritories", "territoryrespect",
)

# Clock-like: they move with time, not with play (activity time, streaks, days, countdowns).
DEFAULT_EXCLUDED = frozenset({"useractivity", "activestreak", "bestactivestreak", "killstreak", "daysbeendonator",
                              "traveltime", "territorytime", "banktimeleft"})

PLAYER_VIEWS = frozenset({"v1.personalstats", "v2.personalstats", "v1.battlestats", "v2.battlestats"})
FACTION_VIEWS = frozenset({"v1.faction_stats", "v1.faction", "v2.faction_stats"})
VIEWS = PLAYER_VIEWS | FACTION_VIEWS


class Tracking:
    """Which stats are tracked: `include` (None: every numeric stat) minus `exclude`."""

    def __init__(self, include: Iterable[str] | None = None, exclude: Iterable[str] = DEFAULT_EXCLUDED):
        self.include = frozenset(include) if include is not None else None
        self.exclude = frozenset(exclude)

    def __call__(self, stat: str) -> bool:
        return stat not in self.exclude and (self.include is None or stat in self.include)

    def describe(self) -> dict[str, Any]:
        return {"include": sorted(self.include) if self.include is not None else None,
                "exclude": sorted(self.exclude)}


ENV_INCLUDE, ENV_EXCLUDE = "TORNSTORE_STATS_INCLUDE", "TORNSTORE_STATS_EXCLUDE"   # comma-separated names


def _env_names(name: str) -> list[str] | None:
    value = os.environ.get(name)
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def configure(include: Iterable[str] | None = None, exclude: Iterable[str] | None = None, *,
              export: bool = False) -> Tracking:
    """Set which stats the projection tracks in this process: `include` (None: all numeric ones), `exclude`
    (None: the clock-like DEFAULT_EXCLUDED; () tracks those too). With `export`, also in the environment
    (TORNSTORE_STATS_INCLUDE / _EXCLUDE, read at import), so child processes that ingest (the collector's)
    track the same. Rows already written stay; `tornstore replay` rebuilds stat_history with the set in force."""
    global TRACKING
    TRACKING = Tracking(include, DEFAULT_EXCLUDED if exclude is None else exclude)
    if export:
        for var, names in ((ENV_INCLUDE, include), (ENV_EXCLUDE, exclude)):
            if names is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = ",".join(names)
    return TRACKING


_excluded = _env_names(ENV_EXCLUDE)
TRACKING = Tracking(_env_names(ENV_INCLUDE), DEFAULT_EXCLUDED if _excluded is None else _excluded)


def stat_name(raw: str) -> str:
    """The stable name of a v1 personalstats key, a v2 `stat=` name or a v2 dotted leaf path."""
    if "." in raw:
        return PATH_NAMES.get(raw, raw.replace(".", "_"))
    return STAT_ALIASES.get(raw, raw)


def known_stats(kind: str = "player") -> list[str]:
    """Every stable name this module knows of a player's or a faction's stats (help texts, 'did you mean')."""
    if kind == "faction":
        return sorted(FACTION_STAT_NAMES)
    return sorted({*PATH_NAMES.values(), *STAT_ALIASES.values(), "arrestsmade", "dumpsearches", "weaponsbought",
                   "autotheftcrime", "computercrime", "criminaloffensesold", "drugdealscrime", "fraudold",
                   "murdercrime", "othercrime", "sellillegalgoods", "theftold"})


# ------------------------------------------------------------------------------------------ values
_decode_json = msgspec.json.Decoder().decode


def _number(value: Any) -> int | float | None:
    t = type(value)
    if t is int or t is float:
        return value
    return None   # bool, str, None, objects: not a stat value


def _name_tree(paths: dict[str, str]) -> dict[str, Any]:
    """PATH_NAMES as nested dicts, walked beside a payload: no path string is built for a known leaf."""
    root: dict[str, Any] = {}
    for path, name in paths.items():
        *parents, leaf = path.split(".")
        node = root
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = name
    return root


_NAME_TREE = _name_tree(PATH_NAMES)


def _walk(node: dict, names: dict[str, Any] | None, prefix: str, out: dict[str, int | float]) -> None:
    for key, value in node.items():
        known = names.get(key) if names is not None else None
        if type(value) is dict:
            _walk(value, known if type(known) is dict else None, f"{prefix}{key}.", out)
        else:
            t = type(value)
            if t is int or t is float:
                out[known if type(known) is str else f"{prefix}{key}".replace(".", "_")] = value


def stat_values(view: str, payload: Any, observed_at: int) -> dict[str, int | float]:
    """Every numeric stat a payload carries, by stable name (tracked or not)."""
    if type(payload) is bytes:
        if view == "v1.faction" and b'"stats"' not in payload:
            return {}   # (a faction basic poll without stats: most v1.faction events)
        payload = _decode_json(payload)
    if type(payload) is not dict:
        return {}
    out: dict[str, int | float] = {}
    if view == "v1.personalstats":
        body = payload.get("personalstats")
        if type(body) is dict:
            for key, value in body.items():
                number = _number(value)
                if number is not None:
                    out[STAT_ALIASES.get(str(key), str(key))] = number
    elif view == "v2.personalstats":
        body = payload.get("personalstats")
        if type(body) is dict:
            _walk(body, _NAME_TREE, "", out)
        elif type(body) is list:
            for item in body:
                if type(item) is not dict or type(item.get("name")) is not str:
                    continue
                stamp = item.get("timestamp")
                number = _number(item.get("value"))
                if number is not None and (type(stamp) is not int or stamp >= observed_at - DAY):
                    out[stat_name(item["name"])] = number
    elif view == "v1.battlestats":
        for key, name in _BATTLE.items():
            number = _number(payload.get(key))
            if number is not None:
                out[name] = number
    elif view == "v2.battlestats":
        body = payload.get("battlestats")
        if type(body) is dict:
            for key, name in _BATTLE.items():
                value = body.get(key)
                number = _number(value.get("value") if type(value) is dict else value)
                if number is not None:
                    out[name] = number
    elif view in FACTION_VIEWS:
        body = payload.get("stats")
        if type(body) is dict:
            for key, value in body.items():
                number = _number(value)
                if number is not None:
                    out[key] = number
        elif type(body) is list:   # (v2 /faction/stats: [{name, value}])
            for item in body:
                if type(item) is dict and type(item.get("name")) is str:
                    number = _number(item.get("value"))
                    if number is not None:
                        out[item["name"]] = number
    return out


def tracked_values(view: str, payload: Any, observed_at: int) -> dict[str, int | float]:
    values = stat_values(view, payload, observed_at)
    tracking = TRACKING
    if tracking.include is None:
        for name in tracking.exclude.intersection(values):
            del values[name]
        return values
    return {k: v for k, v in values.items() if tracking(k)}


_TOP, _BOTTOM = (1 << 63) - 1, -(1 << 63)


def _fits(values: dict[str, int | float], entity: str, key: int, view: str) -> None:
    """Refuse a value SQLite cannot store as a 64-bit integer (the message names it: check_int64)."""
    if values and (max(values.values()) > _TOP or min(values.values()) < _BOTTOM):
        check_int64(values, entity, key, view)


# ------------------------------------------------------------------------------------------ state
_ENTITY = {"user": "player", "faction": "faction"}
Key = tuple[str, int]                   # (entity_type as in stat_history, entity_id)
Row = list                              # [recorded_at, value, row_id]


class StatState:
    """The rows in force of the entities folded in one working set: per entity, each stat's newest row; the
    newest event time folded per entity (`marks`); rows to insert or update at the flush."""

    def __init__(self, ws: WorkSet, complete: bool):
        self.conn, self.complete = ws.conn, complete
        self.horizon, self.kept = ws.horizon, ws.kept
        self.rows: dict[Key, dict[str, Row]] = {}
        self.marks: dict[Key, int | None] = {}
        self.pending: dict[int, tuple] = {}     # row id -> (entity_type, entity_id, stat, t, value, position)
        self.updated: dict[int, tuple] = {}     # row id -> (value, position)
        self._next_id: int | None = None
        if complete:
            self._load_all()

    # -- reads
    def _load_all(self) -> None:
        self.rows.clear()
        if self.kept:
            self._store(self.conn.execute(
                "SELECT entity_type, entity_id, stat, recorded_at, value, id FROM stat_history_at_horizon"))
            self._store(self.conn.execute(
                f"SELECT entity_type, entity_id, stat, recorded_at, value, id FROM {TABLE} WHERE recorded_at >= ? "
                "ORDER BY recorded_at, id", (self.horizon,)))
        else:
            self._store(self.conn.execute(
                f"SELECT entity_type, entity_id, stat, recorded_at, value, id FROM {TABLE} ORDER BY recorded_at, id"))

    def _store(self, rows: Iterable[tuple]) -> None:
        """Per stat, the newest row (by time, then id) of those in memory and `rows` stays."""
        for etype, eid, stat, t, value, row_id in rows:
            known = self.rows.setdefault((etype, eid), {})
            prev = known.get(stat)
            if prev is None or (t, row_id) >= (prev[0], prev[2]):
                known[stat] = [t, value, row_id]

    def prefetch(self, keys: Iterable[Key]) -> None:
        """The rows in force now of the entities `keys` not in memory, one statement per entity type."""
        if self.complete:
            return
        wanted: dict[str, list[int]] = {}
        for key in set(keys):
            if key not in self.rows:
                wanted.setdefault(key[0], []).append(key[1])
                self.rows[key] = {}
        for etype, ids in wanted.items():
            listed = msgspec.json.encode(sorted(ids)).decode()
            if self.kept:
                self._store(self._newest_sql("stat_history_at_horizon", "", etype, listed, ()))
                self._store(self._newest_sql(TABLE, "AND recorded_at >= ?", etype, listed, (self.horizon,)))
            else:
                self._store(self._newest_sql(TABLE, "", etype, listed, ()))

    def _newest_sql(self, table: str, where: str, etype: str, listed: str, args: tuple) -> Iterable[tuple]:
        return _newest(self.conn, table, "entity_id IN (SELECT value FROM json_each(?)) " + where, etype,
                       (listed, *args))

    def prefetch_marks(self, keys: Iterable[Key], before_position: int) -> None:
        if self.complete:
            return
        wanted: dict[str, list[int]] = {}
        for key in set(keys):
            if key not in self.marks:
                wanted.setdefault(key[0], []).append(key[1])
        for etype, ids in wanted.items():
            stream_type = "user" if etype == "player" else "faction"
            views = sorted(PLAYER_VIEWS if etype == "player" else FACTION_VIEWS)
            found = newest_observed(self.conn, stream_type, views, ids, before_position)
            for i in ids:
                self.marks[(etype, i)] = found.get(str(i))

    def of(self, key: Key) -> dict[str, Row]:
        rows = self.rows.get(key)
        if rows is None:
            if self.complete:
                rows = self.rows[key] = {}
            else:
                self.prefetch((key,))
                rows = self.rows[key]
        return rows

    def mark(self, key: Key, position: int) -> int | None:
        if key not in self.marks:
            if self.complete:
                return None
            self.prefetch_marks((key,), position)
        return self.marks[key]

    def rows_before(self, key: Key, start: int) -> dict[str, Row]:
        """Each stat's row in force just before `start` (after the entity's rows from `start` on are gone)."""
        etype, eid = key
        out: dict[str, Row] = {}
        sources = [(TABLE, "")]
        if self.kept:
            sources = [("stat_history_at_horizon", ""), (TABLE, "AND recorded_at >= ?")]
        for table, where in sources:
            args = (self.horizon,) if where else ()
            for _, _, stat, t, value, row_id in _newest(self.conn, table, f"entity_id = ? AND recorded_at < ? {where}",
                                                        etype, (eid, start, *args)):
                prev = out.get(stat)
                if prev is None or (t, row_id) >= (prev[0], prev[2]):
                    out[stat] = [t, value, row_id]
        return out

    def set_horizon(self, horizon: int, kept: bool) -> None:
        if horizon == self.horizon and kept == self.kept:
            return
        self.flush()
        self.horizon, self.kept = horizon, kept
        if self.complete:
            self._load_all()
        else:
            self.rows.clear()

    # -- writes
    def next_id(self) -> int:
        if self._next_id is None:
            self._next_id = last_row_id(self.conn, TABLE)
        self._next_id += 1
        return self._next_id

    def put(self, key: Key, rows: dict[str, Row], values: dict[str, int | float], t: int, position: int) -> None:
        """Fold one observation's values into the entity's rows: a row per stat that changed."""
        etype, eid = key
        for stat, value in values.items():
            prev = rows.get(stat)
            if prev is not None and prev[1] == value:
                continue
            if prev is not None and prev[0] == t:   # the same observation: one row per stat
                row_id = prev[2]
                prev[1] = value
                if row_id in self.pending:
                    self.pending[row_id] = (etype, eid, stat, t, value, position)
                else:
                    self.updated[row_id] = (value, position)
                continue
            row_id = self.next_id()
            self.pending[row_id] = (etype, eid, stat, t, value, position)
            rows[stat] = [t, value, row_id]

    def drop_from(self, key: Key, start: int) -> None:
        self.flush()
        self.conn.execute(f"DELETE FROM {TABLE} WHERE entity_type = ? AND entity_id = ? AND recorded_at >= ?",
                          (key[0], key[1], start))
        self.rows[key] = self.rows_before(key, start)

    def flush(self) -> None:
        if self.pending:
            self.conn.executemany(
                f"INSERT INTO {TABLE} (id, entity_type, entity_id, stat, recorded_at, value, event_position) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", [(row_id, *row) for row_id, row in sorted(self.pending.items())])
            ids_written(self.conn, TABLE, max(self.pending))
            self.pending.clear()
        if self.updated:
            self.conn.executemany(f"UPDATE {TABLE} SET value = ?, event_position = ? WHERE id = ?",
                                  [(*row, row_id) for row_id, row in sorted(self.updated.items())])
            self.updated.clear()


def _newest(conn: sqlite3.Connection, table: str, where: str, etype: str, args: tuple) -> Iterable[tuple]:
    """Per (entity, stat) of `etype` matching `where`, its newest row(s): the newest time of each is found in
    the (entity_type, entity_id, stat, recorded_at) index alone, then its rows (one, but for a tie: the
    caller keeps the highest id)."""
    return conn.execute(
        "SELECT h.entity_type, h.entity_id, h.stat, h.recorded_at, h.value, h.id FROM (SELECT entity_id AS e, "
        f"stat AS s, MAX(recorded_at) AS t FROM {table} WHERE entity_type = ? AND {where} GROUP BY entity_id, stat) "
        f"AS m JOIN {table} AS h ON h.entity_type = ? AND h.entity_id = m.e AND h.stat = m.s AND h.recorded_at = m.t "
        "ORDER BY h.recorded_at, h.id", (etype, *args, etype))


_AHEAD = 5000   # a batch of the runner is at most this many events (inline: one ingest batch)


def _make_state(ws: WorkSet, position: int) -> StatState:
    """The working set's StatState, made at the event at `position`: inline, the rows in force and the marks
    of the batch's entities are read then, one statement per entity type."""
    state = StatState(ws, ws.players.complete)
    if not state.complete:
        if ws.batch is not None:
            events, position = ws.batch
            found = {(e.stream.entity_type, e.stream.entity_id) for e in events if e.stream.view in VIEWS}
        else:   # a catch-up: the events that follow in the log
            views = sorted(VIEWS)
            found = set(ws.conn.execute(
                "SELECT DISTINCT s.entity_type, s.entity_id FROM events e JOIN streams s USING (stream_id) "
                f"WHERE e.position BETWEEN ? AND ? AND s.view IN ({', '.join('?' * len(views))})",
                (position, position + _AHEAD, *views)))
        keys = sorted((_ENTITY[etype], int(eid)) for etype, eid in found
                      if etype in _ENTITY and eid.isascii() and eid.isdigit())
        state.prefetch(keys)
        state.prefetch_marks(keys, position)
    return state


def state_of(ws: WorkSet, position: int) -> StatState:
    """The working set's StatState (made on first use, written back with the working set's flush)."""
    return ws.part(TABLE, lambda ws: _make_state(ws, position))  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ the fold
class StatHistoryHandler(FoldHandler):
    name = "stat_history"
    views = VIEWS
    history_tables = (TABLE,)
    state_tables = ()

    def fold(self, ws: WorkSet, event: Event, ctx: Context) -> None:
        stream = event.stream
        etype = _ENTITY.get(stream.entity_type)
        if etype is None:
            return
        if etype == "player" and stream.view not in PLAYER_VIEWS or etype == "faction" and \
                stream.view not in FACTION_VIEWS:
            return
        entity_id = stream.entity_id
        if not (entity_id.isascii() and entity_id.isdigit()):
            raise ProjectionError(f"{stream.entity_type} {entity_id!r}: not a {etype} id")
        t = event.observed_at
        if t < ctx.horizon:
            return
        values = tracked_values(stream.view, event.payload, t)
        if not values:
            return
        key = (etype, int(entity_id))
        _fits(values, stream.entity_type, key[1], stream.view)
        state = state_of(ws, event.position)
        state.set_horizon(ctx.horizon, ctx.kept)
        mark = state.mark(key, event.position)
        if mark is not None and t < mark:
            self.refold(state, key, stream.entity_type, entity_id, event, ctx)
            return
        state.marks[key] = t if mark is None else max(mark, t)
        state.put(key, state.of(key), values, t, event.position)

    def refold(self, state: StatState, key: Key, stream_type: str, entity_id: str, event: Event,
               ctx: Context) -> None:
        """Fold the entity's events from this late event's time on again, in time order."""
        start = max(event.observed_at, ctx.horizon)
        state.drop_from(key, start)
        rows = state.rows[key]
        newest = start
        for later in _events_from(state.conn, stream_type, entity_id, start, event.position):
            try:
                values = tracked_values(later.stream.view, later.payload, later.observed_at)
                _fits(values, stream_type, key[1], later.stream.view)
            except (ProjectionError, ValueError, TypeError):
                continue   # recorded when it was first projected
            if values:
                state.put(key, rows, values, later.observed_at, later.position)
            newest = max(newest, later.observed_at)
        state.marks[key] = max(newest, state.marks.get(key) or newest)


def _events_from(conn: sqlite3.Connection, stream_type: str, entity_id: str, start: int,
                 upto: int) -> Iterator[Event]:
    views = sorted(PLAYER_VIEWS if stream_type == "user" else FACTION_VIEWS)
    rows = conn.execute(
        "SELECT e.position, s.view, e.version, e.observed_at, e.payload, e.source_url FROM streams s "
        "JOIN events e ON e.stream_id = s.stream_id WHERE s.entity_type = ? AND s.entity_id = ? "
        f"AND s.view IN ({', '.join('?' * len(views))}) AND e.observed_at >= ? AND e.position <= ? "
        "ORDER BY e.observed_at, e.position", (stream_type, entity_id, *views, start, upto)).fetchall()
    for position, view, version, observed_at, payload, url in rows:
        yield Event(position, StreamKey(stream_type, entity_id, view), version, observed_at,
                    _decode_json(payload), url)


# ------------------------------------------------------------------------------------------ names
def names_table() -> str:
    """The stat names as a markdown table: name, v2 leaf, v2 stat= spelling when it differs, tracked."""
    by_name: dict[str, list[str]] = {}
    for path, name in PATH_NAMES.items():
        by_name.setdefault(name, []).append(path)
    aliases: dict[str, list[str]] = {}
    for alias, name in STAT_ALIASES.items():
        aliases.setdefault(name, []).append(alias)
    lines = ["| stat | v2 personalstats leaf | v2 `stat=` spelling (when not the name) | tracked by default |",
             "|---|---|---|---|"]
    for name in known_stats():
        paths = ", ".join(f"`{p}`" for p in by_name.get(name, ())) or "(v1 only)"
        alias = ", ".join(f"`{a}`" for a in aliases.get(name, ()))
        tracked = "no (clock-like)" if name in DEFAULT_EXCLUDED else "yes"
        lines.append(f"| `{name}` | {paths} | {alias} | {tracked} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(names_table(), end="")
