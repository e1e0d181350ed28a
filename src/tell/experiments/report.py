"""`report`: a sweep folder's evidence as tables, plots and verdicts a careful reviewer can check (GUIDE §6).

`tell.experiments.evidence` computes every number first (`gather`); this module only renders them: Markdown
sections, plots (`tell.experiments.plots`) and a self-contained HTML page. Outputs: report.md, report.html,
report_files/*.png, findings.json (every paired comparison, machine-readable, the same numbers as the Findings
and Forgetting tables) and token_efficiency.json. Numbers and verdicts are computed, never typed; the report
does not know the commit it was made from, so whoever publishes it names the commit, the date and the command.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np

from tell.experiments.evidence import (COMPARISONS, CROSSED, ENVELOPE, HOW_CROSSED, HOW_ENVELOPE, LABEL_METRICS,
                                       MIN_SEEDS, NO_VERDICT,
                                       NOT_JUDGED, VERDICTS, Evidence, Point, SweepData, find, gather, healthy,
                                       load_sweep, top_ratios)
from tell.experiments.plots import (FIGS, plot_bars, plot_forgetting, plot_general_scaling, plot_task_scaling,
                                    plot_training_evals)
from tell.io import atomic_open, staged_output
from tell.mdtext import Markup, table, text

# the files a report writes beside report_files/ (controls.json only when the sweep declares controls)
OUTPUTS = ("findings.json", "token_efficiency.json", "controls.json", "report.md", "report.html")

def num(x, digits: int = 4) -> str:
    if x is None:
        return "-"
    return "0" if abs(x) < 1e-12 else f"{x:.{digits}g}"  # a difference of 1e-18 is rounding, not a number

def ci_text(lo, hi) -> str:
    return "-" if lo is None or hi is None else f"[{num(lo)}, {num(hi)}]"

def range_text(lo, hi, fmt=num) -> str:
    """An interval whose ends may lie outside the measured range (None), as stats gives x0 and midpoints."""
    if lo is None and hi is None:
        return "not identified (both ends outside the measured range)"
    return f"[{'below the measured range' if lo is None else fmt(lo)}, {'beyond it' if hi is None else fmt(hi)}]"

def ratio_text(r) -> str:
    return "-" if r is None else f"{r:g}"

def budget_text(b) -> str:
    return "-" if not b else f"{int(b):,}"

def lr_text(lr) -> str:
    return "-" if lr is None else f"{lr:.3g}"

def point_text(p: Point | None) -> str:
    return "-" if p is None else f"{num(p.value)} {ci_text(p.lo, p.hi)} (n={len(p.seeds)})"

def section_header(data: SweepData, title: str | None) -> list[str]:
    """Rendered after `gather`, so the notes and the interval kinds are those of every point."""
    cells = {r["cell"] for r in data.rows}
    bad = {r["cell"] for r in data.rows if not healthy(r)}
    finished = {r["cell"] for r in data.rows if r["value"] is not None}
    unselected = {r["cell"] for r in data.rows if healthy(r) and not r["selected"]}
    seeds = sorted({r["seed"] for r in data.rows})
    declared = data.spec.get("seeds")
    kinds = data.interval_kinds()
    interval = CROSSED if kinds == {CROSSED} else ENVELOPE if kinds <= {ENVELOPE} else \
        f"{CROSSED} where item scores exist; else the {ENVELOPE}"
    md = [f"# {text(title or data.folder.name)}: TELL sweep report", "",
          f"{len(cells)} cells in results.jsonl, {len(finished)} finished with results (methods: "
          f"{text(', '.join(sorted({r['method'] for r in data.rows})))}); seeds "
          f"{text(seeds)}" + (f" (the spec declares {text(declared)})" if declared else "") + f"; {len(bad)} unstable or failed "
          "cell(s) left out of every point, fit, comparison and finding (see Run health); "
          f"{len(unselected)} learning-rate candidate cell(s) not kept by the rule, used only in the lr table.", "",
          f"Intervals: {interval}. " + (HOW_CROSSED if CROSSED in interval else HOW_ENVELOPE)
          + f" A verdict needs at least {MIN_SEEDS} seeds; every metric is read as higher-is-better, except losses and perplexities (lower is better).", "",
          "This report does not know the commit it was made from: whoever publishes it names the commit, the "
          "date and the command.", ""]
    if data.notes:
        md += ["What this folder cannot give:", ""] + [f"- {text(n)}" for n in data.notes] + [""]
    return md + _contamination_lines(data.folder)


def _contamination_lines(folder: Path) -> list[str]:
    """The sweep's plan-time contamination check (`sweep.check_contamination`), as it recorded it."""
    path = folder / "contamination.json"
    if not path.is_file():
        return ["Contamination: not checked (no contamination.json: a sweep from before the check).", ""]
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        sets = doc.get("sets") or []
    except (OSError, ValueError, AttributeError):
        return ["Contamination: contamination.json cannot be read.", ""]
    md = [f"Contamination (checked before any cell trained; policy {text(doc.get('policy'))}), the task data's "
          f"{doc.get('task_examples')} examples against each eval set:", ""]
    for r in sets:
        md.append(f"- {text(r.get('eval'))}: {r.get('exact_overlap')} exact copies, {r.get('ngram13_overlap')} "
                  f"13-gram overlaps of {r.get('examples')} items" + (f" (rows {text(r.get('ngram13_rows'))})"
                                                                       if r.get("ngram13_rows") else ""))
    md += [f"- {text(n)}: not checked (not built when the sweep planned)" for n in doc.get("not_checked") or []]
    return md + [""]

