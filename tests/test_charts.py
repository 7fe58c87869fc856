"""Charts: a real PNG from a joined series (summary points drawn apart from history), and a clear
one-line message when matplotlib is missing."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tornstore.cli.main import cli
from tornstore.projections import charts
from tornstore.projections.queries import Point, Series

from .test_queries import build_world, month_end, ts

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])


def joined_series() -> Series:
    points = [Point(at=month_end(2025, m), value=1_000_000 * m, source="summary", period_start=ts(2025, m, 1))
              for m in range(3, 9)]
    points += [Point(at=ts(2025, 9, d), value=9_000_000 + 50_000 * d, source="history") for d in range(1, 29, 3)]
    return Series(kind="player", entity_id=1, stat="strength", name="Alice", since=None, until=None, points=points)


def test_plot_series_writes_a_nontrivial_png(tmp_path):
    path = charts.plot_series(joined_series(), tmp_path / "chart.png")
    assert png_size(path) == (1000, 500)
    assert path.stat().st_size > 10_000  # axes, two styled lines, legend, title: not a blank image


def test_summary_points_are_drawn_differently_from_history(tmp_path):
    """The same times and values drawn once as history and once as summary give different images."""
    series = joined_series()
    as_history = Series(**{**{f: getattr(series, f) for f in series.__struct_fields__},
                           "points": [Point(at=p.at, value=p.value, source="history") for p in series.points]})
    a = charts.plot_series(series, tmp_path / "joined.png", title="t")
    b = charts.plot_series(as_history, tmp_path / "history.png", title="t")
    assert a.read_bytes() != b.read_bytes()


def test_single_point_and_empty_series(tmp_path):
    one = Series(kind="faction", entity_id=9, stat="respect", name=None, since=None, until=None,
                 points=[Point(at=ts(2025, 1, 1), value=5, source="history")])
    assert png_size(charts.plot_series(one, tmp_path / "one.png")) == (1000, 500)
    with pytest.raises(ValueError, match="nothing to plot"):
        charts.plot_series(Series(kind="faction", entity_id=9, stat="respect", name=None, since=None, until=None,
                                  points=[]), tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_plot_commands_write_pngs(db_path, tmp_path):
    build_world(db_path)
    out = tmp_path / "strength.png"
    result = CliRunner().invoke(cli, ["--db", str(db_path), "plot", "player", "1", "--stat", "strength",
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote {out} (5 points, 2 from monthly summaries)"
    assert png_size(out) == (1000, 500)
    out2 = tmp_path / "respect.png"
    result = CliRunner().invoke(cli, ["--db", str(db_path), "plot", "faction", "9420", "--stat", "respect",
                                      "--since", "2025-10-01", "-o", str(out2)])
    assert result.exit_code == 0 and out2.exists(), result.output


@pytest.mark.parametrize("args, message", [
    (["plot", "player", "999", "--stat", "strength"], "no player 999 in the database"),
    (["plot", "faction", "9420", "--stat", "strength"],
     "unknown faction stat 'strength': use one of respect, member_count, best_chain"),
    (["plot", "faction", "9420", "--stat", "respect", "--since", "2030-01-01"],
     "no respect data for faction 9420 in that time range: nothing to plot"),
])
def test_plot_errors_are_one_line(db_path, tmp_path, args, message):
    build_world(db_path)
    result = CliRunner().invoke(cli, ["--db", str(db_path), *args, "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"Error: {message}"]
    assert not (tmp_path / "x.png").exists()


def test_missing_matplotlib_is_one_clear_line(db_path, tmp_path, monkeypatch):
    build_world(db_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(charts.ChartsUnavailable, match=r"pip install 'tornstore\[plot\]'"):
        charts.plot_series(joined_series(), tmp_path / "chart.png")
    result = CliRunner().invoke(cli, ["--db", str(db_path), "plot", "player", "1", "--stat", "strength",
                                      "-o", str(tmp_path / "chart.png")])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"Error: {charts.INSTALL_HINT}"]
    assert "Traceback" not in result.output and not (tmp_path / "chart.png").exists()
