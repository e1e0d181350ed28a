"""The `tell` command. Each subcommand is a short function: resolve config -> call the library -> report."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import Callable

from tell import __version__
from tell.config import PrepareConfig, add_arguments, build
from tell.errors import TellError

PREPARE_EXAMPLE = """\
example:
  tell prepare --task examples/quickstart/task.jsonl --general examples/quickstart/general.jsonl \\
      --tokenizer examples/quickstart/tokenizer --task-tokens 2000 --ratio 10 \\
      --anchor "Answer in the JSON format of the hallucination-judging task." --seed 42 --out out/quickstart
  tell prepare --config examples/quickstart/prepare.yaml --ratio 20   # flags override the YAML
"""


def _overrides(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k not in ("func", "config", "debug")}


def cmd_prepare(args: argparse.Namespace) -> int:
    from tell.data.prepare import prepare

    cfg = build(PrepareConfig, yaml_path=args.config, overrides=_overrides(args))
    m = prepare(cfg)
    b, mix = m["budget"], m["mixture"]
    ratio = "n/a" if b["ratio_achieved"] is None else f"{b['ratio_achieved']:.3f}"
    print(f"wrote {cfg.out}/mixture.jsonl: {mix['examples']:,} examples, {mix['tokens']:,} tokens "
          f"({m['_seconds']:.1f}s)")
    print(f"  task:    {b['task_examples']:,} examples, {b['task_tokens']:,} tokens"
          f" (requested {b['task_tokens_requested'] if b['task_tokens_requested'] is not None else 'all'})")
    print(f"  general: {b['general_examples']:,} examples, {b['general_tokens']:,} tokens "
          f"(requested {b['general_tokens_requested']:,}); general:task ratio {ratio}")
    for label in ("task", "general"):
        if m["dropped"][label]:
            print(f"  dropped from {label} data: {m['dropped'][label]}")
    for label in ("task", "general"):
        if b[f"{label}_repeat_factor"] > 1:
            print(f"  {label} data repeated {b[f'{label}_repeat_factor']:.2f}x (--allow-repeat)")
    for c in m["contamination"]:
        print(f"  contamination {c['eval']}: {c['exact_overlap']} exact, {c['ngram13_overlap']} 13-gram overlaps "
              f"of {c['examples']} eval examples")
    print(f"  manifest: {cfg.out}/manifest.json")
    return 0


def _subcommand(sub, name: str, func: Callable, help_text: str, example: str, cfg_cls: type | None):
    p = sub.add_parser(name, help=help_text, description=help_text, epilog=example,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="YAML", help="read settings from a YAML file (flags override it)")
    p.add_argument("--debug", action="store_true", help="show the traceback on errors")
    if cfg_cls is not None:
        add_arguments(p, cfg_cls)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tell", description=textwrap.dedent("""\
            Token-Efficient Leverage Learning: fine-tune an LLM on a low-resource task by adding an anchor
            prompt to the task data and shuffling it into far more general data."""))
    parser.add_argument("--version", action="version", version=f"tell {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _subcommand(sub, "prepare", cmd_prepare, "build a TELL mixture: anchor, exact token budgets, extensive shuffle",
                PREPARE_EXAMPLE, PrepareConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TellError as e:
        if getattr(args, "debug", False):
            raise
        print(f"tell: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("tell: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