def section_health(data: SweepData) -> list[str]:
    md = ["## Run health", ""]
    if not data.has_health:
        return md + ["Not recorded (an older sweep): every row is taken as healthy.", ""]
    bad = {}
    for r in data.rows:
        if not healthy(r):
            bad.setdefault(r["cell"], r)
    unjudged = {r["cell"] for r in data.rows if healthy(r) and str(r.get("health_reason") or "").startswith(
        NOT_JUDGED)}
    if unjudged:
        md += [f"{len(unjudged)} healthy-marked cell(s) trained too few optimizer steps for the loss trends to be "
               "judged: they were checked for non-finite losses only (their reason says so). Their points are "
               "shown, but read them with that in mind.", ""]
    if not bad:
        return md + [f"None of the {len({r['cell'] for r in data.rows})} cells is unstable or failed.", ""]
    md.append(f"{len(bad)} cell(s) unstable or failed: left out of every point, fit, comparison and finding.")
    md.append("")
    rows = [[r["method"], budget_text(r["budget"]), ratio_text(r["ratio"]), r["seed"], lr_text(r["lr"]),
             "yes" if r["selected"] else "no", r["health"], r.get("health_reason") or "-"]
            for r in sorted(bad.values(), key=lambda r: (r["method"], r["budget"], r["ratio"] or 0, r["seed"]))]
    return md + table(["method", "task tokens", "ratio", "seed", "lr", "selected lr", "health", "reason"], rows)

def section_points(data: SweepData, set_name: str, metric: str) -> list[str]:
    pts = sorted(data.points(set_name, metric).values(), key=lambda p: (p.method, p.budget, p.ratio or 0))
    if not pts:
        return []
    kinds = list(dict.fromkeys(p.interval for p in pts))
    md = [f"### {text(set_name)}: {text(metric)}", "", "Value: mean over seeds of the mean over items; interval: "
          + "; or ".join(kinds) + ". n = seeds.", ""]
    rows = [[p.method, budget_text(p.budget), ratio_text(p.ratio), f"{p.general:,.0f}", len(p.seeds), num(p.value),
             ci_text(p.lo, p.hi), "seeds x items" if p.interval == CROSSED else "seed min/max (not a CI)",
             NO_VERDICT if len(p.seeds) < MIN_SEEDS else ""] for p in pts]
    md += table(["method", "task tokens", "ratio", "general tokens", "seeds", "value", "95% interval",
                 "interval", "note"], rows)
    maj = data.majority_rate(set_name) if metric in LABEL_METRICS else None
    if maj:
        above = [f"{p.method} ({budget_text(p.budget)}, ratio {ratio_text(p.ratio)})" for p in pts
                 if p.lo is not None and p.lo > maj["rate"]]
        md += [f"Majority-class rate of these {maj['items']} items: {num(maj['rate'])} (answering "
               f"{text(repr(maj['label']))} to every item). A label accuracy shows something only when its interval "
               "lies above it: " + (text("; ".join(above)) if above else "no point does") + ".", ""]
    return md

