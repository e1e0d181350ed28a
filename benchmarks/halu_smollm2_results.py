"""Write the real-model experiment's section of benchmarks/RESULTS.md from its sweep folder: never typed by hand.

    tell sweep examples/sweeps/halu_smollm2_cpu.yaml --out sweeps/halu-smollm2   # see the spec's header for data
    tell report sweeps/halu-smollm2
    python benchmarks/halu_smollm2_results.py sweeps/halu-smollm2

The section carries the commit, the date, the commands, the machine, the spec's checksum, the cells' wall time,
the declared controls with their values, every method's points (mean over seeds with the report's crossed
bootstrap interval) and the report's paired findings and forgetting, whatever they say. It replaces the text
between `<!-- halu-smollm2:begin -->` and `<!-- halu-smollm2:end -->` (an atomic write); a folder whose sweep
has not finished (a cell not done) is refused with exit 2.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import sys
from pathlib import Path

from demo_results import commit, replace_block

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- halu-smollm2:begin -->", "<!-- halu-smollm2:end -->"
METRICS = ("json_strict", "json_lenient", "json_official", "label_accuracy_all", "accuracy")
ORDER = ("base", "sft", "sft-matched", "tell", "tell-no-anchor", "general-only")


def fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def ci(lo, hi) -> str:
    return "-" if lo is None else f"[{lo:.3f}, {hi:.3f}]"


def cells(folder: Path) -> tuple[list[dict], float]:
    sts = [json.loads(p.read_text()) for p in sorted(folder.glob("cells/*/status.json"))]
    return sts, sum(float(s.get("wall_s") or 0) for s in sts)


def points_table(data) -> list[str]:
    md = ["| set | metric | method | task tokens | ratio | seeds | value | 95% interval |", "|---|---|---|---|---|---|---|---|"]
    for s in data.sets:
        for m in [m for m in METRICS if m in data.metrics[s]]:
            pts = sorted(data.points(s, m).values(), key=lambda p: (ORDER.index(p.method) if p.method in ORDER
                                                                     else 99, p.budget or 0, p.ratio or 0))
            md += [f"| {s} | {m} | {p.method} | {p.budget or 0:,} | {'-' if p.ratio is None else f'{p.ratio:g}'} | "
                   f"{len(p.seeds)} | {fmt(p.value)} | {ci(p.lo, p.hi)} |" for p in pts]
    return md


def comparisons_table(rows: list[dict]) -> list[str]:
    md = ["| set | metric | comparison | task tokens | tell's ratio | seeds | a | b | difference | paired 95% interval "
          "| verdict |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in rows:
        if f["metric"] not in METRICS:
            continue
        lo, hi = f["ci95"]
        ratio = (f.get("a") or {}).get("ratio")
        md.append(f"| {f['set']} | {f['metric']} | {f['comparison']} | {f.get('task_tokens') or 0:,} | "
                  f"{'-' if ratio is None else f'{ratio:g}'} | {f['seeds']} | {fmt(f['a_value'])} | "
                  f"{fmt(f['b_value'])} | {fmt(f['diff'])} | {ci(lo, hi)} | {f['verdict']} |")
    return md


def observations(data) -> list[str]:
    """Sentences computed from the points: what a reader should not miss."""
    out = []
    for s in data.sets:
        if "json_official" in data.metrics[s]:
            vals = [p.value for p in data.points(s, "json_official").values()]
            strict = [p.value for p in data.points(s, "json_strict").values() if p.method != "base"]
            if vals and max(vals) == 0 and strict and max(strict) > 0:
                out.append(f"- `json_official` is 0 in every cell on {s}, while trained cells reach json_strict up "
                           f"to {max(strict):.3f}: the official rewrite as `../shared/paper/official_eval.md` "
                           "records it (every `\"` to `'`, then only `'thought': '` back) leaves any output with a "
                           "second field unparseable: the published script counts every well-formed two-field answer "
                           "as an error (docs/paper_comparability.md); `json_strict` is the figure to read here.")
        if "label_accuracy_all" in data.metrics[s]:
            pts = data.points(s, "label_accuracy_all")
            no = _share_no(data, s)
            if no is not None and pts:
                top = max(pts.values(), key=lambda p: p.value)
                out.append(f"- Label accuracy: answering \"no\" to every item of {s} scores {no:.3f} (the gold "
                           f"labels' share of \"no\"); the best cell ({top.method}) scores {top.value:.3f}.")
    return out


def _share_no(data, set_name: str) -> float | None:
    spec_eval = data.folder / "cells"
    for p in sorted(spec_eval.glob("*/eval/predictions.jsonl")):
        golds = [json.loads(line).get("scores", {}).get("gold") for line in p.read_text().splitlines()]
        golds = [g for g in golds if g in ("yes", "no")]
        if golds:
            return sum(g == "no" for g in golds) / len(golds)
    return None


def controls_table(ev) -> list[str]:
    """The declared controls with their measured values, and whether the comparisons are judged."""
    return ["| control | claim | rule | measured | passed |", "|---|---|---|---|---|"] + \
        [f"| {c['id']} | {c['claim']} | {c['rule']} | {c['measured']} | {'yes' if c['passed'] else 'NO'} |"
         for c in ev.controls] + \
        ["", "All passed: the comparisons below are judged." if ev.judged else
         "A control failed: no comparison below is judged."]


def section(folder: Path) -> list[str]:
    from tell.experiments.evidence import gather, load_sweep

    ev = gather(load_sweep(folder))
    data = ev.data
    sts, wall = cells(folder)
    spec = folder / "spec.yaml"
    sha = hashlib.sha256(spec.read_bytes()).hexdigest()[:12] if spec.is_file() else "?"
    md = [BEGIN, "## A real model through the whole pipeline: Halu-CoT-JSON on SmolLM2-135M-Instruct (CPU)", "",
          f"Commands: `tell sweep examples/sweeps/halu_smollm2_cpu.yaml --out {folder}`, `tell report {folder}`, "
          f"`python benchmarks/halu_smollm2_results.py {folder}`. Commit {commit()}; written "
          f"{datetime.date.today().isoformat()}; {os.cpu_count()}-core {platform.machine()} CPU, no GPU. Spec sha256 "
          f"{sha}... (its header says how its settings were chosen, before the run). {len(sts)} cells, "
          f"{sum(s['status'] == 'done' for s in sts)} done; their wall time adds up to {wall / 60:.1f} min "
          "(one worker: the sweep's own time).", ""]
    md += ["### Controls (declared before the run)", ""]
    if ev.controls:
        md += controls_table(ev)
    else:
        md += ["The spec declares no controls."]
    bounds = [f"{k} {data.spec[k]:g}" for k in ("floor", "ceiling") if data.spec.get(k) is not None]
    if bounds:
        md += ["", f"Declared {' and '.join(bounds)}: a comparison with both arms beyond it is inconclusive."]
    md += ["", "### Points (mean over seeds; crossed bootstrap over seeds and items)", ""] + points_table(data)
    md += ["", "### Paired findings (tell - other) and forgetting (cell - base), from the report", ""]
    md += comparisons_table(ev.findings_json())
    obs = observations(data)
    if obs:
        md += ["", "### What the numbers say on their face", ""] + obs
    return md + [END]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", type=Path, help="the halu_smollm2_cpu sweep folder")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    args = ap.parse_args(argv)
    sts, _ = cells(args.sweep)
    if not (args.sweep / "results.jsonl").is_file() or not sts or any(s["status"] != "done" for s in sts):
        print(f"error: {args.sweep}: the sweep has not finished (a cell is not done, or no results.jsonl); run the "
              "same `tell sweep` again to resume it", file=sys.stderr)
        return 2
    replace_block(args.results, section(args.sweep), BEGIN, END)
    print(f"wrote the halu-smollm2 section into {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
