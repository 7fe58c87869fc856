"""The Discord example: its handlers, and its slash commands built on a real discord.py command tree and
called with a recorded stand-in for Discord's interaction (no network, no token), against a real database.
The module itself imports without discord.py."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tornstore.projections.store import Store

from .test_queries import build_world

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "discord_bot.py"


@pytest.fixture(scope="module")
def bot():
    spec = importlib.util.spec_from_file_location("discord_bot_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture
async def store(db_path):
    build_world(db_path)
    s = await Store.open(db_path, create=False)
    yield s
    await s.close()


def test_importing_needs_no_discord(monkeypatch):
    monkeypatch.setitem(sys.modules, "discord", None)  # as if discord.py were not installed
    spec = importlib.util.spec_from_file_location("discord_bot_without_discord", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    assert callable(module.main) and callable(module.handle_player)
    monkeypatch.setenv("DISCORD_TOKEN", "not-a-real-token")
    with pytest.raises(SystemExit) as stopped:
        module.main()
    assert stopped.value.code == "the bot needs discord.py: pip install 'tornstore[bot]'"


async def test_player_and_faction_replies(bot, store):
    reply = await bot.handle_player(store, 1)
    assert reply.file is None
    assert reply.text.splitlines()[0] == "**Alice** [1], level 11, Alpha [9420]"
    assert "strength 350" in reply.text and "Data: unchanged since" in reply.text
    faction = await bot.handle_faction(store, 9420, max_members=2)
    assert "Respect 1,050,000" in faction.text and "Territories: AAC" in faction.text
    assert "Members: Carol (20), Alice (11) and 1 more" in faction.text
    assert (await bot.handle_player(store, 999)).text == "I know nothing about player 999 yet."
    assert (await bot.handle_faction(store, 999)).text == "I know nothing about faction 999 yet."


async def test_history_reply_comes_with_a_chart(bot, store, tmp_path):
    reply = await bot.handle_history(store, "player", 1, "strength", chart_dir=tmp_path)
    assert reply.text.startswith("**Alice [1]** strength: 100 (2025-08-31 23:59:59Z) -> 350")
    assert "change +250 over 5 points" in reply.text
    assert reply.file == tmp_path / "player-1-strength.png" and reply.file.read_bytes()[:4] == b"\x89PNG"
    since = await bot.handle_history(store, "faction", 9420, "respect", since="2030-01-01", chart_dir=tmp_path)
    assert since.text == "No respect data for Alpha [9420] since 2030-01-01." and since.file is None
    bad = await bot.handle_history(store, "player", 1, "respect", chart_dir=tmp_path)
    assert bad.text.startswith("unknown player stat 'respect'") and bad.file is None


async def test_history_without_matplotlib_still_answers(bot, store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    reply = await bot.handle_history(store, "faction", 9420, "respect", chart_dir=tmp_path)
    assert reply.file is None and "charts need matplotlib" in reply.text


async def test_alert_feed_starts_at_the_head_then_reports(bot, store):
    async def texts(position):  # what the alert task would post until nothing new came for 0.3 s
        return [text async for text in bot.alert_texts(store, position, idle_timeout=0.3)]

    assert await texts(None) == []      # from now on: what is already stored is no news
    reported = await texts(0)
    assert "Bob [2] left Alpha [9420]" in reported and "Alice [1] reached level 11 (was 10)" in reported
    assert reported == [c.text for c in (await store.changes_since(0, limit=1000)).changes]   # each once, in order


# ------------------------------------------------------------------------- the command tree, without Discord
class Recorder:
    """Stands in for discord.Interaction: its `response` and `followup` record what a command does."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.response = _Response(self.calls)
        self.followup = _Followup(self.calls)


class _Response:
    def __init__(self, calls):
        self.calls = calls

    async def defer(self, **kwargs):
        self.calls.append(("defer",))

    async def send_message(self, content=None, **kwargs):
        self.calls.append(("send_message", content))


class _Followup:
    def __init__(self, calls):
        self.calls = calls

    async def send(self, content=None, *, file=None, **kwargs):
        """Record the text and, for an attachment, its name and first bytes (its temp file goes after)."""
        attached = None
        if file is not None:
            attached = (file.filename, file.fp.read(4))
            file.close()
        self.calls.append(("followup", content, attached))