def _finding_rows(fs: list[dict]) -> list[list[str]]:
    return [[f["metric"], budget_text(f["task_tokens"]), ratio_text(f["ratio"]), f["comparison"], f["seeds"],
             num(f["a_value"]), num(f["b_value"]), num(f["diff"]), ci_text(*f["ci95"]), f["verdict"]] for f in fs]

FINDINGS_HEADER = ["metric", "task tokens", "ratio", "comparison", "seeds", "tell", "other", "difference",
                   "paired 95% interval", "verdict"]

def summary(fs: list[dict], label: str) -> str:
    """One sentence: how many cells of a comparison kind were better, worse, no different, or had no verdict."""
    n = len(fs)
    c = {v: sum(f["verdict"] == v for f in fs) for v in VERDICTS}
    nv = n - sum(c.values())
    return (f"{label}: better in {c['better']} of {n} cells, worse in {c['worse']}, no detectable difference in "
            f"{c['no detectable difference']}, no verdict in {nv}.")

def section_controls(ev: Evidence) -> list[str]:
    """The spec's declared controls and floor/ceiling: whether anything below is judged."""
    spec = ev.data.spec
    if not ev.controls and spec.get("floor") is None and spec.get("ceiling") is None:
        return []
    md = ["## Controls", ""]
    if ev.controls:
        md += ["Declared in the spec before running. No comparison below is judged unless every control passed.", ""]
        md += table(["control", "claim", "rule", "measured", "value", "passed"],
                    [[c["id"], c["claim"], c["rule"], c["measured"], num(c["value"]), "yes" if c["passed"] else "NO"]
                     for c in ev.controls])
        md += ["", "All controls passed: the comparisons are judged." if ev.judged else
               f"**Control(s) {text(', '.join(c['id'] for c in ev.controls if not c['passed']))} failed: no comparison "
               "is judged** (the numbers are shown; their verdicts read \"not judged\").", ""]
    bounds = [f"{k} {spec[k]:g}" for k in ("floor", "ceiling") if spec.get(k) is not None]
    if bounds:
        md += [f"Declared {' and '.join(bounds)}: a comparison whose two arms both lie beyond it is inconclusive "
               "(it measured the end of the scale, not the methods).", ""]
    return md


def section_findings(ev: Evidence) -> list[str]:
    data = ev.data
    md = ["## Findings", "", "Every tell cell against each baseline at the same task budget (sft: ratio 0; the "
          "others: the same ratio), as the difference tell - other, paired on the common seeds and items. "
          "Generated by the report; nothing here is typed by hand. Each interval holds for its own cell: "
          "of the cells where there is no true difference, about 1 in 20 gets \"better\" or \"worse\" by "
          "chance (no correction for multiple comparisons). Task sets only: general sets are in Forgetting.", ""]
    any_rows = False
    for s in data.task_sets():
        fs = ev.findings[s]
        if not fs:
            continue
        any_rows = True
        md += [f"### {text(s)} ({text(data.roles[s])} set)", ""] + table(FINDINGS_HEADER, _finding_rows(fs))
        for label, _, _ in COMPARISONS:
            kind = [f for f in fs if f["comparison"] == label]
            if kind:
                md.append("- " + summary(kind, label))
        for f in (f for f in fs if f.get("majority")):
            yes = lambda x: "beats it" if x else "does not beat it"  # noqa: E731
            md.append(f"- {text(f['metric'])}, {text(f['comparison'])} ({budget_text(f['task_tokens'])}, ratio "
                      f"{ratio_text(f['ratio'])}): majority-class rate {num(f['majority']['rate'])}; tell "
                      f"{yes(f['a_beats_majority'])}, {text(f['b']['method'])} {yes(f['b_beats_majority'])}.")
        md.append("")
    if not any_rows:
        md += ["No comparison: no tell cell has a baseline at its budget and ratio.", ""]
    return md

