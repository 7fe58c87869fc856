"""PNG line charts of a history series (matplotlib, an optional extra: `pip install 'tornstore[plot]'`).

    from tornstore.projections.charts import plot_series
    plot_series(await store.history("player", 2491575, "strength"), "strength.png")

Drawn on matplotlib's Agg canvas directly (no pyplot, no global backend switch), so it is safe inside a
bot and from threads (`await asyncio.to_thread(plot_series, series, path)` keeps the event loop free).
History points are a solid step line (a history row holds until the next change); monthly summary points
are hollow squares on a dashed line, labelled as end-of-month values.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .queries import Series

if TYPE_CHECKING:
    from matplotlib.axes import Axes

INSTALL_HINT = "matplotlib is not installed: charts need the plot extra (pip install 'tornstore[plot]')"

HISTORY_COLOR = "#1f77b4"
SUMMARY_COLOR = "#d62728"


class ChartsUnavailable(RuntimeError):
    """matplotlib cannot be imported; the message says how to install it."""


def require_matplotlib() -> None:
    """Raise ChartsUnavailable unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError:
        raise ChartsUnavailable(INSTALL_HINT) from None


def _compact(value: float, _pos=None, digits: int = 3) -> str:
    """1234567 -> '1.23M': battle stats and respect run into the billions."""
    for limit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.{digits}g}{suffix}"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.{digits}g}"


def _digits_for(ticks) -> int:
    """Enough significant digits that neighbouring tick labels differ (15.12M, 15.14M, not 15.1M twice)."""
    steps = [b - a for a, b in pairwise(ticks) if b > a]
    big = max((abs(t) for t in ticks), default=0)
    if not steps or big == 0:
        return 3
    return max(3, math.ceil(math.log10(big / min(steps))) + 1)


def _plot(ax: Axes, xs: Sequence[datetime], ys: Sequence[float], **style: Any) -> None:
    # matplotlib's stubs type x as ArrayLike; datetimes are what its date converter plots.
    ax.plot(xs, ys, **style)  # type: ignore[arg-type]


def default_title(series: Series) -> str:
    who = f"{series.name} [{series.entity_id}]" if series.name else f"{series.kind} {series.entity_id}"
    return f"{who}: {series.stat.replace('_', ' ')}"


def plot_series(series: Series, path: str | Path, title: str | None = None, *,
                width: float = 10.0, height: float = 5.0, dpi: int = 100) -> Path:
    """Draw `series` as a PNG line chart at `path` and return the path.

    Raises ChartsUnavailable without matplotlib and ValueError when the series has no points.
    """
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    if not series.points:
        raise ValueError(f"nothing to plot: no {series.stat} points for {series.kind} {series.entity_id}")

    def when(ts: int) -> datetime:
        return datetime.fromtimestamp(ts, tz=UTC)

    summary = [p for p in series.points if p.source == "summary"]
    history = [p for p in series.points if p.source == "history"]
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if summary:
        _plot(ax, [when(p.at) for p in summary], [p.value for p in summary], linestyle="--", linewidth=1.5,
              marker="s", markersize=7, markerfacecolor="white", markeredgewidth=1.5, color=SUMMARY_COLOR,
              label="monthly summary (end of month)")
    if history:
        xs, ys = [when(p.at) for p in history], [p.value for p in history]
        if len(history) == 1:
            _plot(ax, xs, ys, marker="o", markersize=5, linestyle="none", color=HISTORY_COLOR,
                  label="recorded history")
        else:
            _plot(ax, xs, ys, drawstyle="steps-post", linewidth=1.8, color=HISTORY_COLOR, label="recorded history")
            _plot(ax, xs, ys, marker="o", markersize=3, linestyle="none", color=HISTORY_COLOR)
    if summary and history:  # bridge the two, dotted, so the eye reads one series
        _plot(ax, [when(summary[-1].at), when(history[0].at)], [summary[-1].value, history[0].value],
              linestyle=":", linewidth=1, color="grey")
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    digits = _digits_for(list(ax.get_yticks()))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, pos: _compact(value, pos, digits)))
    ax.grid(True, alpha=0.3)
    ax.set_title(title or default_title(series))
    ax.set_ylabel(series.stat.replace("_", " "))
    ax.set_xlabel("UTC")
    ax.legend(loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path
