"""The dry run of a `tell demo` plan: its sweep spec as `tell demo` writes it, then `tell sweep --dry-run` (every
cell, its tokens and steps, nothing trained). Sizes a plan before it is declared (docs/study.md, version 4).

    python scripts/demo_dryrun.py study /tmp/dry --base ~/.cache/tell/demo/base-KEY

The base is only read for its tokenizer (a cached demo base; `tell demo` pretrains one).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml


def main(argv=None) -> int:
    from tell.cli import main as tell
    from tell.synthetic.demo import PLANS, spec_for
    from tell.synthetic.world import World

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("plan", choices=sorted(PLANS))
    ap.add_argument("out", type=Path)
    ap.add_argument("--base", type=Path, required=True, help="a pretrained demo base folder")
    args = ap.parse_args(argv)
    plan = PLANS[args.plan]
    files = World(plan.world).write(args.out / "world")
    spec = args.out / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_for(plan, files, args.base), sort_keys=False))
    return tell(["sweep", str(spec), "--out", str(args.out / "sweep"), "--dry-run"])


if __name__ == "__main__":
    raise SystemExit(main())