def section_forgetting(ev: Evidence, figs: Path) -> list[str]:
    data = ev.data
    md = ["## Forgetting: general-ability sets against the base model", ""]
    gsets = [s for s in data.sets if data.roles[s] == "general"]
    if not gsets:
        return md + ["No general-ability set (role \"general\") in this sweep: forgetting is not measured.", ""]
    md += ["Change = cell - base on the same seeds and items (the base model is evaluated once per seed); a "
           "negative change is ability lost.", ""]
    tsets = data.task_sets()
    for g in gsets:
        fs = ev.forgetting[g]
        if not fs:
            md += [f"### {text(g)}", "", "No base cell to compare with.", ""]
            continue
        rows = [[f["metric"], f["a"]["method"], budget_text(f["task_tokens"]), ratio_text(f["ratio"]), f["seeds"],
                 num(f["b_value"]), num(f["a_value"]), num(f["diff"]), ci_text(*f["ci95"]), f["verdict"]] for f in fs]
        md += [f"### {text(g)}", ""] + table(["metric", "method", "task tokens", "ratio", "seeds", "base", "cell",
                                        "change", "paired 95% interval", "verdict"], rows)
        md.append(summary(fs, f"{text(g)}, trained cells vs base").replace("better", "higher").replace("worse", "lower"))
        md.append("")
        if tsets:
            md += _forgetting_plots(data, figs, g, tsets[0])
    return md

def _forgetting_plots(data: SweepData, figs: Path, gset: str, tset: str) -> list[str]:
    gm, tm = data.primary[gset], data.primary[tset]
    gpts, tpts = data.points(gset, gm), data.points(tset, tm)
    md = []
    for b in sorted({p.budget for p in gpts.values() if p.budget}):
        md += plot_forgetting(figs, gset, gm, tset, tm, b, gpts, tpts)
    return md

def _fit_models_table(fit: dict) -> list[str]:
    rows = []
    for name, e in fit["models"].items():
        ci = e.get("ci95") or {}
        params = ", ".join(f"{k}={num(v)}" for k, v in e["params"].items())
        cis = ", ".join(f"{k} {range_text(*v) if k == 'x0' else ci_text(*v)}" for k, v in ci.items()
                        if k != "midpoint_tokens") or "-"
        rows.append([name + (" (chosen)" if name == fit["best"] else ""), params, cis, num(e["rmse"]),
                     num(e["loo_rmse"])])
    return table(["model", "parameters (x = log10 general tokens)", "95% intervals", "RMSE", "LOO RMSE"], rows)

def fit_lines(res: dict) -> list[str]:
    fit = res["fit"]
    restricted = len(res["common_seeds"]) < len(res["all_seeds"])
    md = [f"**{text(res['metric'])}, {res['task_tokens']:,} task tokens**: tell at {len(res['points'])} ratio(s); "
          f"seeds common to every point: {text(res['common_seeds'])} (n={len(res['common_seeds'])})"
          + (f", restricted from {text(res['all_seeds'])} so that every point has the same seeds" if restricted else "")
          + ".", ""]
    if res["points"]:
        md += table(["ratio", "general tokens", "value (common seeds)", "95% interval"],
                    [[ratio_text(q["ratio"]), f"{q['general']:,.0f}", num(q["value"]), ci_text(q["lo"], q["hi"])]
                     for q in res["points"]])
    if not fit.get("fitted"):
        return md + [f"No fit: {text(fit['reason'])}.", ""]
    md += _fit_models_table(fit)
    for name, why in fit.get("not_fitted", {}).items():
        md.append(f"- {text(name)} not fitted: {text(why)}.")
    if not res["verdict_ok"]:
        return md + [f"Shape: {NO_VERDICT} (the models above are numbers only).", ""]
    md.append(f"Shape: **{text(fit['shape'])}** ({text(fit['shape_reason'])}).")
    lg = fit["models"].get("logistic")
    if fit["shape"] == "S-curve":
        ci = (lg.get("ci95") or {}).get("midpoint_tokens") or [None, None]
        tokens = range_text(*ci, fmt=lambda v: f"{v:,.0f}")
        md.append(f"Midpoint: {lg['midpoint']:,.0f} general tokens; 95% interval {tokens}.")
    else:
        md.append("Midpoint: not identified (the chosen shape is not an S-curve with its midpoint inside the "
                  "measured range).")
    if fit.get("replicate_refits") is None:
        md.append("No parameter intervals: no item scores, so no bootstrap replicates.")
    return md + [""]

