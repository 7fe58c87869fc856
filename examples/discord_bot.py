"""A small Discord bot that answers from a tornstore database.

    pip install 'tornstore[bot,plot]'
    TORNSTORE_DB=torn.db DISCORD_TOKEN=... python examples/discord_bot.py
    # optional: ALERT_CHANNEL_ID=<channel id> posts the change feed (joins, leaves, level ups, wars) there
    # optional: FACTION_ID=<your faction's id> adds /leaderboard for it

Slash commands: /player ID, /faction ID, /history player|faction ID STAT [since] (STAT: any stat the store
keeps, e.g. strength, respect, xantaken, refills), and with FACTION_ID /leaderboard STAT [month] (the
faction's members ranked by how much STAT grew that month, YYYY-MM; default: this month so far).
The handlers below are plain async functions of (store, arguments) that return a `Reply` (text and an
optional chart file), so they can be tested without Discord; only `build_bot()` and `main()` import discord.py.

The bot only reads. Filling the database is the collector's job, or the bot's own
API client can hand every response it fetches to `await store.ingest(url, body, observed_at)`.
"""
# No `from __future__ import annotations` here: discord.py reads the annotations of the command callbacks
# when they are registered, and resolves string annotations in the module globals, where `discord` and
# `app_commands` do not exist (they are imported inside build_bot so the module imports without discord.py).
# Evaluated when each callback is defined, the annotations are the real discord.py objects.
import asyncio
import contextlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tornstore.projections.queries import PLAYER_STATS, QueryError, STATS, format_time
from tornstore.projections.store import Store

if TYPE_CHECKING:
    import discord
    from discord import app_commands

log = logging.getLogger("tornstore.discord_bot")

DISCORD_LIMIT = 2000  # characters per message


@dataclass
class Reply:
    """What a command answers: text, and a file (a chart) to attach when there is one."""
    text: str
    file: Path | None = None


def _n(value) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def _clip(text: str) -> str:
    return text if len(text) <= DISCORD_LIMIT else text[:DISCORD_LIMIT - 2] + " …"


async def handle_player(store: Store, player_id: int) -> Reply:
    view = await store.player(player_id)
    if view is None:
        return Reply(f"I know nothing about player {player_id} yet.")
    faction = f"{view.faction_name} [{view.faction_id}]" if view.faction_id else "no faction"
    lines = [f"**{view.name}** [{view.player_id}], level {_n(view.level)}, {faction}"]
    if view.status_state:
        lines.append(f"Status: {view.status_state}" + (
            f" ({view.status_description})" if view.status_description not in (None, "", view.status_state)
            else ""))
    if view.stats is not None:
        stats = ", ".join(f"{s.replace('_', ' ')} {_n(getattr(view.stats, s))}" for s in PLAYER_STATS
                          if s not in ("level",) and getattr(view.stats, s) is not None)
        if stats:
            lines.append(f"Stats ({format_time(view.stats.at)}): {stats}")
    lines.append(f"Data: {view.freshness.describe()}")
    return Reply(_clip("\n".join(lines)))


async def handle_faction(store: Store, faction_id: int, max_members: int = 25) -> Reply:
    view = await store.faction(faction_id)
    if view is None:
        return Reply(f"I know nothing about faction {faction_id} yet.")
    lines = [f"**{view.name}** [{view.faction_id}]" + (f" {view.tag}" if view.tag else ""),
             f"Respect {_n(view.respect)}, best chain {_n(view.best_chain)}, members {_n(view.member_count)}"]
    if view.territories:
        lines.append("Territories: " + ", ".join(view.territories))
    if view.members:
        shown = view.members[:max_members]
        lines.append("Members: " + ", ".join(f"{m.name or '?'} ({_n(m.level)})" for m in shown)
                     + (f" and {len(view.members) - len(shown)} more" if len(view.members) > len(shown) else ""))
    lines.append(f"Data: {view.freshness.describe()}")
    return Reply(_clip("\n".join(lines)))


