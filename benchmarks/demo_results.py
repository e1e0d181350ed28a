"""Write the demo sections of benchmarks/RESULTS.md (and the README's demo findings) from a `tell demo` or
`tell demo --study` folder: never typed by hand. The section carries the commit, the date, the command, the run's
wall time and the base models' checksums (from the study's own study.md header).

    tell demo --out out/demo                     # or: tell demo --study --out out/study
    python benchmarks/demo_results.py out/demo   #     python benchmarks/demo_results.py out/study

Replaces the text between the markers `<!-- demo:begin -->` / `<!-- demo:end -->` (a `tell demo` folder) or
`<!-- demo-study:begin -->` / `<!-- demo-study:end -->` (a `--study` folder) in both files (atomic writes);
refuses a folder whose study has not finished (no study.json). `--rejudge` judges the stored cells again with this
checkout's rules first (after a fix to the judging code), training nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

from tell.io import atomic_open

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- demo-study:begin -->", "<!-- demo-study:end -->"
MARKERS = {"tell demo --study": (BEGIN, END), "tell demo": ("<!-- demo:begin -->", "<!-- demo:end -->")}


def plan_of(study: Path) -> str:
    """The plan a folder ran ("tell demo", "tell demo --study", "tell demo --quick"): study.md's title."""
    title = (study / "study.md").read_text().splitlines()[0]
    return title.removeprefix("# ").split(":", 1)[0]


def commit() -> str:
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True).stdout.strip()
    return sha + (" (with uncommitted changes)" if dirty else "")


def section(study: Path, made_at: str | None = None) -> list[str]:
    from tell.synthetic.study import findings_markdown

    plan = plan_of(study)
    begin, end = MARKERS[plan]
    doc = json.loads((study / "study.json").read_text())
    header = (study / "study.md").read_text().split("## Findings", 1)[0].strip().splitlines()[1:]
    v4 = "paired methods at" in "\n".join(header)  # a version-4 plan names where its paired methods run
    what = "the leverage world's pre-registered study" if plan.endswith("--study") else \
        "the study's paired point (3 seeds, one learning rate)" if v4 else \
        "the study's small-base arm (3 seeds, the largest ratio)"
    flags = " --study" if plan.endswith("--study") else ""
    return [begin, f"## `{plan}`: {what}", "",
            f"Command: `tell demo{flags} --out {study}`, then `python benchmarks/demo_results.py {study}`. "
            f"Commit {made_at or commit()}; written {datetime.date.today().isoformat()}; 2-core CPU machine.", ""] + \
        [h for h in header if h.strip()] + ["", *findings_markdown(doc), end]


def replace_block(path: Path, block: list[str], begin: str = BEGIN, end: str = END) -> None:
    """Put `block` (which starts with `begin` and ends with `end`) in place of the text between the markers, or at
    the end of the file; an atomic write."""
    text = path.read_text()
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
    else:
        head, tail = text.rstrip("\n") + "\n\n", "\n"
    with atomic_open(path) as f:
        f.write(head + "\n".join(block) + tail)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path, help="a `tell demo` or `tell demo --study` output folder")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    ap.add_argument("--readme", type=Path, default=REPO / "README.md")
    ap.add_argument("--commit", help="the commit the run was made at, when it is not this checkout's HEAD (a run "
                                     "from a `git archive` snapshot while work went on)")
    ap.add_argument("--rejudge", action="store_true",
                    help="judge the folder's stored cells again with this checkout's rules (no cell is trained) "
                         "before writing; study.md's header then names this commit as the judge")
    args = ap.parse_args(argv)
    if not (args.study / "study.json").is_file():
        print(f"error: {args.study}/study.json not found: the study has not finished (run `tell demo --study` "
              "again with the same --out to resume it)", file=sys.stderr)
        return 2
    plan = plan_of(args.study)
    if plan not in MARKERS:
        print(f"error: {args.study} is a `{plan}` run; only `tell demo` and `tell demo --study` runs are reported",
              file=sys.stderr)
        return 2
    if args.rejudge:
        from tell.synthetic.demo import PLANS
        from tell.synthetic.study import rejudge

        one_base = next((p.one_base for p in PLANS.values() if p.name == plan), None)  # None: the folder's own
        rejudge(args.study, f"at commit {commit()} from the stored cells (none retrained), by "
                            f"`python benchmarks/demo_results.py {args.study} --rejudge`", one_base)
    block = section(args.study, args.commit)
    replace_block(args.results, block, *MARKERS[plan])
    replace_block(args.readme, block, *MARKERS[plan])
    print(f"wrote the {plan} section into {args.results} and {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
