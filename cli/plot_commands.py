"""`tornstore plot player|faction ID --stat NAME -o chart.png`: a PNG line chart of one history series."""
from __future__ import annotations

import click

from tornstore.projections import queries

from .common import UserError, db_option, emit_json, friendly_errors
from .query_commands import StatChoice, series_for


@click.group()
def plot() -> None:
    """Draw a stat over time as a PNG line chart (needs the plot extra: pip install 'tornstore[plot]').

    Monthly summary points (pruned months) are drawn as hollow squares on a dashed line, recorded
    history as a solid line.

    \b
    Examples:
      tornstore --db torn.db plot player 2491575 --stat strength -o strength.png
      tornstore --db torn.db plot faction 9420 --stat respect --since 2025-01-01 -o respect.png
      tornstore --db torn.db plot player 2491575 --stat xantaken --since 2026-10-01 -o xanax.png
    """


def _draw(ctx: click.Context, kind: str, entity_id: int, stat: str, since: str | None, until: str | None,
          output: str, title: str | None, as_json: bool) -> None:
    from tornstore.projections import charts

    try:
        charts.require_matplotlib()
    except charts.ChartsUnavailable as exc:
        raise UserError(str(exc)) from None
    series = series_for(ctx, kind, entity_id, stat, since, until)
    if not series.points:
        raise UserError(f"no {stat} data for {kind} {entity_id} in that time range: nothing to plot")
    try:
        path = charts.plot_series(series, output, title)
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror or exc}") from None
    summary = len(series.summary_points)
    if as_json:
        emit_json({"output": str(path), "kind": kind, "id": entity_id, "name": series.name, "stat": series.stat,
                   "points": len(series.points), "summary_points": summary,
                   "first_at": series.points[0].at, "last_at": series.points[-1].at})
        return
    click.echo(f"wrote {path} ({len(series.points)} points"
               + (f", {summary} from monthly summaries" if summary else "") + ")")


def _common(fn):
    fn = click.option("--json", "as_json", is_flag=True,
                      help="Print what was drawn (file, points, time range) as one JSON document.")(fn)
    fn = click.option("--title", help="Chart title (default: name, id and stat).")(fn)
    fn = click.option("-o", "--output", required=True, metavar="FILE.png", help="Where to write the PNG.")(fn)
    fn = click.option("--until", metavar="DATE",
                      help="Up to this time, inclusive; a bare date includes that whole day.")(fn)
    fn = click.option("--since", metavar="DATE",
                      help="From this time on: YYYY-MM-DD, ISO 8601 or Unix seconds (UTC).")(fn)
    return fn


@plot.command("player")
@click.argument("player_id", type=int)
@click.option("--stat", required=True, type=StatChoice("player"), metavar="NAME",
              help="Which stat: " + ", ".join(queries.PLAYER_STATS) + ", or any personal stat the store keeps "
              "(xantaken, refills, attackswon, ...: `tornstore stats player ID` lists them).")
@_common
@db_option
@click.pass_context
@friendly_errors
def plot_player(ctx: click.Context, player_id: int, stat: str, since: str | None, until: str | None,
                output: str, title: str | None, as_json: bool) -> None:
    """Chart one stat of a player.

    \b
    Examples:
      tornstore --db torn.db plot player 2491575 --stat strength -o strength.png
      tornstore --db torn.db plot player 2491575 --stat total_stats --since 2025-06-01 -o total.png
      tornstore plot player 2491575 --stat level -o level.png --db torn.db --json
      tornstore --db torn.db plot player 2491575 --stat refills --since 2026-10-01 -o refills.png
    """
    _draw(ctx, "player", player_id, stat, since, until, output, title, as_json)


@plot.command("faction")
@click.argument("faction_id", type=int)
@click.option("--stat", required=True, type=StatChoice("faction"), metavar="NAME",
              help="Which stat: " + ", ".join(queries.FACTION_STATS) + ", or any faction stat the store keeps "
              "(`tornstore stats faction ID` lists them).")
@_common
@db_option
@click.pass_context
@friendly_errors
def plot_faction(ctx: click.Context, faction_id: int, stat: str, since: str | None, until: str | None,
                 output: str, title: str | None, as_json: bool) -> None:
    """Chart one stat of a faction.

    \b
    Examples:
      tornstore --db torn.db plot faction 9420 --stat respect -o respect.png
      tornstore --db torn.db plot faction 9420 --stat member_count --since 2025-09-01 -o members.png
      tornstore --db torn.db plot faction 9420 --stat gymtrains --since 2026-10-01 -o gym.png
    """
    _draw(ctx, "faction", faction_id, stat, since, until, output, title, as_json)


def register(group: click.Group) -> None:
    group.add_command(plot)
