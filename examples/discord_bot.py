"""A small Discord bot that answers from a tornstore database.

    pip install 'tornstore[bot,plot]'
    TORNSTORE_DB=torn.db DISCORD_TOKEN=... python examples/discord_bot.py
    # optional: ALERT_CHANNEL_ID=<channel id> posts the change feed (joins, leaves, level ups, wars) there

Slash commands: /player ID, /faction ID, /history player|faction ID STAT [since]. The handlers below are
plain async functions of (store, arguments) that return a `Reply` (text and an optional chart file), so
they can be tested without Discord; only `main()` imports discord.py.

The bot only reads. Filling the database is the collector's job, or the bot's own
API client can hand every response it fetches to `await store.ingest(url, body, observed_at)`.
"""
from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tornstore.projections.queries import PLAYER_STATS, QueryError, STATS, format_time
from tornstore.projections.store import Store

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
        series = await store.history(kind, entity_id, stat, since=since)
    except QueryError as exc:
        return Reply(str(exc))
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


async def poll_changes(store: Store, position: int | None, limit: int = 50) -> tuple[list[str], int]:
    """Alert texts since `position` (None: start from now, reporting nothing) and the position to ask next."""
    if position is None:
        return [], await store.head_position()
    feed = await store.changes_since(position, limit)
    return [c.text for c in feed.changes], feed.next_position


def main() -> None:  # pragma: no cover - needs a Discord token and discord.py
    import discord
    from discord import app_commands

    db_path = os.environ.get("TORNSTORE_DB", "torn.db")
    token = os.environ["DISCORD_TOKEN"]
    alert_channel = int(os.environ.get("ALERT_CHANNEL_ID", "0")) or None

    intents = discord.Intents.default()
    client = discord.Client(intents=intents)
    tree = app_commands.CommandTree(client)
    state: dict = {}

    async def send(interaction: discord.Interaction, reply: Reply) -> None:
        if reply.file is not None:
            await interaction.followup.send(reply.text, file=discord.File(reply.file))
        else:
            await interaction.followup.send(reply.text)

    @tree.command(description="A player's current state and stats")
    async def player(interaction: discord.Interaction, player_id: int) -> None:
        await interaction.response.defer()
        await send(interaction, await handle_player(state["store"], player_id))

    @tree.command(description="A faction and its members")
    async def faction(interaction: discord.Interaction, faction_id: int) -> None:
        await interaction.response.defer()
        await send(interaction, await handle_faction(state["store"], faction_id))

    @tree.command(description="A stat over time, with a chart")
    @app_commands.choices(kind=[app_commands.Choice(name=k, value=k) for k in STATS])
    async def history(interaction: discord.Interaction, kind: app_commands.Choice[str], entity_id: int,
                      stat: str, since: str | None = None) -> None:
        await interaction.response.defer()
        with tempfile.TemporaryDirectory() as tmp:
            await send(interaction, await handle_history(state["store"], kind.value, entity_id, stat, since, tmp))

    async def alerts() -> None:
        position = None
        channel = client.get_channel(alert_channel)
        while True:
            texts, position = await poll_changes(state["store"], position)
            for text in texts:
                await channel.send(_clip(text))
            await asyncio.sleep(60)

    @client.event
    async def setup_hook() -> None:
        state["store"] = await Store.open(db_path, create=False)
        await tree.sync()

    @client.event
    async def on_ready() -> None:
        if alert_channel and "alerts" not in state:
            state["alerts"] = asyncio.create_task(alerts())

    client.run(token)


if __name__ == "__main__":  # pragma: no cover
    main()
