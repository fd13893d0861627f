"""The report's figures: matplotlib on the Agg canvas, returned as PNG bytes.

No pyplot: every function builds its own ``Figure``, so nothing touches global figure state or the
user's backend. Math text is off (a value or model name with ``$`` stays literal). Colours: one per
model (``tab10``) or per value (``tab20``), stable within a report; changes use a diverging map
centred on zero.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

DPI = 110
STYLE = {"text.parse_math": False, "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
         "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False}
DIVERGING = "RdBu_r"  # red = more expression than the base model, blue = less
BETA_MARKERS = ("o", "s", "^", "D", "v", "P", "*", "h")


def model_colours(models: Sequence[str]) -> dict[str, str]:
    cmap = matplotlib.colormaps["tab10"]
    return {m: matplotlib.colors.to_hex(cmap(i % 10)) for i, m in enumerate(models)}


def value_colours(values: Sequence[str]) -> dict[str, str]:
    """tab20's ten strong colours first, then their light partners, so up to ten values never share a hue."""
    cmap = matplotlib.colormaps["tab20"]
    order = [*range(0, 20, 2), *range(1, 20, 2)]
    return {v: matplotlib.colors.to_hex(cmap(order[i % 20])) for i, v in enumerate(values)}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _err(centre: float, low: float | None, high: float | None) -> list[list[float]] | None:
    """Error-bar lengths below and above ``centre`` (never negative: a Wilson bound may sit 1e-17 past the rate)."""
    if not (_finite(low) and _finite(high)):
        return None
    return [[max(0.0, centre - low)], [max(0.0, high - centre)]]


# ---------------------------------------------------------------- crosstalk heatmap


@dataclass
class HeatmapCell:
    change: float | None
    significant: bool
    is_target: bool


def crosstalk_heatmap(title: str, induced: Sequence[str], expressed: Sequence[str],
                      cells: dict[tuple[str, str], HeatmapCell], alpha: float, n_prompts: int | None,
                      vmax: float | None = None) -> bytes:
    """Rows: induced values; columns: expressed values; colour and number: change vs the base model.

    Significant cells (BH q < alpha) get a black box and a '*'; the induced value's own column a dashed
    box; cells without a comparison are grey 'n/a'. The colour scale runs from -vmax to +vmax (default: the
    largest |change| here, at least 0.05), so white is always zero; pass one vmax to compare several matrices.
    """
    with matplotlib.rc_context(STYLE):
        nr, nc = len(induced), len(expressed)
        grid = [[(cells.get((r, c)).change if cells.get((r, c)) else None) for c in expressed] for r in induced]
        vmax = vmax or max([0.05, *(abs(x) for row in grid for x in row if _finite(x))])
        data = [[x if _finite(x) else math.nan for x in row] for row in grid]
        # fixed cell size in inches, so a 2-row and a 15-row matrix read alike; the colour bar sits on top
        cell_w, cell_h, left, right, bottom, top = 0.62, 0.42, 1.7, 0.3, 1.4, 1.2
        width, height = left + nc * cell_w + right, bottom + nr * cell_h + top
        fig = Figure(figsize=(width, height))
        ax = fig.add_axes((left / width, bottom / height, nc * cell_w / width, nr * cell_h / height))
        cmap = matplotlib.colormaps[DIVERGING].with_extremes(bad="#dddddd")
        im = ax.imshow(data, cmap=cmap, norm=TwoSlopeNorm(vcenter=0.0, vmin=-vmax, vmax=vmax), aspect="auto")
        for i, r in enumerate(induced):
            for j, c in enumerate(expressed):
                cell = cells.get((r, c))
                x = grid[i][j]
                if cell is None or not _finite(x):
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="#555555")
                    continue
                colour = "white" if abs(x) > 0.6 * vmax else "black"
                ax.text(j, i, f"{round(x, 2) + 0.0:+.2f}{'*' if cell.significant else ''}", ha="center", va="center", fontsize=7.5,
                        color=colour, fontweight="bold" if cell.significant else "normal")
                if cell.significant:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.0))
                elif cell.is_target:
                    ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, edgecolor="#222222",
                                           linewidth=1.4, linestyle="--"))
        ax.set_xticks(range(nc), expressed, rotation=40, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(nr), induced)
        ax.set_xlabel("expressed value")
        ax.set_ylabel("induced value")
        ax.tick_params(length=0)
        for side in ("top", "right", "bottom", "left"):
            ax.spines[side].set_visible(False)
        bar_w = min(4.0, nc * cell_w)
        cax = fig.add_axes((left / width, (bottom + nr * cell_h + 0.3) / height, bar_w / width, 0.13 / height))
        bar = fig.colorbar(im, cax=cax, orientation="horizontal")
        bar.ax.tick_params(labelsize=7, length=2)
        bar.ax.xaxis.set_label_position("top")
        bar.set_label("change vs base (induced − base, share of answers)", fontsize=8)
        n_text = f" (n = {n_prompts} prompts)" if n_prompts else ""
        fig.text(left / width, (height - 0.1) / height, f"{title}{n_text}", ha="left", va="top", fontsize=10)
        fig.text(left / width, (height - 0.36) / height, f"* and box: BH q < {alpha:g};  dashed box: the induced value",
                 ha="left", va="top", fontsize=8, color="#444444")
        return _png(fig)