async def handle_history(store: Store, kind: str, entity_id: int, stat: str, since: str | None = None,
                         chart_dir: str | Path | None = None) -> Reply:
    """Text summary of a series plus a PNG chart (when matplotlib is installed and there are points)."""
    if kind not in STATS:
        return Reply("Kind must be 'player' or 'faction'.")
    try:
        if stat in STATS[kind] or any(stat in names for names in STATS.values()):
            series = await store.history(kind, entity_id, stat, since=since)   # the plan's typed stats
        else:
            series = await store.stat_series(kind, entity_id, stat, since=since)   # any other stat kept
    except QueryError as exc:
        return Reply(str(exc))
    stat = series.stat
    who = f"{series.name} [{entity_id}]" if series.name else f"{kind} {entity_id}"
    if not series.points:
        return Reply(f"No {stat} data for {who}" + (f" since {since}" if since else "") + ".")
    first, last = series.points[0], series.points[-1]
    change = last.value - first.value
    text = (f"**{who}** {stat.replace('_', ' ')}: {_n(first.value)} ({format_time(first.at)}) -> "
            f"{_n(last.value)} ({format_time(last.at)}), change {change:+,} over {len(series.points)} points")
    try:
        from tornstore.projections.charts import ChartsUnavailable, plot_series
    except ImportError:  # pragma: no cover - the module itself has no hard dependency
        return Reply(text)
    out_dir = Path(chart_dir) if chart_dir else Path(tempfile.gettempdir())
    path = out_dir / f"{kind}-{entity_id}-{stat}.png"
    try:
        # Drawing is CPU work: keep it off the event loop.
        await asyncio.to_thread(plot_series, series, path)
    except ChartsUnavailable:
        return Reply(text + "\n(charts need matplotlib: pip install 'tornstore[plot]')")
    return Reply(_clip(text), path)


