"""Draw ``dashboards/gateway.png``: the Grafana dashboard, rendered without Grafana.

No Grafana runs offline, so this does its part: a real Prometheus (``dashboards/prometheus.py``,
the ``prometheus`` binary on ``PATH``, on loopback with a throwaway config and data directory)
scrapes a scripted run of the real gateway (``dashboards/workload.py``: the sandbox and
``gateway serve`` as processes); then every panel's own PromQL from ``gateway.json`` goes to
Prometheus's HTTP API over the run, and each panel is drawn where its ``gridPos`` puts it, in
Grafana's dark theme. Series that stay at 0 for the whole run (every
known label value starts at 0) are left out of the picture, where Grafana would draw them flat
on the axis.

    python -m dashboards.render                       # about 4 minutes of traffic
    python -m dashboards.render --seconds 90          # quicker, sparser

Needs the ``docs`` lock (``make dashboard`` installs it: matplotlib) and a ``prometheus``
binary (Debian: ``apt-get install prometheus``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Rectangle
from matplotlib.ticker import FuncFormatter, MaxNLocator

if not __package__:  # run as a file (python dashboards/render.py): make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dashboards.prometheus import Prometheus, PrometheusMissing, running, substitute
from dashboards.workload import Recorded, free_port, record

HERE = Path(__file__).resolve().parent
BG, PANEL, BORDER, TEXT, MUTED, GRID = (
    "#111217",
    "#181b1f",
    "#2c3235",
    "#d8d9da",
    "#8e8e8e",
    "#2c3235",
)
PALETTE = (
    "#73bf69",
    "#f2cc0c",
    "#5794f2",
    "#ff780a",
    "#f2495c",
    "#b877d9",
    "#8ab8ff",
    "#ff9830",
    "#96d98d",
    "#ca95e5",
    "#fade2a",
    "#c4162a",
)
NAMED = {"green": "#73bf69", "yellow": "#fade2a", "red": "#f2495c"}
COL_IN, ROW_IN = 0.92, 0.36
"""Inches per grid column and per grid row unit."""


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def series(
    panel: dict[str, Any], prometheus: Prometheus, run: Recorded, scrape_s: float
) -> tuple[list[float], dict[str, list[float]]]:
    """Each legend's values at the panel's steps (its min interval, else the scrape interval),
    as Prometheus answers the panel's queries over the run."""
    step = _seconds(panel.get("interval", f"{scrape_s:g}s"))
    variables = {
        "__rate_interval": f"{round(4 * scrape_s)}s",
        "__interval": f"{round(step)}s",
        "__range": f"{math.ceil(run.end - run.start)}s",
        "provider": ".*",
    }
    times = [run.start + step * k for k in range(1, int((run.end - run.start) // step) + 1)]
    lines: dict[str, list[float]] = {}
    for target in panel["targets"]:
        expr = substitute(target["expr"], variables)
        found = prometheus.query_range(expr, times[0], times[-1], step) if times else []
        for labels, values in sorted(found, key=lambda s: legend(target["legendFormat"], s[0])):
            at = {round((t - times[0]) / step): v for t, v in values.items()}
            lines[legend(target["legendFormat"], labels)] = [
                at.get(k, math.nan) for k in range(len(times))
            ]
    return times, lines


def _seconds(text: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m|h)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"s": 1, "m": 60, "h": 3600}[unit]


def _unit(unit: str) -> FuncFormatter:
    def fmt(value: float, _: object = None) -> str:
        if unit == "s":
            return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.3g} s"
        if unit == "reqps":
            return f"{value:.3g} req/s"
        if unit == "currencyUSD":
            return f"${value:,.2f}"
        return f"{value:.3g}"

    return FuncFormatter(fmt)


def _time_axis(ax: Axes, span: tuple[float, float]) -> None:
    ax.set_xlim(*span)
    ax.xaxis.set_major_locator(MaxNLocator(6))
    ax.xaxis.set_major_formatter(
        FuncFormatter(lambda t, _: time.strftime("%H:%M:%S", time.localtime(t)))
    )


def _style(ax: Axes) -> None:
    ax.set_facecolor(PANEL)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.tick_params(colors=MUTED, labelsize=9, length=0)
    ax.grid(color=GRID, linewidth=0.6)
    ax.set_axisbelow(True)


def timeseries(
    ax: Axes,
    panel: dict[str, Any],
    times: list[float],
    lines: dict[str, list[float]],
    span: tuple[float, float],
) -> None:
    custom = panel["fieldConfig"]["defaults"].get("custom", {})
    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    _style(ax)
    shown = {n: vs for n, vs in lines.items() if any(v and not math.isnan(v) for v in vs)}
    base = [0.0] * len(times)
    step = times[1] - times[0] if len(times) > 1 else 1.0
    for i, (name, values) in enumerate(shown.items()):
        color = PALETTE[i % len(PALETTE)]
        if custom.get("drawStyle") == "bars":
            clean = [0.0 if math.isnan(v) else v for v in values]
            ax.bar(
                [t - step / 2 for t in times],
                clean,
                width=step * 0.8,
                bottom=base,
                color=color,
                label=name,
                align="center",
            )
            base = [b + v for b, v in zip(base, clean, strict=True)]
            continue
        bottom = base if stacked else [0.0] * len(times)
        top = [b + v for b, v in zip(bottom, values, strict=True)]
        ax.plot(times, top, color=color, linewidth=1.6, label=name)
        ax.fill_between(times, bottom, top, color=color, alpha=0.25 if stacked else 0.08)
        if stacked:
            base = [b if math.isnan(t) else t for b, t in zip(base, top, strict=True)]
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(_unit(unit))
    ax.yaxis.set_major_locator(MaxNLocator(5))
    _time_axis(ax, span)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(
            handles,
            labels,
            loc="upper left",
            bbox_to_anchor=(0, -0.1),
            frameon=False,
            ncol=min(4, len(labels)),
            fontsize=8.5,
            labelcolor=TEXT,
            handlelength=1.2,
            columnspacing=1.2,
        )
    else:
        ax.text(
            0.5,
            0.5,
            "No data (0 in range)",
            color=MUTED,
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=10,
        )


def stat(ax: Axes, panel: dict[str, Any], lines: dict[str, list[float]]) -> None:
    ax.set_axis_off()
    defaults = panel["fieldConfig"]["defaults"]
    unit, decimals = defaults.get("unit", "short"), defaults.get("decimals", 2)
    last = {
        name: next((v for v in reversed(vs) if not math.isnan(v)), 0.0)
        for name, vs in lines.items()
    }
    shown = [(n, v) for n, v in last.items() if round(v, decimals) != 0] or list(last.items())
    rows = max(1, len(shown))
    for i, (name, value) in enumerate(shown):
        y = 1 - (i + 0.5) / rows
        text = f"${value:,.{decimals}f}" if unit == "currencyUSD" else f"{value:,.{decimals}f}"
        ax.text(
            0.02,
            y,
            name,
            color=TEXT,
            fontsize=10 if rows < 6 else 9,
            va="center",
            transform=ax.transAxes,
        )
        ax.text(
            0.98,
            y,
            text,
            color=PALETTE[i % len(PALETTE)],
            ha="right",
            va="center",
            fontsize=20 if rows < 4 else 12,
            fontweight="bold",
            transform=ax.transAxes,
        )


def state_timeline(
    ax: Axes,
    panel: dict[str, Any],
    times: list[float],
    lines: dict[str, list[float]],
    span: tuple[float, float],
) -> None:
    mapping = panel["fieldConfig"]["defaults"]["mappings"][0]["options"]
    _style(ax)
    ax.grid(False)
    names = list(lines)
    step = times[1] - times[0] if len(times) > 1 else 1.0
    for row, name in enumerate(names):
        for t, value in zip(times, lines[name], strict=True):
            if math.isnan(value):
                continue
            state = mapping.get(str(int(value)), {"color": "green"})
            ax.barh(row, step, left=t - step, height=0.8, color=NAMED[state["color"]], linewidth=0)
    ax.set_yticks(range(len(names)), names, color=TEXT, fontsize=9)
    ax.set_ylim(len(names) - 0.5, -0.5)
    _time_axis(ax, span)
    handles = [Rectangle((0, 0), 1, 1, color=NAMED[s["color"]]) for s in mapping.values()]
    ax.legend(
        handles,
        [s["text"] for s in mapping.values()],
        loc="upper left",
        bbox_to_anchor=(0, -0.1),
        frameon=False,
        ncol=3,
        fontsize=8.5,
        labelcolor=TEXT,
    )


def _legend_rows(panel: dict[str, Any], lines: dict[str, list[float]]) -> int:
    if panel["type"] == "state-timeline":
        return 1
    shown = sum(1 for vs in lines.values() if any(v and not math.isnan(v) for v in vs))
    return max(1, math.ceil(shown / 4))


def draw(
    board: dict[str, Any], prometheus: Prometheus, run: Recorded, scrape_s: float, out: Path
) -> None:
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    header = 1.6
    width, height = 24 * COL_IN, rows * ROW_IN + header
    fig: Figure = plt.figure(figsize=(width, height), facecolor=BG)
    start, end = run.start, run.end
    when = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(start))} to " + time.strftime(
        "%H:%M:%S", time.localtime(end)
    )
    fig.text(0.01, 1 - 0.45 / height, board["title"], color=TEXT, fontsize=18, fontweight="bold")
    fig.text(
        0.01,
        1 - 1.0 / height,
        f"Data source: Prometheus    Provider: All    {when}    "
        f"(a scripted run of the gateway, scraped by Prometheus every {scrape_s:g} s)",
        color=MUTED,
        fontsize=10,
    )
    for panel in board["panels"]:
        g = panel["gridPos"]
        left, top = g["x"] * COL_IN / width, 1 - (header + g["y"] * ROW_IN) / height
        w, h = g["w"] * COL_IN / width, g["h"] * ROW_IN / height
        if panel["type"] == "row":
            fig.text(
                left + 0.004,
                top - h * 0.7,
                panel["title"],
                color=TEXT,
                fontsize=12,
                fontweight="bold",
            )
            continue
        pad = 0.06 / width
        fig.patches.append(
            FancyBboxPatch(
                (left + pad, top - h + pad * width / height),
                w - 2 * pad,
                h - 2 * pad * width / height,
                boxstyle="round,pad=0,rounding_size=0.002",
                transform=fig.transFigure,
                facecolor=PANEL,
                edgecolor=BORDER,
                linewidth=1,
                zorder=-1,
            )
        )
        fig.text(
            left + 0.008,
            top - 0.42 / height,
            panel["title"],
            color=TEXT,
            fontsize=10.5,
            fontweight="bold",
        )
        times, lines = series(panel, prometheus, run, scrape_s)
        inner_left = left + (0.9 if panel["type"] != "stat" else 0.2) / width
        legend_room = 0.2 if panel["type"] == "stat" else 0.5 + 0.2 * _legend_rows(panel, lines)
        ax = fig.add_axes(
            (
                inner_left,
                top - h + legend_room / height,
                left + w - inner_left - 0.2 / width,
                h - (0.75 + legend_room) / height,
            )
        )
        if panel["type"] == "stat":
            stat(ax, panel, lines)
        elif panel["type"] == "state-timeline":
            state_timeline(ax, panel, times, lines, (start, end))
        else:
            timeseries(ax, panel, times, lines, (start, end))
    fig.savefig(out, dpi=100, facecolor=BG)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dashboards.render",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=240, help="length of the run")
    parser.add_argument("--scrape-s", type=float, default=3.0, help="scrape interval")
    parser.add_argument("--out", type=Path, default=HERE / "gateway.png")
    args = parser.parse_args(argv)
    board = json.loads((HERE / "gateway.json").read_text())
    gateway_port = free_port()
    try:
        with running(f"127.0.0.1:{gateway_port}", args.scrape_s, free_port()) as prometheus:
            run = record(
                gateway_port,
                seconds=args.seconds,
                linger_s=2 * args.scrape_s,
                ready=prometheus.wait_scraping,
            )
            draw(board, prometheus, run, args.scrape_s, args.out)
    except PrometheusMissing as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