def section_scaling(ev: Evidence, figs: Path, set_name: str) -> list[str]:
    data, md = ev.data, []
    for metric in data.metrics[set_name]:
        pts = data.points(set_name, metric)
        for res in ev.fits[(set_name, metric)]:
            md += fit_lines(res)
            if metric == data.primary[set_name]:
                b = res["task_tokens"]
                na = [p for p in pts.values() if p.method == "tell-no-anchor" and p.budget == b]
                md += plot_general_scaling(figs, set_name, metric, b, res, na)
    if md:
        md = [f"### {text(set_name)}: scaling with general tokens", "", "Per task budget, the tell points against general "
              "tokens; constant, line and rising logistic in log10(general tokens) compared by leave-one-out "
              "error (`stats.fit_scaling`); a curve is drawn only for the chosen model, with at least "
              f"{MIN_SEEDS} seeds.", ""] + md
    return md

def section_bars(data: SweepData, figs: Path, set_name: str) -> list[str]:
    metric = data.primary[set_name]
    pts = data.points(set_name, metric)
    top = top_ratios(pts)  # each budget's own largest tell ratio (one general amount gives each budget its own)

    def lookup(m, b, r):
        if m == "base":
            return find(pts, "base", any_ratio=True)
        return find(pts, m, b, any_ratio=True) if m == "sft" else find(pts, m, b, r)

    md = []
    for kind, methods in (("anchor", ("tell", "tell-no-anchor")),
                          ("ablation", ("base", "general-only", "sft", "sft-matched", "tell"))):
        cells = sorted({(p.budget, p.ratio) for p in pts.values() if p.method == methods[-1] and p.ratio is not None
                        and (kind == "anchor" or p.ratio == top.get(p.budget))})
        if kind == "anchor":
            cells = [c for c in cells if lookup("tell-no-anchor", *c)]
        elif any(lookup(m, *c) for c in cells for m in ("general-only", "sft-matched")):
            # the budgets the paired methods ran at (a spec's paired_task_tokens), not tell's budget ladder
            cells = [c for c in cells if any(lookup(m, *c) for m in ("general-only", "sft-matched"))]
        if not cells:
            continue
        md += plot_bars(figs, set_name, metric, kind, methods, cells, lookup)
        md += [f"{'Anchor vs no anchor' if kind == 'anchor' else 'Ablation'} ({text(metric)}): value [95% interval] "
               "(n = seeds); the paired differences are in Findings.", ""]
        md += table(["task tokens", "ratio"] + list(methods),
                    [[budget_text(b), ratio_text(r)] + [point_text(lookup(m, b, r)) for m in methods]
                     for b, r in cells])
    return md

def efficiency_text(e: dict) -> tuple[str, str, str]:
    """(SFT-equivalent tokens, efficiency, interval) in words, with the bound the stats module gives."""
    if not e.get("computed"):
        return "-", "-", e.get("reason") or "-"
    eq, x = f"{e['sft_equivalent_tokens']:,.0f}", f"{e['efficiency']:.3g}x"
    if e["bound"] == "lower":
        eq, x = f"> {eq} (beyond every SFT budget)", f"at least {x} (lower bound)"
    elif e["bound"] == "upper":
        eq, x = f"<= {eq} (the smallest SFT budget already reaches it)", f"at most {x} (upper bound)"
    lo, hi = e["ci95"]
    if lo is None and hi is None and e.get("interval", "").startswith("none"):
        ci = "no interval (no item scores)"
    else:
        ci = (f"[{'below the smallest budget' if lo is None else f'{lo:.3g}x'}, "
              f"{'unbounded above' if hi is None else f'{hi:.3g}x'}]")
    return eq, x, ci

def section_efficiency(ev: Evidence) -> list[str]:
    data = ev.data
    md = ["## Token-efficiency", "", "SFT task tokens that reach a tell cell's score (SFT curve made monotone, "
          "interpolated linearly in log tokens; `stats.token_efficiency`), as a multiple of the tell cell's "
          "requested task tokens; the interval is from joint bootstrap replicates on the seeds common to the "
          "tell cell and every SFT budget. Needs at least 4 SFT budgets.", ""]
    for s in data.task_sets():
        for metric in data.metrics[s]:
            md += _efficiency_table(ev.efficiency.get((s, metric)), s, metric)
    return md