# ---------------------------------------------------------------- rates with intervals


@dataclass
class IntervalRow:
    """One point with its interval; ``group`` picks the colour (the model), ``note`` is printed at the right (k/n)."""

    label: str
    group: str
    value: float | None
    low: float | None
    high: float | None
    note: str = ""
    reference: bool = False  # the base model's row: square marker, and a dotted line through its value


@dataclass
class Panel:
    title: str
    rows: list[IntervalRow]
    xlabel: str = "rate (share of answers)"
    xlim: tuple[float, float] | None = (0.0, 1.0)


def interval_panels(panels: Sequence[Panel], colours: dict[str, str], zero_line: bool = False) -> bytes:
    """Side-by-side panels sharing their rows: a dot with a 95% interval per row, rows grouped by model."""
    with matplotlib.rc_context(STYLE):
        labels = [r.label for r in panels[0].rows]
        n = len(labels)
        fig = Figure(figsize=(2.2 + 3.6 * len(panels), 1.2 + 0.3 * n))
        axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        for ax, panel in zip(axes, panels):
            drawn: dict[tuple[str, bool], list[tuple[int, IntervalRow]]] = {}  # one errorbar call per (model, marker)
            for y, row in enumerate(panel.rows):
                if not _finite(row.value):
                    ax.text(0.5, y, "no judged answers", transform=ax.get_yaxis_transform(), ha="center", va="center",
                            fontsize=7, color="#777777")
                    continue
                drawn.setdefault((row.group, row.reference), []).append((y, row))
                if row.reference:
                    span = [i for i, r in enumerate(panel.rows) if r.group == row.group]
                    ax.vlines(row.value, min(span) - 0.4, max(span) + 0.4, colors=colours.get(row.group, "#333333"),
                              linestyles=":", linewidth=1.0)
                if row.note:
                    ax.text(1.01, y, row.note, transform=ax.get_yaxis_transform(), ha="left", va="center", fontsize=7,
                            color="#555555")
            for (group, reference), items in drawn.items():
                errs = [_err(r.value, r.low, r.high) or [[0.0], [0.0]] for _, r in items]
                ax.errorbar([r.value for _, r in items], [y for y, _ in items], xerr=[[e[0][0] for e in errs], [e[1][0] for e in errs]],
                            fmt="s" if reference else "o", color=colours.get(group, "#333333"), markersize=5, capsize=2.5,
                            elinewidth=1.2)
            if zero_line:
                ax.axvline(0.0, color="#999999", linewidth=0.8)
            if panel.xlim:
                ax.set_xlim(*panel.xlim)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
            ax.set_title(panel.title, loc="left")
            ax.set_xlabel(panel.xlabel)
            ax.grid(axis="x", color="#eeeeee")
            ax.set_ylim(n - 0.5, -0.5)
        axes[0].set_yticks(range(n), labels)
        groups = list(dict.fromkeys(r.group for r in panels[0].rows))
        if len(groups) > 1:
            handles = [Line2D([], [], marker="o", linestyle="", color=colours.get(g, "#333333"), label=g) for g in groups]
            fig.legend(handles=handles, loc="lower center", ncol=min(4, len(groups)), bbox_to_anchor=(0.5, 1.0), frameon=False)
        fig.subplots_adjust(wspace=0.25)
        return _png(fig)


