"""Write the real-model headline's section of benchmarks/RESULTS.md and its README line from the sweep folder,
applying docs/halu_headline.md's pre-registered rules (H8a: E > 1; H8b: E >= 4; the floor and ceiling bounds):
never typed by hand, whatever the verdicts say.

    tell sweep examples/sweeps/halu_smollm2_headline_cpu.yaml --out sweeps/halu-headline
    tell report sweeps/halu-headline
    python benchmarks/halu_headline_results.py sweeps/halu-headline

It replaces the text between `<!-- halu-headline:begin -->` and `<!-- halu-headline:end -->` in RESULTS.md and in
README.md (atomic writes); a folder whose sweep has not finished is refused with exit 2.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import sys
from pathlib import Path

from demo_results import commit, replace_block
from halu_smollm2_results import cells, comparisons_table, controls_table, fmt, observations, points_table

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- halu-headline:begin -->", "<!-- halu-headline:end -->"
SET, METRIC = "halu-cot-json", "json_strict"
THRESHOLDS = {"H8a": 1.0, "H8b": 4.0}


def ladder(data) -> list[tuple[int, float]]:
    """(requested budget, sft mean) of the SFT ladder, smallest first."""
    pts = [p for p in data.points(SET, METRIC).values() if p.method == "sft"]
    return sorted((int(p.budget), p.value) for p in pts)


def reading(hid: str, e: dict, tell_value: float, sft: list[tuple[int, float]], floor: float, ceiling: float,
            budget: int) -> tuple[str, str]:
    """(verdict, why) of H8a or H8b for one tell cell, by docs/halu_headline.md's rules."""
    t = THRESHOLDS[hid]
    if tell_value < floor:
        above = [b for b, v in sft if v >= floor]
        if not above or min(above) > 4 * budget:
            return "inconclusive (floor)", "tell is at the floor and no SFT budget within 4x leaves it"
        bound = min(above) / budget  # sft leaves the floor at this multiple: E is below it
        if bound <= t:
            return "contradicted (bound)", f"tell is at the floor while sft at {bound:g}x is not: E < {bound:g}"
        return "inconclusive (floor)", f"tell is at the floor; sft first leaves it at {bound:g}x, above {t:g}"
    if tell_value > ceiling and sft and sft[-1][1] <= ceiling:
        top = sft[-1][0] / budget
        return ("supported (bound)" if top >= t else "inconclusive (ceiling)",
                f"tell is above the ceiling while sft at {top:g}x is not: E >= {top:g}")
    if not e.get("computed"):
        return "inconclusive", f"no efficiency: {e.get('reason')}"
    lo, hi = e["ci95"]
    lo = 0.0 if lo is None else lo  # below the smallest budget
    hi = float("inf") if hi is None else hi  # beyond the ladder
    if hid == "H8a":
        verdict = "supported" if lo > t else "contradicted" if hi <= t else "inconclusive"
    else:
        verdict = "supported" if lo >= t else "contradicted" if hi < t else "inconclusive"
    return verdict, f"E {e['efficiency']:.3g}x, interval [{lo:.3g}, {'inf' if hi == float('inf') else f'{hi:.3g}'}]"


def efficiency_rows(ev) -> list[dict]:
    data = ev.data
    floor, ceiling = data.spec.get("floor", 0.0), data.spec.get("ceiling", 1.0)
    sft = ladder(data)
    eff = ev.efficiency.get((SET, METRIC)) or {"entries": []}
    rows = []
    for e in eff["entries"]:
        budget = int(e["tell_task_tokens"])
        value = e.get("tell_value")
        if value is None:
            continue
        row = {"budget": budget, "ratio": e["general_ratio"], "seeds": len(e.get("seeds_used") or []),
               "tell": value, "e": e}
        for hid in THRESHOLDS:
            row[hid] = reading(hid, e, value, sft, floor, ceiling, budget) if ev.judged else \
                ("not judged", "a control failed")
        rows.append(row)
    return rows


