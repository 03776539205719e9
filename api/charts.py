"""Charts of the portal's Stats page, drawn on the server as inline SVG: no script, no library,
nothing fetched. Each chart has a <title> per mark (the browser's tooltip) and a text fallback."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

from markupsafe import Markup

from metabuilder.domain.run_stats import RunStats

PALETTE = ("#2456c7", "#b42318", "#1f7a3f", "#a15c00", "#6941c6", "#0e7490", "#c11574", "#4d5761", "#667085",
           "#93370d", "#175cd3", "#3f621a")
STATUS_COLOURS = {"succeeded": "#1f7a3f", "failed": "#b42318", "escalated": "#c11574", "rolled_back": "#93370d",
                  "cancelled": "#667085", "running": "#a15c00", "pending": "#a15c00",
                  "paused_awaiting_approval": "#6941c6", "waiting_on_breaker": "#0e7490"}
WIDTH = 560


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    svg: Markup
    empty: bool
    """Nothing to draw in the window (the page says so instead)."""


def colour_of(names: Sequence[str]) -> dict[str, str]:
    """A stable colour per name (sorted, so a class keeps its colour from chart to chart)."""
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(sorted(names))}


def _svg(height: int, body: list[str], label: str) -> Markup:
    return Markup(f'<svg viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(label)}" '
                  f'xmlns="http://www.w3.org/2000/svg">{"".join(body)}</svg>')


def _tick(at: datetime, bucket_seconds: int) -> str:
    return at.strftime("%H:%M" if bucket_seconds < 86400 else "%m-%d")


def stacked_over_time(chart_id: str, title: str, buckets: Sequence[tuple[datetime, dict[str, int]]],
                      bucket_seconds: int) -> Chart:
    names = sorted({n for _, c in buckets for n in c})
    colours = colour_of(names)
    top = max([sum(c.values()) for _, c in buckets] + [0])
    left, bottom, plot_h, legend_h = 34, 22, 170, 18 * ((len(names) + 3) // 4)
    height = plot_h + bottom + legend_h + 8
    n = max(1, len(buckets))
    step = (WIDTH - left - 6) / n
    body = [f'<line x1="{left}" y1="{plot_h}" x2="{WIDTH - 4}" y2="{plot_h}" stroke="#c5ccd8"/>',
            f'<text x="{left - 6}" y="12" text-anchor="end">{top}</text>',
            f'<text x="{left - 6}" y="{plot_h}" text-anchor="end">0</text>']
    label_every = max(1, n // 8)
    for i, (at, counts) in enumerate(buckets):
        x, y = left + i * step, float(plot_h)
        for name in names:
            value = counts.get(name, 0)
            if not value:
                continue
            h = value / top * (plot_h - 6)
            y -= h
            body.append(f'<rect class="mark" x="{x + 1:.1f}" y="{y:.1f}" width="{max(1.0, step - 2):.1f}" '
                        f'height="{h:.1f}" fill="{colours[name]}"><title>{escape(name)}: {value} at '
                        f'{_tick(at, bucket_seconds)}</title></rect>')
        if i % label_every == 0:
            body.append(f'<text x="{x + step / 2:.1f}" y="{plot_h + 15}" text-anchor="middle">'
                        f'{_tick(at, bucket_seconds)}</text>')
    for i, name in enumerate(names):
        lx, ly = left + (i % 4) * 130, plot_h + bottom + 14 + (i // 4) * 18
        body.append(f'<rect x="{lx}" y="{ly - 10}" width="10" height="10" fill="{colours[name]}"/>'
                    f'<text x="{lx + 14}" y="{ly}">{escape(name)}</text>')
    return Chart(chart_id, title, _svg(height, body, title), empty=top == 0)


def horizontal_bars(chart_id: str, title: str, rows: Sequence[tuple[str, float, str]],
                    colours: dict[str, str] | None = None, marks: dict[str, float] | None = None) -> Chart:
    """One bar per (label, value, shown value); ``marks`` draws a tick per label (a p95 beyond a mean)."""
    label_w, row_h = 150, 24
    top = max([v for _, v, _ in rows] + list((marks or {}).values()) + [0.0])
    height = max(1, len(rows)) * row_h + 6
    span = WIDTH - label_w - 160  # room for the value's text after the longest bar
    body = []
    for i, (label, value, shown) in enumerate(rows):
        y = 4 + i * row_h
        w = 0.0 if top <= 0 else value / top * span
        fill = (colours or {}).get(label, PALETTE[0])
        body.append(f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end">{escape(label)}</text>'
                    f'<rect class="mark" x="{label_w}" y="{y + 3}" width="{max(1.0, w):.1f}" height="{row_h - 8}" '
                    f'fill="{fill}"><title>{escape(label)}: {escape(shown)}</title></rect>'
                    f'<text x="{label_w + w + 6:.1f}" y="{y + 14}">{escape(shown)}</text>')
        mark = (marks or {}).get(label)
        if mark is not None and top > 0:
            mx = label_w + mark / top * span
            body.append(f'<line x1="{mx:.1f}" y1="{y + 1}" x2="{mx:.1f}" y2="{y + row_h - 3}" stroke="#1d2330" '
                        f'stroke-width="2"><title>p95 {mark:g}s</title></line>')
    return Chart(chart_id, title, _svg(height, body, title), empty=not rows)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.1f} min"


def stats_charts(s: RunStats) -> list[Chart]:
    classes = colour_of(list(s.failures_by_class) + list(s.resolution_by_class))
    resolution = [(k, v.mean_seconds or 0.0, f"{_seconds(v.mean_seconds)} · p95 {_seconds(v.p95_seconds)} ({v.count})")
                  for k, v in s.resolution_by_class.items()]
    return [
        stacked_over_time("failures-over-time", "Failures by class over time", s.failures_over_time,
                          s.bucket_seconds),
        horizontal_bars("runs-by-status", "Runs by status",
                        [(k, float(v), str(v)) for k, v in sorted(s.by_status.items(), key=lambda kv: -kv[1])],
                        STATUS_COLOURS),
        horizontal_bars("resolution-by-class", "Time to resolution by class", resolution, classes,
                        marks={k: v.p95_seconds for k, v in s.resolution_by_class.items() if v.p95_seconds}),
        horizontal_bars("repairs-by-strategy", "Repairs by strategy",
                        [(k, float(v), str(v)) for k, v in s.repairs_by_strategy.items()]),
        horizontal_bars("cost-by-tenant", "LLM cost by tenant",
                        [(k, v, f"${v:.4f}") for k, v in s.cost_by_tenant.items()]),
    ]