# ---------------------------------------------------------------- training curves


@dataclass
class Curve:
    label: str
    colour: str
    steps: list[float]
    series: dict[str, list[float | None]] = field(default_factory=dict)  # metric -> value per step (None: not logged)


def training_curves(title: str, curves: Sequence[Curve], metrics: Sequence[tuple[str, str]]) -> bytes:
    """One panel per metric (key, axis label), one line per training cell, against the optimiser step."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(3.6 * len(metrics) + 0.5, 3.2))
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
        for ax, (key, label) in zip(axes, metrics):
            for curve in curves:
                pts = [(s, v) for s, v in zip(curve.steps, curve.series.get(key, [])) if _finite(v)]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, marker="o" if len(pts) < 12 else None, markersize=3, linewidth=1.3,
                            color=curve.colour, label=curve.label)
            ax.set_title(label, loc="left")
            ax.set_xlabel("optimiser step")
            ax.grid(color="#eeeeee")
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False)
        fig.suptitle(title, x=0.01, ha="left", fontsize=10)
        fig.tight_layout()
        return _png(fig)


# ---------------------------------------------------------------- induction-strength frontier


@dataclass
class FrontierPoint:
    value: str
    beta: float | None
    steps: int | None
    gain: float
    gain_low: float | None
    gain_high: float | None
    costs: dict[str, float | None]  # panel key -> cost (x), None: not measured
    pareto: dict[str, bool]  # panel key -> on that panel's front


def frontier_panels(title: str, points: Sequence[FrontierPoint], panels: Sequence[tuple[str, str]],
                    colours: dict[str, str]) -> bytes:
    """Target gain (y, with its CI) against each cost (x); colour = value, marker = beta, size = steps.
    Pareto-optimal points are ringed in black; each value's front is a dashed line in its colour."""
    with matplotlib.rc_context(STYLE):
        betas = sorted({p.beta for p in points if p.beta is not None})
        marker = {b: BETA_MARKERS[i % len(BETA_MARKERS)] for i, b in enumerate(betas)}
        steps = [p.steps for p in points if p.steps]
        lo, hi = (min(steps), max(steps)) if steps else (1, 1)

        def size(s: int | None) -> float:
            if not s or hi == lo:
                return 55.0
            return 25.0 + 150.0 * (s - lo) / (hi - lo)

        fig = Figure(figsize=(3.7 * len(panels) + 2.2, 3.6))
        axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        for ax, (key, xlabel) in zip(axes, panels):
            shown = [p for p in points if _finite(p.costs.get(key))]
            if not shown:
                ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", va="center", color="#777777")
            for value in dict.fromkeys(p.value for p in shown):  # one call per value and per (marker, ring): fast
                mine = [p for p in shown if p.value == value and _err(p.gain, p.gain_low, p.gain_high)]
                if mine:
                    errs = [_err(p.gain, p.gain_low, p.gain_high) for p in mine]
                    ax.errorbar([p.costs[key] for p in mine], [p.gain for p in mine], fmt="none", elinewidth=0.8, alpha=0.6,
                                yerr=[[e[0][0] for e in errs], [e[1][0] for e in errs]], ecolor=colours.get(value, "#555555"))
            for (mk, on) in dict.fromkeys((marker.get(p.beta, "X"), p.pareto.get(key, False)) for p in shown):
                mine = [p for p in shown if marker.get(p.beta, "X") == mk and p.pareto.get(key, False) == on]
                ax.scatter([p.costs[key] for p in mine], [p.gain for p in mine], s=[size(p.steps) for p in mine], marker=mk,
                           c=[colours.get(p.value, "#555555") for p in mine], edgecolors="black" if on else "white",
                           linewidths=1.6 if on else 0.5, zorder=4 if on else 3)
            for value in dict.fromkeys(p.value for p in shown):  # evaluate flags the front of each (model, value)
                front = sorted((p.costs[key], p.gain) for p in shown if p.value == value and p.pareto.get(key))
                if len(front) > 1:
                    ax.plot(*zip(*front), linestyle="--", color=colours.get(value, "black"), linewidth=1.1, zorder=2)
            ax.axhline(0.0, color="#999999", linewidth=0.8)
            ax.set_xlim(left=0.0)  # every cost is an absolute change
            ax.set_xlabel(xlabel)
            ax.grid(color="#eeeeee")
        axes[0].set_ylabel("target gain (change in the induced\nvalue's expression rate, 95% CI)")
        value_handles = [Line2D([], [], marker="o", linestyle="", color=colours[v], label=v)
                         for v in dict.fromkeys(p.value for p in points) if v in colours]
        beta_handles = [Line2D([], [], marker=marker[b], linestyle="", color="#555555", label=f"β = {b:g}") for b in betas]
        if any(p.beta is None for p in points):
            beta_handles.append(Line2D([], [], marker="X", linestyle="", color="#555555", label="no β (not DPO)"))
        ring = [Line2D([], [], marker="o", linestyle="--", color="#555555", markerfacecolor="white", markeredgecolor="black",
                       markeredgewidth=1.6, label="Pareto-optimal / front")]
        fig.legend(handles=[*value_handles, *beta_handles, *ring], loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False)
        fig.suptitle(f"{title}   (marker size: optimiser steps{f', {lo}-{hi}' if steps else ''})", x=0.01, ha="left", fontsize=10)
        fig.tight_layout()
        return _png(fig)