async def handle_leaderboard(store: Store, faction_id: int, stat: str, month: str | None = None,
                             top: int = 15, now: int | None = None) -> Reply:
    """The faction's members ranked by the change of `stat` in `month` (YYYY-MM; default: this month so far)."""
    try:
        if month:
            board = await store.leaderboard(faction_id, stat, month=month)
        else:
            t = int(time.time()) if now is None else now
            first = datetime.fromtimestamp(t, UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            board = await store.leaderboard(faction_id, stat, since=int(first.timestamp()), until=t)
    except QueryError as exc:
        return Reply(str(exc))
    period = board.month or f"{format_time(board.since)[:10]} to {format_time(board.until)[:16]}"
    who = f"{board.faction_name} [{faction_id}]" if board.faction_name else f"faction {faction_id}"
    ranked = [r for r in board.rows if r.rank is not None]
    if not ranked:
        return Reply(f"No {board.stat} data for the members of {who} in {period}.")
    lines = [f"**{board.stat}**, {who}, {period}:"]
    for r in ranked[:top]:
        note = ", ".join(x for x in (f"joined {format_time(r.joined)[:10]}" if r.joined else "",
                                     f"left {format_time(r.left)[:10]}" if r.left else "") if x)
        lines.append(f"{r.rank}. {r.name or '?'} [{r.player_id}] {r.change:+,}" + (f" ({note})" if note else ""))
    if len(ranked) > top:
        lines.append(f"... and {len(ranked) - top} more")
    return Reply(_clip("\n".join(lines)))


async def alert_texts(store: Store, position: int | None = None, idle_timeout: float | None = None):
    """Each alert's text as soon as its event is stored, by this host or another (`position` None: from now
    on). `store.watch_changes` waits for the next commit (LISTEN/NOTIFY on PostgreSQL, a poll of the file each
    second on SQLite) instead of asking every minute."""
    async with contextlib.aclosing(store.watch_changes(position, limit=50, idle_timeout=idle_timeout)) as feeds:
        async for feed in feeds:
            for change in feed.changes:
                yield change.text


def build_bot(store: Store, alert_channel: int | None = None, faction_id: int | None = None
              ) -> "tuple[discord.Client, app_commands.CommandTree]":
    """A Discord client with the slash commands registered on its command tree, answering from `store`.

    Nothing connects here: `client.start(token)` does, and syncs the commands with Discord on the way.
    `alert_channel`: a channel id to post the change feed to, each alert as soon as it is stored.
    `faction_id`: the faction whose members /leaderboard ranks (no /leaderboard without it).
    """
    import discord
    from discord import app_commands

    client = discord.Client(intents=discord.Intents.default())
    tree = app_commands.CommandTree(client)

    async def answer(interaction: discord.Interaction, reply: Reply) -> None:
        """Send a handler's reply as the follow-up of a deferred interaction, the chart attached."""
        if reply.file is None:
            await interaction.followup.send(reply.text)
        else:
            await interaction.followup.send(reply.text, file=discord.File(reply.file))

    # Each command defers first: Discord drops an interaction not answered within 3 seconds, and a query
    # or a chart can take longer than that on a busy database.
    @tree.command(description="A player's current state and stats")
    @app_commands.describe(player_id="Torn player id")
    async def player(interaction: discord.Interaction, player_id: int) -> None:
        await interaction.response.defer()
        await answer(interaction, await handle_player(store, player_id))

    @tree.command(description="A faction and its members")
    @app_commands.describe(faction_id="Torn faction id")
    async def faction(interaction: discord.Interaction, faction_id: int) -> None:
        await interaction.response.defer()
        await answer(interaction, await handle_faction(store, faction_id))

    @tree.command(description="A stat over time, with a chart")
    @app_commands.describe(kind="a player or a faction", entity_id="its Torn id", stat="e.g. strength, level, respect",
                           since="only points from this date on, e.g. 2025-09-01")
    @app_commands.choices(kind=[app_commands.Choice(name=k, value=k) for k in STATS])
    async def history(interaction: discord.Interaction, kind: app_commands.Choice[str], entity_id: int,
                      stat: str, since: str | None = None) -> None:
        await interaction.response.defer()
        with tempfile.TemporaryDirectory() as tmp:  # the chart only has to live until it is sent
            await answer(interaction, await handle_history(store, kind.value, entity_id, stat, since, tmp))

    if faction_id is not None:
        @tree.command(description="Your faction's members ranked by how much a stat grew in a month")
        @app_commands.describe(stat="e.g. xantaken, refills, attackswon, respectforfaction",
                               month="YYYY-MM, e.g. 2026-10 (default: this month so far)")
        async def leaderboard(interaction: discord.Interaction, stat: str, month: str | None = None) -> None:
            await interaction.response.defer()
            await answer(interaction, await handle_leaderboard(store, faction_id, stat, month))

    async def post_alerts() -> None:
        channel = client.get_channel(alert_channel)
        if channel is None:
            log.warning("alert channel %s not found (or not visible to the bot): no alerts", alert_channel)
            return
        async with contextlib.aclosing(alert_texts(store)) as texts:
            async for text in texts:
                await channel.send(_clip(text))

    background: set[asyncio.Task] = set()  # a reference, so the alert task is not garbage-collected

    @client.event
    async def setup_hook() -> None:
        await tree.sync()

    @client.event
    async def on_ready() -> None:  # runs again after each reconnect: start the alerts only once
        if alert_channel and not background:
            background.add(asyncio.create_task(post_alerts()))

    return client, tree


async def run_bot(db_path: str, token: str, alert_channel: int | None = None,
                  faction_id: int | None = None) -> None:  # pragma: no cover
    """Open the database, then connect to Discord until stopped; both are closed on the way out."""
    async with Store.open(db_path) as store:
        client, _ = build_bot(store, alert_channel, faction_id)
        async with client:
            await client.start(token)


def main() -> None:
    """Run the bot from the environment, or exit with a message saying what is missing."""
    try:
        import discord
    except ImportError:
        raise SystemExit("the bot needs discord.py: pip install 'tornstore[bot]'") from None
    token = os.environ.get("DISCORD_TOKEN", "").strip()
    if not token:
        raise SystemExit("DISCORD_TOKEN is not set: put the bot's token (Discord developer portal, Bot tab) "
                         "in the environment")
    channel = os.environ.get("ALERT_CHANNEL_ID", "").strip()
    if channel and not channel.isdigit():
        raise SystemExit(f"ALERT_CHANNEL_ID must be a channel id (digits), not {channel!r}")
    faction = os.environ.get("FACTION_ID", "").strip()
    if faction and not faction.isdigit():
        raise SystemExit(f"FACTION_ID must be a faction id (digits), not {faction!r}")
    db_path = os.environ.get("TORNSTORE_DB", "torn.db")
    if not Path(db_path).is_file():
        raise SystemExit(f"no database at {db_path}: set TORNSTORE_DB, or create one with "
                         f"`tornstore --db {db_path} init` and fill it with the collector")
    discord.utils.setup_logging()  # what client.run() would do; the token is never logged
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops the bot without a traceback
        asyncio.run(run_bot(db_path, token, int(channel) if channel else None, int(faction) if faction else None))


if __name__ == "__main__":  # pragma: no cover
    main()
