"""python benchmarks/demo_time.py [--out out/demo-time] [--workers N]

Wall time of the README's first command, `tell demo`, on this machine: once from a fresh install (an empty base
cache: the base shipped with tell is copied in, or pretrained first where none is shipped for the plan) and once
more with the base cached, each in its own process, the same flags a user types (`--once`: the fresh run only).
Goal (issues 23, 37): <= 10 minutes on 2 cores for the fresh run.

Writes OUT/demo_time.json and the text between `<!-- demo-time:begin -->` / `<!-- demo-time:end -->` in
benchmarks/RESULTS.md (atomic); the figures are never typed by hand. The fresh run's folder (OUT/fresh) is an
ordinary `tell demo` folder: `python benchmarks/demo_results.py OUT/fresh` writes its findings.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from demo_results import commit, replace_block  # noqa: E402

from tell.io import write_json  # noqa: E402

GOAL_S = 600
BEGIN, END = "<!-- demo-time:begin -->", "<!-- demo-time:end -->"


def run_demo(out: Path, cache: Path, workers: int | None) -> dict:
    cmd = [sys.executable, "-c", "import sys; from tell.cli import main; sys.exit(main())", "demo",
           "--out", str(out), "--cache", str(cache)] + (["--workers", str(workers)] if workers else [])
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)  # the run and its workers
    (out.parent / f"{out.name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"error: `tell demo --out {out}` exited {proc.returncode}; see {out.parent / out.name}.log")
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "cores_busy": round(cpu / wall, 2),
            "load_average_after": round(os.getloadavg()[0], 2), "console_lines": len((proc.stdout + proc.stderr).splitlines()),
            "warning_lines": sum("Warning" in line for line in (proc.stdout + proc.stderr).splitlines())}


def same_findings(out: Path) -> bool | None:
    """Whether the two runs' study.json agree once each run's own folder name is taken out of the paths (None with
    one run)."""
    if not (out / "cached" / "study.json").is_file():
        return None
    text = {name: (out / name / "study.json").read_text().replace(str(out / name), "RUN") for name in ("fresh", "cached")}
    return json.loads(text["fresh"]) == json.loads(text["cached"])


def render(doc: dict, out: Path) -> list[str]:
    runs = doc["runs"]
    fresh, cached = runs["fresh"]["wall_s"], (runs.get("cached") or {}).get("wall_s")
    base = doc.get("base") or "small base pretrained first"
    load = "; ".join(f"{k}: {v['load_average_after']}" for k, v in runs.items() if "load_average_after" in v)
    both = " and with the base cached" if cached is not None else ""
    md = [BEGIN, f"## `tell demo`: wall time from a fresh install{both} (CPU)", "",
          f"Command: `python benchmarks/demo_time.py --out {out}`. Commit {doc['commit']}; {doc['date']}; "
          f"{doc['cores']}-core CPU machine. Each run is `tell demo` in its own process (the README's first command "
          "after set-up); the first starts from an empty base cache. "
          + (f"Machine: {doc['note']}. " if doc.get("note") else "")
          + (f"1-minute load average when each run ended: {load}." if load else ""), "",
          "| run | wall | goal |", "|---|---|---|",
          f"| fresh ({base}) | {fresh / 60:.1f} min ({fresh:.0f} s) | "
          f"<= {GOAL_S // 60} min: {'met' if fresh <= GOAL_S else 'NOT met'} |"]
    if cached is not None:
        md.append(f"| base cached | {cached / 60:.1f} min ({cached:.0f} s) | |")
    busy = "; ".join(f"{k} {v['cores_busy']:.2f} of {doc['cores']}" for k, v in runs.items() if "cores_busy" in v)
    if busy:  # issue 39 item 4: CPU seconds of the run and its workers over its wall seconds
        md += ["", f"Cores busy (CPU seconds of `tell demo` and its workers over wall seconds): {busy}."]
    warn = f"Library warning lines on the console: {runs['fresh']['warning_lines']} (fresh)"
    warn += (f", {runs['cached']['warning_lines']} (cached). The two runs' findings (study.json: controls, verdicts, "
             f"intervals) are {'identical' if doc['same_study_json'] else 'different'}." if cached is not None
             else "; one run (--once).")
    return md + ["", warn, END]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/demo-time"))
    ap.add_argument("--workers", type=int, default=None, help="passed to tell demo (default: its own)")
    ap.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--note", help="what else ran on the machine (written into the section)")
    ap.add_argument("--once", action="store_true", help="the fresh run only (no second run with the base cached)")
    ap.add_argument("--render", action="store_true",
                    help="only write the section again from OUT/demo_time.json (with --note, --commit)")
    ap.add_argument("--commit", help="with --render: the commit the runs were made at, when the json lacks it "
                                     "(runs from a `git archive` snapshot)")
    args = ap.parse_args(argv)
    if args.render:
        doc = json.loads((args.out / "demo_time.json").read_text())
        doc["commit"] = doc["commit"] or args.commit or "unknown"
        doc["same_study_json"] = same_findings(args.out)
        if args.note:
            doc["note"] = args.note
        write_json(args.out / "demo_time.json", doc)
        replace_block(args.results, render(doc, args.out), BEGIN, END)
        print(f"wrote the demo-time section of {args.results} from {args.out / 'demo_time.json'}")
        return 0
    if args.out.exists() and any(args.out.iterdir()):
        print(f"error: {args.out} is not empty: give a new --out (both runs must start from nothing)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "base-cache"
    runs = {}
    for name in ("fresh",) if args.once else ("fresh", "cached"):
        runs[name] = run_demo(args.out / name, cache, args.workers)
        print(f"{name}: {runs[name]['wall_s']:.0f} s", flush=True)
    log = (args.out / "fresh.log").read_text()
    base = "the base shipped with tell copied in" if "shipped with tell" in log else "small base pretrained first"
    doc = {"commit": commit(), "date": datetime.date.today().isoformat(), "cores": os.cpu_count(), "base": base,
           "workers": args.workers, "goal_s": GOAL_S, "runs": runs, "same_study_json": same_findings(args.out),
           **({"note": args.note} if args.note else {})}
    write_json(args.out / "demo_time.json", doc)
    block = render(doc, args.out)
    replace_block(args.results, block, BEGIN, END)
    print(f"wrote {args.out / 'demo_time.json'} and the demo-time section of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