# ---------------------------------------------------------------- extractor validation


@dataclass
class Bar:
    group: str  # x position: 'overall' or a value
    series: str  # the annotator
    rate: float | None
    low: float | None
    high: float | None
    hatch: bool = False  # a human annotator


def grouped_bars(bars: Sequence[Bar], baseline: float | None, ylabel: str, colours: dict[str, str]) -> bytes:
    """Grouped bars with 95% interval whiskers and a dashed random-baseline line."""
    with matplotlib.rc_context(STYLE):
        groups = list(dict.fromkeys(b.group for b in bars))
        series = list(dict.fromkeys(b.series for b in bars))
        width = 0.8 / max(1, len(series))
        fig = Figure(figsize=(max(5.0, 1.2 + 0.32 * len(groups) * max(2, len(series))), 3.6))
        ax = fig.add_subplot()
        for k, name in enumerate(series):
            for b in (b for b in bars if b.series == name):
                if not _finite(b.rate):
                    continue
                x = groups.index(b.group) - 0.4 + width * (k + 0.5)
                err = _err(b.rate, b.low, b.high)
                ax.bar(x, b.rate, width=width * 0.92, color=colours.get(name, "#777777"), hatch="///" if b.hatch else None,
                       edgecolor="white", yerr=err, capsize=2, error_kw={"elinewidth": 1.0, "ecolor": "#333333"})
        if baseline is not None:
            ax.axhline(baseline, color="#b2182b", linestyle="--", linewidth=1.2)
        ax.set_xticks(range(len(groups)), groups, rotation=35, ha="right", rotation_mode="anchor")
        ax.set_ylim(0, 1.05)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", color="#eeeeee")
        handles = [Rectangle((0, 0), 1, 1, color=colours.get(s, "#777777"),
                             hatch="///" if any(b.hatch for b in bars if b.series == s) else None, label=s) for s in series]
        if baseline is not None:
            handles.append(Line2D([], [], color="#b2182b", linestyle="--", label=f"random choice ({baseline:g})"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        return _png(fig)