def _bounded(e: dict) -> str:
    from tell.experiments.report import efficiency_text

    _, x, interval = efficiency_text(e)
    return f"{x} {interval}"


def section(folder: Path) -> tuple[list[str], str]:
    from tell.experiments.evidence import gather, load_sweep

    ev = gather(load_sweep(folder))
    data = ev.data
    sts, wall = cells(folder)
    spec = folder / "spec.yaml"
    sha = hashlib.sha256(spec.read_bytes()).hexdigest()[:12] if spec.is_file() else "?"
    md = [BEGIN, "## TELL's headline on a real model: tell at one example against an SFT ladder (SmolLM2, CPU)", "",
          f"Commands: `tell sweep examples/sweeps/halu_smollm2_headline_cpu.yaml --out {folder}`, `tell report "
          f"{folder}`, `python benchmarks/halu_headline_results.py {folder}`. Commit {commit()}; written "
          f"{datetime.date.today().isoformat()}; {os.cpu_count()}-core {platform.machine()} CPU, no GPU. Spec sha256 "
          f"{sha}...; pre-registered in docs/halu_headline.md. {len(sts)} cells, "
          f"{sum(s['status'] == 'done' for s in sts)} done; their wall time adds up to {wall / 60:.1f} min.", "",
          "### Controls (declared before the run)", ""] + controls_table(ev)
    md += ["", "### The SFT ladder and tell (json_strict, mean over 3 seeds, crossed bootstrap interval)", ""]
    md += points_table(data)
    rows = efficiency_rows(ev)
    md += ["", "### Token-efficiency and the pre-registered readings", "",
           "E = SFT task tokens reaching tell's json_strict / tell's requested task tokens (joint interval over "
           "seeds and items; `tell.experiments.stats.token_efficiency`).", "",
           "| tell task tokens | ratio | seeds | tell json_strict | E [95% interval] | H8a (E > 1) | H8b (E >= 4) |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['budget']:,} | {r['ratio']:g} | {r['seeds']} | {fmt(r['tell'])} | {_bounded(r['e'])} | "
                  f"**{r['H8a'][0]}** ({r['H8a'][1]}) | **{r['H8b'][0]}** ({r['H8b'][1]}) |")
    md += ["", "### Paired findings (tell - other), from the report", ""] + comparisons_table(ev.findings_json())
    obs = observations(data)
    if obs:
        md += ["", "### What the numbers say on their face", ""] + obs
    readme = " ".join(f"tell at {r['budget']:,} task tokens, ratio {r['ratio']:g}: json_strict {fmt(r['tell'])}, "
                      f"E {_bounded(r['e'])}; H8a {r['H8a'][0]}, H8b {r['H8b'][0]}." for r in rows)
    line = (f"Real model (SmolLM2-135M-Instruct, CPU; `benchmarks/halu_headline_results.py` at {commit()}): "
            f"controls {'passed' if ev.judged else 'FAILED (nothing judged)'}. {readme} "
            "Details and the rules: benchmarks/RESULTS.md, docs/halu_headline.md.")
    return md + [END], line


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", type=Path, help="the halu_smollm2_headline_cpu sweep folder")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    ap.add_argument("--readme", type=Path, default=REPO / "README.md")
    args = ap.parse_args(argv)
    sts, _ = cells(args.sweep)
    if not (args.sweep / "results.jsonl").is_file() or not sts or any(s["status"] != "done" for s in sts):
        print(f"error: {args.sweep}: the sweep has not finished (a cell is not done, or no results.jsonl); run the "
              "same `tell sweep` again to resume it", file=sys.stderr)
        return 2
    md, line = section(args.sweep)
    replace_block(args.results, md, BEGIN, END)
    replace_block(args.readme, [BEGIN, line, END], BEGIN, END)
    print(f"wrote the halu-headline section into {args.results} and its line into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
