"""The Discord example's handlers, driven without Discord (discord.py is not needed to import it)."""
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
    texts, position = await bot.poll_changes(store, None)
    assert texts == [] and position == await store.head_position()
    texts, position = await bot.poll_changes(store, 0)
    assert "Bob [2] left Alpha [9420]" in texts and "Alice [1] reached level 11 (was 10)" in texts
    again, same = await bot.poll_changes(store, position)
    assert again == [] and same == position