def _efficiency_table(eff: dict | None, set_name: str, metric: str) -> list[str]:
    if eff is None:
        return []
    md, rows = [f"### {text(set_name)}: {text(metric)}", "", text(eff["why"]), ""], []
    for e in eff["entries"]:
        eq, x, ci = efficiency_text(e)
        note = NO_VERDICT if e.get("computed") and len(e["seeds_used"]) < MIN_SEEDS else ""
        rows.append([budget_text(e["tell_task_tokens"]), ratio_text(e["general_ratio"]), len(e["seeds_used"]),
                     num(e.get("tell_value")), eq, x, ci, note])
    if not rows:
        return md
    return md + table(["tell task tokens", "ratio", "seeds", "tell score", "SFT tokens for the same score",
                       "efficiency", "95% interval", "note"], rows)


def section_lr(data: SweepData) -> list[str]:
    md = ["## Learning-rate selection", ""]
    sel = data.lr_selection
    if not sel:
        return md + ["Not recorded: this folder has no lr_selection.json, so it cannot show that every method "
                     "got its learning rate from the same rule on validation data.", ""]
    md += [f"Rule (declared before running): {text(sel.get('rule') or 'not stated')}", ""]
    rows = []
    for g in sel.get("groups", []):
        for c in g.get("candidates", []):
            chosen = c.get("lr") == g.get("chosen_lr") and g.get("chosen_lr") is not None
            rows.append([g.get("method"), budget_text(g.get("task_tokens_requested")), ratio_text(g.get("ratio")),
                         lr_text(c.get("lr")), _seeds(c.get("seeds")), _seeds(c.get("unstable_seeds")),
                         _seeds(c.get("pending_seeds")), num(c.get("val_task")), num(c.get("val_general_loss")),
                         Markup("**chosen**") if chosen else "", g.get("reason", "") if chosen or g.get("chosen_lr") is None
                         else ""])
    return md + ["Validation numbers are the ones the rule reads (see its text for what val_task measures).", ""] + \
        table(["method", "task tokens", "ratio", "lr", "seeds", "unstable seeds", "pending seeds",
               "validation task", "validation general loss", "chosen", "reason"], rows)

def _seeds(s) -> str:
    """Seeds as a list or a count (the sweep writes counts); 0 is a count, not a missing value."""
    if s is None or s == []:
        return "-" if s is None else "0"
    return ", ".join(str(x) for x in s) if isinstance(s, list) else str(s)

def section_set(ev: Evidence, figs: Path, set_name: str) -> list[str]:
    """A set's points (every metric), its plot against task tokens, scaling fits and bars (task sets)."""
    data = ev.data
    md = [f"## {text(set_name)} ({text(data.roles[set_name])} set): points", ""]
    for metric in data.metrics[set_name]:
        md += section_points(data, set_name, metric)
    metric = data.primary[set_name]
    md += plot_task_scaling(figs, set_name, metric, data.points(set_name, metric),
                            amounts=data.spec.get("general_tokens") or None)
    if data.roles[set_name] != "general":
        md += section_scaling(ev, figs, set_name) + section_bars(data, figs, set_name)
    return md


