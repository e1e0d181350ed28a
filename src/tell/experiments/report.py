"""`report`: plots, tables and token-efficiency from a sweep's `results.jsonl` alone, so a report can be
redrawn without rerunning anything.

Over seeds, a point's value is the mean and its interval the envelope of the seeds' 95% bootstrap
intervals (the lowest low, the highest high): item noise and seed noise both show.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import defaultdict
from pathlib import Path

from tell.errors import TellError
from tell.experiments.methods import METHODS
from tell.experiments.analysis import fit_scurve, logistic, token_efficiency
from tell.io import atomic_open

COLORS = {name: m.color for name, m in METHODS.items()}


def load_results(folder: str | Path) -> list[dict]:
    p = Path(folder) / "results.jsonl"
    if not p.is_file():
        raise TellError("no results.jsonl; expected a folder written by `tell sweep`", file=str(folder))
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def aggregate(rows: list[dict], set_name: str, metric: str) -> dict[tuple, dict]:
    """(method, requested task budget, ratio) -> value (mean over seeds), lo, hi, seeds, and the achieved
    task / general tokens (means). Cells are grouped by the *requested* budget: the anchor counts towards
    a tell cell's task tokens, so its achieved total differs slightly from its no-anchor and SFT twins'."""
    groups = defaultdict(list)
    for r in rows:
        if r["set"] == set_name and r["metric"] == metric and r["value"] is not None:
            groups[(r["method"], r.get("task_tokens_requested") or 0, r["ratio"])].append(r)
    out = {}
    for k, rs in groups.items():
        lows = [r["ci_low"] for r in rs if r["ci_low"] is not None]
        highs = [r["ci_high"] for r in rs if r["ci_high"] is not None]
        mean = lambda key: sum(r[key] for r in rs) / len(rs)
        out[k] = {"value": mean("value"), "lo": min(lows) if lows else None, "hi": max(highs) if highs else None,
                  "seeds": len(rs), "task_achieved": mean("task_tokens"), "general": mean("general_tokens")}
    return out


def _err(points):
    lo = [max(p["value"] - p["lo"], 0) if p["lo"] is not None else 0 for p in points]
    hi = [max(p["hi"] - p["value"], 0) if p["hi"] is not None else 0 for p in points]
    return [lo, hi]


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue())


def _finish(fig, ax, figs_dir: Path, stem: str, xlabel: str | None, ylabel: str, title: str) -> list[str]:
    """Label, save (atomically) and close a figure; return its Markdown lines. A log x axis when labelled."""
    import matplotlib.pyplot as plt

    if xlabel:
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    _save(fig, figs_dir / f"{stem}.png")
    plt.close(fig)
    return [f"![{title}](report_files/{stem}.png)", ""]


def _slug(*parts) -> str:
    return "_".join(str(p).replace(":", "-").replace("/", "-").replace("+", "p") for p in parts)


def make_report(folder: str | Path, primary: str | None = None, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    rows = load_results(folder)
    if not rows:
        raise TellError("results.jsonl holds no finished cell", file=str(folder))
    sets = list(dict.fromkeys(r["set"] for r in rows))
    figs_dir = folder / "report_files"
    figs_dir.mkdir(exist_ok=True)
    for old in figs_dir.glob("*.png"):  # plots of an earlier report that this one may not redraw
        old.unlink()
    md = [f"# {title or folder.name}: TELL sweep report", "",
          f"{len({r['run_dir'] for r in rows})} finished cells; methods: "
          f"{', '.join(sorted({r['method'] for r in rows}))}. Values are means over seeds; intervals are the "
          "envelope of the seeds' 95% bootstrap intervals.", ""]
    efficiency_all = []

    for set_name in sets:
        metrics = list(dict.fromkeys(r["metric"] for r in rows if r["set"] == set_name))
        metric = primary if primary in metrics else metrics[0]
        agg = aggregate(rows, set_name, metric)
        md += [f"## {set_name}: {metric}", ""]
        by_method = defaultdict(list)
        for (m, t, ratio), p in agg.items():
            by_method[m].append({"task": t, "ratio": ratio, **p})
        ratios = sorted({p["ratio"] for p in by_method.get("tell", []) if p["ratio"] is not None})
        top = ratios[-1] if ratios else None

        # 1. metric vs task tokens per method (paper Figs. 7-8)
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for m, pts in sorted(by_method.items()):
            if m in ("base", "general-only"):
                continue
            lines = {}
            for p in pts:
                r_key = p["ratio"] if m in ("tell", "tell-no-anchor", "sft-matched") else None
                lines.setdefault(r_key, []).append(p)
            for r_key, ps in sorted(lines.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
                if m != "tell" and r_key not in (None, top):
                    continue
                ps = sorted(ps, key=lambda p: p["task"])
                label = m if r_key is None else f"{m} (ratio {r_key:g})"
                alpha = 1.0 if r_key in (None, top) else 0.45
                ax.errorbar([p["task"] for p in ps], [p["value"] for p in ps], yerr=_err(ps), marker="o",
                            capsize=3, label=label, color=COLORS.get(m), alpha=alpha)
        for m, style in (("base", "--"), ("general-only", ":")):
            if by_method.get(m):
                v = sum(p["value"] for p in by_method[m]) / len(by_method[m])
                ax.axhline(v, linestyle=style, color=COLORS[m], label=f"{m} (mean)")
        md += _finish(fig, ax, figs_dir, _slug("task_scaling", set_name, metric), "task tokens (requested budget)",
                      metric, f"{set_name}: {metric} vs task tokens")

        # 2. metric vs general tokens at each task budget, with a logistic fit (Figs. 11-14)
        scurves = []
        for t in sorted({p["task"] for p in by_method.get("tell", [])}):
            ps = sorted([p for p in by_method["tell"] if p["task"] == t], key=lambda p: p["general"])
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            xs = [max(p["general"], 1) for p in ps]
            ax.errorbar(xs, [p["value"] for p in ps], yerr=_err(ps), marker="o", capsize=3, color=COLORS["tell"],
                        linestyle="none", label="tell")
            na = sorted([p for p in by_method.get("tell-no-anchor", []) if p["task"] == t], key=lambda p: p["general"])
            if na:
                ax.errorbar([max(p["general"], 1) for p in na], [p["value"] for p in na], yerr=_err(na), marker="s",
                            capsize=3, color=COLORS["tell-no-anchor"], linestyle="none", label="tell-no-anchor")
            fit = fit_scurve([p["general"] for p in ps], [p["value"] for p in ps])
            if fit:
                import numpy as np
                grid = np.linspace(math.log10(min(x for x in xs if x > 1) or 1) - 0.3, math.log10(max(xs)) + 0.3, 200)
                ax.plot(10 ** grid, logistic(grid, fit.lo, fit.hi, fit.k, fit.x0), color=COLORS["tell"], alpha=0.6,
                        label=f"logistic fit: midpoint {fit.midpoint_tokens:,.0f}, plateau {fit.hi:.3g}")
                ax.axvline(fit.midpoint_tokens, color=COLORS["tell"], linestyle=":", alpha=0.6)
            scurves.append((t, fit, len(ps)))
            md += _finish(fig, ax, figs_dir, _slug("general_scaling", set_name, metric, t), "general tokens (1 = none)",
                          metric, f"{set_name}: {metric} vs general tokens, {t:,} task tokens")
        if scurves:
            md += ["| task tokens | points | S-curve midpoint (general tokens) | plateau | steepness (per decade) | fit RMSE |",
                   "|---|---|---|---|---|---|"]
            for t, fit, n in scurves:
                md.append(f"| {t:,} | {n} | " + (f"{fit.midpoint_tokens:,.0f} | {fit.hi:.4g} | {fit.k:.3g} | {fit.rmse:.3g} |"
                                                  if fit else "no fit (fewer than 4 general budgets, a flat line, or no convergence) | | | |"))
            md.append("")

        # 3. anchor vs no anchor (Figs. 5-6) and 4. ablation bars (Figs. 9-10)
        for kind, methods in (("anchor", ("tell", "tell-no-anchor")),
                              ("ablation", ("base", "general-only", "sft", "sft-matched", "tell"))):
            cells = sorted({(p["task"], p["ratio"]) for m in methods[-2:] for p in by_method.get(m, [])
                            if p["ratio"] is not None and (kind == "anchor" or p["ratio"] == top)})
            if kind == "ablation":
                cells = sorted({(p["task"], top) for p in by_method.get("tell", []) if p["ratio"] == top})
            if not cells or not any(by_method.get(m) for m in methods):
                continue
            fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(cells) * len(methods) / 2), 4.2))
            width = 0.8 / len(methods)
            table = ["| task tokens | ratio | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
            for j, m in enumerate(methods):
                vals, errs = [], [[], []]
                for t, r in cells:
                    cand = [p for p in by_method.get(m, []) if _matches(m, p, t, r, agg)]
                    p = cand[0] if cand else None
                    vals.append(p["value"] if p else float("nan"))
                    e = _err([p]) if p else [[0], [0]]
                    errs[0].append(e[0][0])
                    errs[1].append(e[1][0])
                ax.bar([i + j * width for i in range(len(cells))], vals, width, yerr=errs, capsize=2, label=m,
                       color=COLORS.get(m))
            for t, r in cells:
                row = []
                for m in methods:
                    cand = [p for p in by_method.get(m, []) if _matches(m, p, t, r, agg)]
                    row.append(_fmt_point(cand[0]) if cand else "-")
                table.append(f"| {t:,} | {r:g} | " + " | ".join(row) + " |")
            ax.set_xticks([i + width * (len(methods) - 1) / 2 for i in range(len(cells))])
            ax.set_xticklabels([f"{t:,}\nratio {r:g}" for t, r in cells], fontsize=7)
            md += _finish(fig, ax, figs_dir, _slug(kind, set_name, metric), None, metric,
                          f"{set_name}: {'anchor vs no anchor' if kind == 'anchor' else 'ablation'}") + table + [""]

        # 5. token-efficiency: SFT task tokens that reach each tell point's score
        sft = [(p["task"], p["value"]) for p in by_method.get("sft", [])]
        tell_pts = [(p["task"], p["value"], p["lo"], p["hi"], p["ratio"]) for p in by_method.get("tell", [])]
        if sft and tell_pts:
            eff = token_efficiency(sft, [t[:4] for t in tell_pts])
            md += ["**Token-efficiency** (how much SFT task data reaches each tell point's score; interpolated "
                   "along the SFT curve in log tokens; the interval maps the tell point's CI; a score at or below "
                   "the smallest SFT point's gives only an upper bound):", "",
                   "| tell task tokens | ratio | score | SFT tokens for the same score | efficiency (x) | interval |",
                   "|---|---|---|---|---|---|"]
            for e, (_, _, _, _, ratio) in sorted(zip(eff, tell_pts), key=lambda z: (z[0]["tell_task_tokens"], z[1][4])):
                eq = "beyond the SFT curve" if e["beyond_sft_curve"] else f"{e['sft_equivalent_tokens']:,.0f}"
                ratio_s = f"{e['ratio']:.2f}" if e["ratio"] else "-"
                if e["at_or_below_sft_start"]:
                    eq, ratio_s = f"<= {eq}", f"<= {ratio_s}"
                ci = e["ratio_ci"]
                ci_s = f"[{_num(ci[0])}, {_num(ci[1])}]"
                md.append(f"| {e['tell_task_tokens']:,} | {ratio:g} | {e['value']:.4g} | {eq} | {ratio_s} | {ci_s} |")
                efficiency_all.append({"set": set_name, "metric": metric, "general_ratio": ratio, **e})
            md.append("")

    with atomic_open(folder / "token_efficiency.json") as f:
        f.write(json.dumps(efficiency_all, indent=2) + "\n")
    text = "\n".join(md) + "\n"
    with atomic_open(folder / "report.md") as f:
        f.write(text)
    with atomic_open(folder / "report.html") as f:
        f.write(_html(text, figs_dir))
    return folder / "report.md"


def _matches(m, p, t, r, agg) -> bool:
    if m == "base":
        return True
    if m == "sft":
        return p["task"] == t
    return p["task"] == t and p["ratio"] == r


def _num(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _fmt_point(p) -> str:
    lo, hi = p["lo"], p["hi"]
    ci = f" [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else ""
    return f"{p['value']:.3g}{ci}"


def _html(md: str, figs_dir: Path) -> str:
    """A self-contained page: the Markdown's headings, paragraphs, tables and images (inlined as data URIs)."""
    out, table = ["<!doctype html><meta charset='utf-8'><title>TELL report</title>",
                  "<style>body{font-family:sans-serif;max-width:960px;margin:auto}table{border-collapse:collapse}"
                  "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}img{max-width:100%}</style>"], []

    def flush():
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= {"-"}]
            out.append("<table>" + "".join(
                "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c.strip())}</{'th' if i == 0 else 'td'}>"
                                 for c in r.strip().strip("|").split("|")) + "</tr>" for i, r in enumerate(rows)) + "</table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            data = base64.b64encode((figs_dir.parent / src.rstrip(")")).read_bytes()).decode()
            out.append(f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>")
        elif line.strip():
            out.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    flush()
    return "\n".join(out) + "\n"
