"""Write a real-model headline section of benchmarks/RESULTS.md and its README line from the sweep folder,
applying docs/halu_headline.md's pre-registered rules (H8a: E > 1; H8b: E >= 4; the floor and ceiling bounds):
never typed by hand, whatever the verdicts say.

    tell sweep examples/sweeps/halu_smollm2_headline_cpu.yaml --out sweeps/halu-headline
    tell report sweeps/halu-headline
    python benchmarks/halu_headline_results.py sweeps/halu-headline

Part 2 (tell at two examples, `halu_smollm2_headline2_cpu.yaml`): the same with `--part 2`; its section also
compares its SFT ladder with part 1's (read from part 1's section of RESULTS.md: the same cell keys).
It replaces the text between `<!-- halu-headline:begin -->` and `<!-- halu-headline:end -->` (part 2:
`halu-headline-2`) in RESULTS.md and in README.md (atomic writes); a folder whose sweep has not finished is
refused with exit 2.
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

from tell.experiments.readings import READINGS, reading

REPO = Path(__file__).resolve().parents[1]
PARTS = {1: ("halu-headline", "halu_smollm2_headline_cpu.yaml", "tell at one example"),
         2: ("halu-headline-2", "halu_smollm2_headline2_cpu.yaml", "tell at two examples")}
SET, METRIC = "halu-cot-json", "json_strict"


def ladder(data) -> list[tuple[int, float]]:
    """(requested budget, sft mean) of the SFT ladder, smallest first."""
    pts = [p for p in data.points(SET, METRIC).values() if p.method == "sft"]
    return sorted((int(p.budget), p.value) for p in pts)


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
        for hid in READINGS:
            row[hid] = reading(hid, e, value, sft, floor, ceiling, budget) if ev.judged else \
                ("not judged", "a control failed")
        rows.append(row)
    return rows


def _bounded(e: dict) -> str:
    from tell.experiments.report import efficiency_text

    _, x, interval = efficiency_text(e)
    return f"{x} {interval}"


def markers(part: int) -> tuple[str, str]:
    return f"<!-- {PARTS[part][0]}:begin -->", f"<!-- {PARTS[part][0]}:end -->"


def earlier_ladder(results: Path) -> dict[int, str]:
    """Part 1's SFT ladder as its section of RESULTS.md prints it: requested budget -> json_strict mean (text)."""
    begin, end = markers(1)
    text = results.read_text() if results.is_file() else ""
    if begin not in text or end not in text:
        return {}
    block = text.split(begin, 1)[1].split(end, 1)[0]
    out = {}
    for line in block.splitlines():
        cols = [c.strip() for c in line.strip("|").split("|")]
        if len(cols) == 8 and cols[:3] == [SET, METRIC, "sft"]:
            out[int(cols[3].replace(",", ""))] = cols[6]
    return out


def reproduction(data, results: Path) -> list[str]:
    """Part 2's declared check: its ladder cells have part 1's keys; are their means part 1's?"""
    before = earlier_ladder(results)
    now = dict(ladder(data))
    if not before:
        return ["- Part 1's section is not in RESULTS.md: no reproduction check."]
    budgets = sorted(set(before) | set(now))  # a budget either part lacks is a difference, never a pass
    same = [b for b in budgets if b in before and b in now and fmt(now[b]) == before[b]]
    rows = ["| sft task tokens | part 1 | part 2 | same |", "|---|---|---|---|"]
    rows += [f"| {b:,} | {before.get(b, '-')} | {fmt(now[b]) if b in now else '-'} | {'yes' if b in same else 'NO'} |"
             for b in budgets]
    verdict = ("every ladder mean equals part 1's (printed to 3 decimals): the cells reproduced"
               if len(same) == len(budgets) else
               f"{len(budgets) - len(same)} of {len(budgets)} ladder budgets differ from part 1's or are missing from "
               "one part: E below is read off part 2's own ladder, as declared")
    return rows + ["", f"- {verdict}."]


def section(folder: Path, part: int = 1, results: Path | None = None) -> tuple[list[str], str]:
    from tell.experiments.evidence import gather, load_sweep

    ev = gather(load_sweep(folder))
    data = ev.data
    sts, wall = cells(folder)
    spec = folder / "spec.yaml"
    sha = hashlib.sha256(spec.read_bytes()).hexdigest()[:12] if spec.is_file() else "?"
    begin, end = markers(part)
    _, spec_name, what = PARTS[part]
    flag = "" if part == 1 else f" --part {part}"
    md = [begin, f"## TELL's headline on a real model{'' if part == 1 else f', part {part}'}: {what} against an SFT "
          "ladder (SmolLM2, CPU)", "",
          f"Commands: `tell sweep examples/sweeps/{spec_name} --out {folder}`, `tell report "
          f"{folder}`, `python benchmarks/halu_headline_results.py {folder}{flag}`. Commit {commit()}; written "
          f"{datetime.date.today().isoformat()}; {os.cpu_count()}-core {platform.machine()} CPU, no GPU. Spec sha256 "
          f"{sha}...; pre-registered in docs/halu_headline.md. {len(sts)} cells, "
          f"{sum(s['status'] == 'done' for s in sts)} done; their wall time adds up to {wall / 60:.1f} min.", "",
          "### Controls (declared before the run)", ""] + controls_table(ev)
    md += ["", "### The SFT ladder and tell (json_strict, mean over 3 seeds, crossed bootstrap interval)", ""]
    md += points_table(data)
    if part > 1:
        md += ["", "### The ladder against part 1's (declared reproduction check)", ""]
        md += reproduction(data, results or REPO / "benchmarks" / "RESULTS.md")
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
    line = (f"Real model{'' if part == 1 else f', part {part}'} (SmolLM2-135M-Instruct, CPU; "
            f"`benchmarks/halu_headline_results.py{flag}` at {commit()}): "
            f"controls {'passed' if ev.judged else 'FAILED (nothing judged)'}. {readme} "
            "Details and the rules: benchmarks/RESULTS.md, docs/halu_headline.md.")
    return md + [end], line


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", type=Path, help="the halu_smollm2_headline_cpu (part 1) or _headline2_cpu sweep folder")
    ap.add_argument("--part", type=int, choices=sorted(PARTS), default=1, help="which part's section to write")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    ap.add_argument("--readme", type=Path, default=REPO / "README.md")
    args = ap.parse_args(argv)
    sts, _ = cells(args.sweep)
    if not (args.sweep / "results.jsonl").is_file() or not sts or any(s["status"] != "done" for s in sts):
        print(f"error: {args.sweep}: the sweep has not finished (a cell is not done, or no results.jsonl); run the "
              "same `tell sweep` again to resume it", file=sys.stderr)
        return 2
    md, line = section(args.sweep, args.part, args.results)
    begin, end = markers(args.part)
    replace_block(args.results, md, begin, end)
    replace_block(args.readme, [begin, line, end], begin, end)
    print(f"wrote the {PARTS[args.part][0]} section into {args.results} and its line into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