@pytest.fixture
async def tree(bot, store):
    client, tree = bot.build_bot(store)
    yield tree
    await client.close()


def test_starting_the_bot_without_a_token_says_what_is_missing(bot, monkeypatch, tmp_path):
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    with pytest.raises(SystemExit) as stopped:
        bot.main()
    assert str(stopped.value.code).startswith("DISCORD_TOKEN is not set")
    token = "not-a-real-token"
    monkeypatch.setenv("DISCORD_TOKEN", token)
    monkeypatch.setenv("ALERT_CHANNEL_ID", "#alerts")
    with pytest.raises(SystemExit) as stopped:
        bot.main()
    assert stopped.value.code == "ALERT_CHANNEL_ID must be a channel id (digits), not '#alerts'"
    monkeypatch.delenv("ALERT_CHANNEL_ID")
    missing = tmp_path / "nowhere.db"
    monkeypatch.setenv("TORNSTORE_DB", str(missing))
    with pytest.raises(SystemExit) as stopped:
        bot.main()
    assert str(stopped.value.code).startswith(f"no database at {missing}: set TORNSTORE_DB")
    assert token not in str(stopped.value.code) and not missing.exists()   # no empty database made either


async def test_the_tree_has_the_slash_commands_and_their_options(bot, tree):
    import discord

    commands = {command.name: command for command in tree.get_commands()}
    assert sorted(commands) == ["faction", "history", "player"]
    options = {name: [(p.name, p.type, p.required) for p in command.parameters] for name, command in commands.items()}
    integer, string = discord.AppCommandOptionType.integer, discord.AppCommandOptionType.string
    assert options == {
        "player": [("player_id", integer, True)],
        "faction": [("faction_id", integer, True)],
        "history": [("kind", string, True), ("entity_id", integer, True), ("stat", string, True),
                    ("since", string, False)],
    }
    kind = commands["history"].get_parameter("kind")
    assert [(c.name, c.value) for c in kind.choices] == [("player", "player"), ("faction", "faction")]
    # What tree.sync() would send to Discord builds, and stays within Discord's limits.
    for command in commands.values():
        payload = command.to_dict(tree)
        assert 1 <= len(payload["description"]) <= 100
        assert all(1 <= len(option["description"]) <= 100 for option in payload["options"])


async def test_player_and_faction_commands_defer_then_answer(tree):
    player = tree.get_command("player")
    interaction = Recorder()
    await player.callback(interaction, player_id=1)
    assert interaction.calls[0] == ("defer",) and len(interaction.calls) == 2
    _, text, attached = interaction.calls[1]
    assert text.splitlines()[0] == "**Alice** [1], level 11, Alpha [9420]" and attached is None

    interaction = Recorder()
    await tree.get_command("faction").callback(interaction, faction_id=9420)
    assert interaction.calls[0] == ("defer",)
    _, text, attached = interaction.calls[1]
    assert text.startswith("**Alpha** [9420]") and "Respect 1,050,000" in text and attached is None

    interaction = Recorder()
    await player.callback(interaction, player_id=999)
    assert interaction.calls == [("defer",), ("followup", "I know nothing about player 999 yet.", None)]


async def test_history_command_attaches_the_chart(tree):
    from discord import app_commands

    history = tree.get_command("history")
    interaction = Recorder()
    await history.callback(interaction, kind=app_commands.Choice(name="player", value="player"), entity_id=1,
                           stat="strength")
    assert interaction.calls[0] == ("defer",)
    _, text, attached = interaction.calls[1]
    assert text.startswith("**Alice [1]** strength: 100") and "change +250 over 5 points" in text
    assert attached == ("player-1-strength.png", b"\x89PNG")

    interaction = Recorder()
    await history.callback(interaction, kind=app_commands.Choice(name="faction", value="faction"),
                           entity_id=9420, stat="respect", since="2030-01-01")
    assert interaction.calls == [("defer",), ("followup", "No respect data for Alpha [9420] since 2030-01-01.", None)]
