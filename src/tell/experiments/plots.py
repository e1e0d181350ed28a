"""The report's plots (matplotlib, Agg): each function draws one figure from evidence already computed
(`tell.experiments.evidence`), saves it atomically under report_files/ and returns its Markdown lines."""

from __future__ import annotations

import hashlib
import io
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from tell.experiments.evidence import Point, find, top_ratios
from tell.experiments.methods import METHODS
from tell.io import atomic_open
from tell.mdtext import bracketed

FIGS = "report_files"  # the figures' folder beside report.md: the only images the HTML page inlines

GREY = "#999999"  # methods the table does not know

def color(method: str) -> str:
    m = METHODS.get(method)
    return m.color if m else GREY

def _slug(*parts) -> str:
    """A file stem made of [A-Za-z0-9._-] only: set names come from file names, and `..`, `%2F`, `)` or a space in
    one must not reach a path or a Markdown link. A stem that had to change carries a hash of the parts, so that
    two names never share a file."""
    joined = "_".join(str(p).replace(":", "-").replace("/", "-").replace("+", "p").replace(" ", "-") for p in parts)
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", joined).strip("-")[:80]
    if safe == joined:
        return safe
    return f"{safe or 'plot'}-{hashlib.sha256(chr(31).join(map(str, parts)).encode()).hexdigest()[:8]}"

def _fig(width: float = 6.4):
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, 4.2))

def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue())

def _finish(fig, ax, figs_dir: Path, stem: str, xlabel: str | None, ylabel: str, title: str,
            logx: bool = True) -> list[str]:
    """Label, save (atomically) and close a figure; return its Markdown lines."""
    import matplotlib.pyplot as plt

    if xlabel:
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7)
    _save(fig, figs_dir / f"{stem}.png")
    plt.close(fig)
    return [f"![{bracketed(title)}]({FIGS}/{stem}.png)", ""]

def _yerr(pts: list[Point]) -> list[list[float]]:
    lo = [max(p.value - p.lo, 0) if p.lo is not None else 0 for p in pts]
    hi = [max(p.hi - p.value, 0) if p.hi is not None else 0 for p in pts]
    return [lo, hi]

def plot_task_scaling(figs: Path, set_name: str, metric: str, pts: dict[tuple, Point],
                      amounts: list | dict | None = None) -> list[str]:
    """Metric vs requested task tokens per method: tell at every ratio (with `amounts`, a spec's general_tokens:
    one line per general amount, whose ratio differs at each budget; a point of the spec's ratios keeps its ratio),
    the other methods at each budget's largest tell ratio."""
    from tell.experiments.config import amounts_at, general_ratio

    def amount(p: Point) -> int | None:  # the planned general amount a tell point ran at (None: a ratio point)
        return next((g for g in amounts_at(amounts, p.budget) if general_ratio(g, p.budget) == p.ratio), None)

    top = top_ratios(pts)
    lines = defaultdict(list)
    for p in pts.values():
        if p.method == "tell" and p.budget:
            g = amount(p) if amounts else None
            lines[("tell", ("amount", g) if g is not None else ("ratio", p.ratio))].append(p)
        elif p.method != "base" and p.budget and (p.method == "sft" or p.ratio is None or p.ratio == top.get(p.budget)):
            lines[(p.method, None)].append(p)
    if not lines:
        return []
    fig, ax = _fig()
    first = max((k[1] for k in lines if k[0] == "tell"), default=None)  # the strong line: the largest amount / ratio
    for (m, r), ps in sorted(lines.items(), key=lambda kv: (kv[0][0], kv[0][1] is None, kv[0][1] or ("", 0))):
        ps = sorted(ps, key=lambda p: p.budget)
        label = m if r is None else f"{m} ({r[1]:,} general tokens)" if r[0] == "amount" else f"{m} (ratio {r[1]:g})"
        ax.errorbar([p.budget for p in ps], [p.value for p in ps], yerr=_yerr(ps), marker="o", capsize=3,
                    label=label, color=color(m), alpha=1.0 if m != "tell" or r == first else 0.45)
    base = find(pts, "base", any_ratio=True)
    if base:
        ax.axhline(base.value, linestyle="--", color=color("base"), label="base")
        if base.lo is not None and base.hi is not None:
            ax.axhspan(base.lo, base.hi, color=color("base"), alpha=0.12)
    return _finish(fig, ax, figs, _slug("task_scaling", set_name, metric), "task tokens (requested budget)", metric,
                   f"{set_name}: {metric} vs task tokens")

def _logistic(x, lo, hi, k, x0):
    return lo + (hi - lo) / (1.0 + np.exp(-k * (np.asarray(x) - x0)))