def section_training_evals(data: SweepData, figs: Path, primary: str | None = None) -> list[str]:
    """Evaluations during training (`train: {eval_steps: N, eval_data: [...]}` in the spec): each set's primary
    metric (`primary`: the report's --primary) against steps, for every selected cell that logged them; nothing
    when none did."""
    from tell.experiments.cell import CellDir

    series: dict = {}
    seen = set()
    for r in data.evidence:
        if not r.get("run_dir") or r["cell"] in seen:
            continue
        seen.add(r["cell"])
        label = f"{r['method']} r{ratio_text(r.get('ratio'))} s{r['seed']}"
        for row in CellDir(Path(r["run_dir"]).parent, Path(r["run_dir"]).name).run.eval_log():
            for set_name, res in row["eval"].items():
                # the set's primary metric (as the sweep's own set of that name has it, else the declared one)
                want = data.primary.get(set_name) or primary or data.spec.get("primary_metric")
                metric = want if want in res["metrics"] else next(iter(res["metrics"]), None)
                value = (res["metrics"].get(metric) or {}).get("value") if metric else None
                if value is not None:
                    key = (set_name, res["role"], metric)
                    series.setdefault(key, {}).setdefault(label, (r["method"], []))[1].append((row["step"], value))
    if not series:
        return []
    md = ["## During training", "", "Each selected cell's evaluations during training (greedy, the first "
          "`eval_limit` items of each set; `RUN/train_log.jsonl` rows with `eval`).", ""]
    for (set_name, role, metric), lines in sorted(series.items()):
        md += plot_training_evals(figs, set_name, role, metric, lines)
    return md


def make_report(folder: str | Path, primary: str | None = None, title: str | None = None) -> Path:
    """Write report.md, report.html, report_files/*.png, findings.json and token_efficiency.json."""
    import matplotlib

    matplotlib.use("Agg")
    folder = Path(folder)
    ev = gather(load_sweep(folder, primary))
    # Drawn and written in a staging folder, moved in only when the whole report is: a rerun that fails keeps the
    # last report and its plots; one that succeeds drops the plots of an earlier report it did not redraw.
    with staged_output(folder, replaces=("report_files/*.png", *OUTPUTS), last=("report.md", "report.html")) as tmp:
        figs = tmp / "report_files"
        figs.mkdir()
        md = section_header(ev.data, title) + section_health(ev.data) + section_controls(ev) + \
            section_findings(ev) + section_forgetting(ev, figs)
        for s in ev.data.sets:
            md += section_set(ev, figs, s)
        md += section_efficiency(ev) + section_lr(ev.data) + section_training_evals(ev.data, figs, primary)
        _write(tmp, ev, figs, "\n".join(md) + "\n")
    return folder / "report.md"


def _json_safe(x):
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items() if k != "replicates"}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x

def _write(folder: Path, ev: Evidence, figs: Path, text: str) -> None:
    files = [("findings.json", ev.findings_json()), ("token_efficiency.json", ev.efficiency_json())]
    for name, obj in files + ([("controls.json", ev.controls)] if ev.controls else []):
        with atomic_open(folder / name) as f:
            f.write(json.dumps(_json_safe(obj), indent=2) + "\n")
    with atomic_open(folder / "report.md") as f:
        f.write(text)
    with atomic_open(folder / "report.html") as f:
        f.write(_html(text, figs))


_PAGE_HEAD = ("<!doctype html><meta charset='utf-8'><title>TELL report</title>\n"
              "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
              "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}img{max-width:100%}</style>\n")


def _html(md: str, figs_dir: Path) -> str:
    """A self-contained page: the Markdown rendered by markdown-it-py (CommonMark with tables; HTML in the text,
    a set or method name holding `<script>`, is escaped, never passed through), each plot inlined as a data URI.

    Only a PNG that this report drew is inlined: a plain file name inside `figs_dir`, as `plots` writes them. Any
    other image (none can come from a name, which `mdtext.text` escapes) is dropped, its alt text kept and said so,
    so that no local file ever travels in a page meant to be shared."""
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(md)
    drawn = {p.name for p in figs_dir.glob("*.png") if p.is_file() and not p.is_symlink()}
    for inline in (t for t in tokens if t.children):
        kept = []
        for child in inline.children:
            if child.type == "image":
                src = str(child.attrGet("src") or "")
                prefix = f"{FIGS}/"
                name = src[len(prefix):] if src.startswith(prefix) else ""
                if name not in drawn:  # also refuses percent-encoding, '..', a folder or a link: names drawn hold none
                    note = Token("text", "", 0)
                    note.content = f"[image not inlined: {src!r} is not a plot this report drew]"
                    kept.append(note)
                    continue
                data = base64.b64encode((figs_dir / name).read_bytes()).decode()
                child.attrSet("src", f"data:image/png;base64,{data}")
            kept.append(child)
        inline.children = kept
    return _PAGE_HEAD + parser.renderer.render(tokens, parser.options, {})