def plot_general_scaling(figs: Path, set_name: str, metric: str, budget: int, fitres: dict,
                          no_anchor: list[Point]) -> list[str]:
    """The tell points of one budget vs general tokens (values on the seeds common to all of them), the
    no-anchor twins, and the chosen fit drawn only when there is one and a verdict is allowed."""
    fig, ax = _fig()
    pp = [q for q in fitres["points"] if q["general"] > 0]
    if pp:
        ax.errorbar([q["general"] for q in pp], [q["value"] for q in pp], marker="o", capsize=3, linestyle="none",
                    yerr=[[max(q["value"] - (q["lo"] if q["lo"] is not None else q["value"]), 0) for q in pp],
                          [max((q["hi"] if q["hi"] is not None else q["value"]) - q["value"], 0) for q in pp]],
                    color=color("tell"), label="tell")
    na = sorted((p for p in no_anchor if p.general > 0), key=lambda p: p.general)
    if na:
        ax.errorbar([p.general for p in na], [p.value for p in na], yerr=_yerr(na), marker="s", capsize=3,
                    linestyle="none", color=color("tell-no-anchor"), label="tell-no-anchor")
    fit = fitres["fit"]
    if fit.get("fitted") and fitres["verdict_ok"] and pp and fit["shape"] != "not identified":
        best = fit["best"]
        par = fit["models"][best]["params"]
        x = np.linspace(*fit["x_range_log10"], 200)
        y = {"constant": lambda: np.full_like(x, par["c"]), "line": lambda: par["intercept"] + par["slope"] * x,
             "logistic": lambda: _logistic(x, par["lo"], par["hi"], par["k"], par["x0"])}[best]()
        ax.plot(10 ** x, y, color=color("tell"), alpha=0.6, label=f"chosen fit: {fit['shape']}")
        mid = fit["models"].get("logistic", {}).get("midpoint_tokens") if best == "logistic" else None
        if mid:
            ax.axvline(mid, color=color("tell"), linestyle=":", alpha=0.6)
    return _finish(fig, ax, figs, _slug("general_scaling", set_name, metric, budget), "general tokens", metric,
                   f"{set_name}: {metric} vs general tokens, {budget:,} task tokens")

def plot_bars(figs: Path, set_name: str, metric: str, kind: str, methods: tuple,
               cells: list[tuple], lookup) -> list[str]:
    fig, ax = _fig(max(6.4, 0.6 * len(cells) * len(methods)))
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        ps = [lookup(m, b, r) for b, r in cells]
        err = [[_yerr([p])[i][0] if p else 0 for p in ps] for i in (0, 1)]
        ax.bar([i + j * width for i in range(len(ps))], [p.value if p else float("nan") for p in ps], width,
               yerr=err, capsize=2, label=m, color=color(m))
    ax.set_xticks([i + width * (len(methods) - 1) / 2 for i in range(len(cells))])
    ax.set_xticklabels([f"{b:,}\nratio {r:g}" for b, r in cells], fontsize=7)
    title = f"{set_name}: {metric}, " + ("anchor vs no anchor" if kind == "anchor" else "ablation")
    return _finish(fig, ax, figs, _slug(kind, set_name, metric), None, metric, title)

def plot_forgetting(figs: Path, gset: str, gmetric: str, tset: str, tmetric: str, budget: int,
                     gpts: dict, tpts: dict) -> list[str]:
    """Task score (x) vs general score (y) of every cell at one budget, and the base model."""
    pairs = [(tpts[k], g) for k, g in gpts.items() if k in tpts and (g.budget == budget or g.method == "base")]
    if len(pairs) < 2:
        return []
    fig, ax = _fig()
    for t, g in pairs:
        ax.errorbar([t.value], [g.value], xerr=_yerr([t]), yerr=_yerr([g]), marker="o", capsize=2,
                    color=color(g.method), label=g.method)
        if g.ratio:
            ax.annotate(f"{g.ratio:g}", (t.value, g.value), fontsize=6, xytext=(3, 3), textcoords="offset points")
    return _finish(fig, ax, figs, _slug("forgetting", gset, gmetric, budget), f"{tset}: {tmetric} (task)",
                   f"{gset}: {gmetric} (general)", f"what each method keeps at {budget:,} task tokens "
                   "(labels: ratio)", logx=False)

def plot_training_evals(figs: Path, set_name: str, role: str, metric: str,
                        series: dict[str, tuple[str, list[tuple[int, float]]]]) -> list[str]:
    """A set's metric against optimizer steps, one line per cell (`tell train --eval-steps` during a sweep):
    the task metric rising, or the general one falling (forgetting), as training goes."""
    fig, ax = _fig()
    for label, (method, pts) in sorted(series.items()):
        ax.plot([s for s, _ in pts], [v for _, v in pts], marker=".", lw=1, color=color(method), label=label)
    what = "task skill" if role == "task" else "general skill (forgetting)"
    return _finish(fig, ax, figs, _slug("during", set_name, metric), "optimizer step", metric,
                   f"{set_name}: {what} during training", logx=False)
