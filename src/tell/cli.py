"""The `tell` command. Each subcommand is a short function: resolve config -> call the library -> report."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import Callable

from tell import __version__
from tell.config import add_arguments, build, dashed_flags, parse_settings
from tell.errors import TellError
from tell.eval.config import EvalConfig
from tell.experiments.config import AnchorConfig
from tell.models import ignore_library_warnings
from tell.prepare import PrepareConfig
from tell.probe.config import ProbeConfig
from tell.train.config import TrainConfig

PREPARE_EXAMPLE = """\
example:
  tell prepare --task examples/quickstart/task.jsonl --general examples/quickstart/general.jsonl \\
      --tokenizer examples/quickstart/tokenizer --task-tokens 2000 --ratio 2 \\
      --anchor "Answer in the JSON format of the hallucination-judging task." --seed 42 --out out/quickstart
  tell prepare --config examples/quickstart/prepare.yaml --ratio 3 --out out/quickstart-r3   # flags override the YAML
"""


def _overrides(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k not in ("func", "config", "debug", "settings", "_parser")}


def _config(cls: type, args: argparse.Namespace):
    """The command's settings: defaults <- --config / a CONFIG.yaml word <- KEY=VALUE words <- flags."""
    path, pairs = parse_settings(getattr(args, "settings", None) or [])
    if path and args.config:
        raise TellError(f"two configs given ({args.config} by --config and {path}); give one")
    return build(cls, yaml_path=args.config or path, overrides=_overrides(args), settings=pairs)


def cmd_prepare(args: argparse.Namespace) -> int:
    from tell.prepare import prepare

    cfg = _config(PrepareConfig, args)
    m = prepare(cfg)
    b, mix = m["budget"], m["mixture"]
    ratio = "n/a" if b["ratio_achieved"] is None else f"{b['ratio_achieved']:.3f}"
    print(f"wrote {cfg.out}/mixture.jsonl: {mix['examples']:,} examples, {mix['tokens']:,} tokens "
          f"({m['_seconds']:.1f}s)")
    print(f"  task:    {b['task_examples']:,} examples, {b['task_tokens']:,} tokens"
          f" (requested {b['task_tokens_requested'] if b['task_tokens_requested'] is not None else 'all'})"
          + (f" + {b['anchor_tokens']:,} anchor tokens (not counted in the budget)" if b.get("anchor_tokens") else ""))
    print(f"  general: {b['general_examples']:,} examples, {b['general_tokens']:,} tokens "
          f"(requested {b['general_tokens_requested']:,}); general:task ratio {ratio}")
    for label in ("task", "general"):
        if m["dropped"][label]:
            print(f"  dropped from {label} data: {m['dropped'][label]}")
    _print_lengths(m["lengths"])
    for label in ("task", "general"):
        if b[f"{label}_repeat_factor"] > 1:
            print(f"  {label} data repeated {b[f'{label}_repeat_factor']:.2f}x (--allow-repeat)")
    for c in m["contamination"]:
        print(f"  contamination {c['eval']}: {c['exact_overlap']} exact, {c['ngram13_overlap']} 13-gram overlaps "
              f"of {c['examples']} eval examples")
    print(f"  manifest: {cfg.out}/manifest.json")
    return 0


def _print_lengths(ln: dict) -> None:
    """The prepare summary's length line: longest examples, and those over the training length."""
    who = f"counted by {ln['counted_by']['name']}, without chat-template tokens"
    line = f"  longest example: task {ln['task']['longest']:,}, general {ln['general']['longest']:,} tokens ({who})"
    n = ln["train_max_length"]
    if n:
        over = {s: ln[s]["over_train_max_length"] + ln[s]["dropped_over_train_max_length"] for s in ("task", "general")}
        action = {"keep": "kept; training cuts their tail", "drop": "dropped", "refuse": "none allowed"}[ln["policy"]]
        line += f"; over --train-max-length {n:,}: task {over['task']:,}, general {over['general']:,} ({action})"
    print(line)


TRAIN_EXAMPLE = """\
example:
  tell train --mixture out/quickstart --model path/to/model --out runs/quickstart
  tell train --config train.yaml --learning-rate 2e-4          # flags override the YAML
  tell train --mixture out/quickstart --model path/to/model --out runs/quickstart --resume
  accelerate launch --num_processes 2 -m tell.cli train --mixture mix --model meta-llama/Llama-2-7b-chat-hf \\
      --out runs/7b --micro-batch-size 2                        # DDP; batch 16 = 2 x 4 steps x 2 processes
"""


def cmd_train(args: argparse.Namespace) -> int:
    from tell.train.run import train

    cfg = _config(TrainConfig, args)
    m = train(cfg)
    if m:
        print(f"trained {m['steps']} optimizer steps on {m['examples']:,} examples in {m['seconds']:.1f}s; "
              f"final loss {m['final_loss']:.4f} (task {_fmt(m['final_loss_task'])}, general "
              f"{_fmt(m['final_loss_general'])})")
        policy = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in m["length_policy"].items())
        print(f"  adapter: {cfg.out}/adapter   log: {cfg.out}/train_log.jsonl")
        print(f"  examples (length policy {cfg.length_policy}, max length {cfg.max_length:,}): {policy}")
    return 0


EXPORT_EXAMPLE = """\
example:
  tell export runs/quickstart --out export/adapter            # the LoRA adapter alone
  tell export runs/quickstart --out export/merged --merge     # merged into the base weights (safetensors)
  tell export runs/smollm2 --out export/gguf --gguf q8_0       # ... and as model.q8_0.gguf for llama.cpp / Ollama
"""


def cmd_export(args: argparse.Namespace) -> int:
    from tell.train.export import export

    dest = export(args.run, args.out, merge=args.merge, model=args.model, trust_remote_code=args.trust_remote_code,
                  gguf=args.gguf)
    what = f"merged model and model.{args.gguf}.gguf" if args.gguf else "merged model" if args.merge else "adapter"
    print(f"wrote {what} to {dest}")
    return 0


EVAL_EXAMPLE = """\
example:
  tell eval --model meta-llama/Llama-2-7b-chat-hf --adapter runs/tell-7b --data halu-cot-json --out evals/tell-7b
  tell eval --model google/gemma-7b-it --data is-en-news:en-is --data is-en-news:is-en --limit 20 --greedy --out evals/base
  tell eval --model MODEL --data my_eval.jsonl --metric json --out evals/mine   # a file of your own
  tell eval --model MODEL --adapter runs/tell --lm-eval hellaswag,my_task --lm-eval-include my_tasks/ --out evals/lm
"""

DATA_EXAMPLE = """\
example:
  tell data build halu-cot-json --out data          # from ../shared/data when it exists, else downloaded
  tell data build agieval --out data --source /path/to/copies
"""


def cmd_eval(args: argparse.Namespace) -> int:
    from tell.eval.run import evaluate

    cfg = _config(EvalConfig, args)
    res = evaluate(cfg)
    for name, s in res["sets"].items():
        shown = ", ".join(f"{k} {_fmt_ci(v)}" for k, v in s["metrics"].items())
        print(f"{name} ({s['items']} items): {shown}")
    for name, s in res.get("averages", {}).items():
        shown = ", ".join(f"{k} {_fmt_ci(v)}" for k, v in s["metrics"].items())
        print(f"{name} average of {len(s['sets'])} sub-tasks ({s['items']} items): {shown}")
    for name, t in res.get("lm_eval", {}).get("tasks", {}).items():
        shown = ", ".join(f"{k} {_fmt_ci(v)}" for k, v in t["metrics"].items())
        print(f"lm-eval {name}{' (group)' * t['group']} ({t['items']} items, role {t['role']}"
              f"{', anchored' if t['anchor'] else ''}): {shown}")
    wrote = ["predictions.jsonl"] * bool(res["sets"]) + ([res["lm_eval"]["samples"]] if "lm_eval" in res else [])
    print(f"  wrote {', '.join(f'{cfg.out}/{w}' for w in wrote + ['metrics.json'])}")
    return 0


def _fmt_ci(m: dict) -> str:
    v, (lo, hi) = m["value"], m["ci95"]
    f = lambda x: "n/a" if x is None else f"{x:.3g}"
    return f"{f(v)} [{f(lo)}, {f(hi)}]"


def cmd_data_build(args: argparse.Namespace) -> int:
    from tell.data.builders import build as build_set

    m = build_set(args.name, args.out, source=args.source, cache=args.cache)
    print(f"built {args.name} into {args.out}/{args.name}: {m['splits']}")
    return 0


SWEEP_EXAMPLE = """\
example:
  tell sweep examples/sweeps/halu_llama2_7b.yaml --out sweeps/halu-llama2 --dry-run   # the grid and its cost
  tell sweep examples/sweeps/halu_llama2_7b.yaml --out sweeps/halu-llama2 --workers 2
  tell sweep examples/sweeps/halu_llama2_7b.yaml --out /shared/sweeps/halu --executor ray --gpus-per-cell 1
  tell sweep examples/sweeps/halu_llama2_7b.yaml --out /shared/sweeps/halu --executor slurm --no-wait
  tell report sweeps/halu-llama2
"""


def cmd_sweep(args: argparse.Namespace) -> int:
    from tell.experiments.sweep import Sweep, executor_options, load_spec

    spec = load_spec(args.spec)
    opts = executor_options(spec, workers=args.workers, name=args.executor, gpus_per_cell=args.gpus_per_cell,
                            cpus_per_cell=args.cpus_per_cell, ray_address=args.ray_address,
                            wait=False if args.no_wait else None, verbose=True if args.verbose else None)
    sweep = Sweep(spec, args.out, spec_path=args.spec)
    rows = sweep.run(dry_run=args.dry_run, executor=opts)
    outcome = sweep.outcome
    if outcome and outcome.cells and len(outcome.failed) == outcome.cells:
        # Nothing to report: not a success. Exit 1 (a run that failed), not 2 (a refused input).
        print(f"tell: error: all {outcome.cells} cell(s) failed; see {args.out}/cells/*/status.json "
              f"(first: {outcome.failed[0]})", file=sys.stderr)
        return 1
    if not args.dry_run and rows:
        print(f"wrote {args.out}/results.csv and results.jsonl ({len(rows)} rows); next: tell report {args.out}")
    if outcome and outcome.failed:  # a CI job must not read a broken sweep as a success
        word = "accepted (--allow-failed-cells)" if args.allow_failed_cells else "exit 1"
        print(f"tell: {'warning' if args.allow_failed_cells else 'error'}: {len(outcome.failed)} of {outcome.cells} "
              f"cell(s) failed ({word}): {', '.join(outcome.failed)}; see {args.out}/cells/*/status.json; the same "
              "command runs them again", file=sys.stderr)
        return 0 if args.allow_failed_cells else 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tell.experiments.evidence import load_results
    from tell.experiments.report import make_report

    primary, title = args.metric, None
    if primary is not None:  # the report would quietly fall back to the first metric of each set
        known = sorted({r["metric"] for r in load_results(args.results) if r.get("metric") is not None})
        if primary not in known:
            raise TellError(f"no metric '{primary}' in the results; expected one of {known}", file=args.results,
                            field="metric")
    spec_path = os.path.join(args.results, "spec.yaml")
    if os.path.isfile(spec_path):
        from tell.experiments.sweep import load_spec
        spec = load_spec(spec_path)
        primary, title = primary or spec.primary_metric, spec.name
    path = make_report(args.results, primary=primary, title=title)
    print(f"wrote {path}, {path.with_suffix('.html')} and plots in {path.parent / 'report_files'}")
    return 0


DEMO_EXAMPLE = """\
example:
  tell demo                    # within 10 minutes on 2 CPU cores, on the base model shipped with tell
  tell demo --study --workers 2 --out out/study   # the pre-registered study (docs/study.md), resumable
  tell demo --quick --out out/demo-quick
"""


def cmd_demo(args: argparse.Namespace) -> int:
    from tell.synthetic.demo import run_demo

    if args.quick and args.study:
        raise TellError("--quick and --study are two different plans; give one")
    run_demo(args.out, quick=args.quick, workers=args.workers, cache=args.cache, verbose=args.verbose,
             study=args.study, pretrain_base=args.pretrain_base)
    return 0


PROBE_EXAMPLE = """\
example:
  tell probe --model meta-llama/Llama-2-7b-chat-hf --task mix/ --out probes/llama2      # task + general + anchor from a prepare folder
  tell probe --model MODEL --task task.jsonl --general general.jsonl --anchor "Translate into Icelandic." \\
      --anchor2 "A second wording." --layers all --out probes/curve
"""

ANCHOR_EXAMPLE = """\
example:
  tell anchor generate --model MODEL --task task.jsonl --general general.jsonl --out anchors/
  tell prepare ... --anchor-file anchors/anchor.txt
"""


def cmd_probe(args: argparse.Namespace) -> int:
    from tell.probe.run import probe

    cfg = _config(ProbeConfig, args)
    doc = probe(cfg)
    k = doc["main_layer"]
    for cond, metrics in doc["layers"][k].items():
        print(f"layer {k}, {cond} vs general: " + ", ".join(f"{m} {_fmt_ci(v)}" for m, v in metrics.items()))
    if doc.get("anchor_over_random"):
        print(f"  anchor over a random prefix of its length ({doc['random_prefix']['tokens']} tokens): "
              + ", ".join(f"{m} {v:+.4f}" for m, v in doc["anchor_over_random"].items()))
    print(f"  wrote {cfg.out}/probe.json and t-SNE / PCA plots")
    return 0


def cmd_anchor_generate(args: argparse.Namespace) -> int:
    from tell.experiments.anchor_gen import generate_anchor

    cfg = _config(AnchorConfig, args)
    doc = generate_anchor(cfg)
    print(f"{len(doc['ranked'])} candidates kept, {len(doc['rejected'])} rejected; ranked by {doc['metric']} gain "
          f"over no anchor (layer {doc['layer']}):")
    for r in doc["ranked"]:
        print(f"  {r['gain']:+.4f}  {r['anchor']}")
    if doc["ranked"]:
        print(f"  best written to {cfg.out}/anchor.txt (use: tell prepare --anchor-file {cfg.out}/anchor.txt)")
    return 0


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _subcommand(sub, name: str, func: Callable, help_text: str, example: str, cfg_cls: type | None):
    p = sub.add_parser(name, help=help_text.replace("%", "%%"), description=help_text, epilog=example,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    if cfg_cls is not None:  # commands without a config group take flags only (no --config to be ignored)
        p.add_argument("--config", metavar="YAML", help="read settings from a YAML file (flags override it)")
        p.add_argument("settings", nargs="*", metavar="[CONFIG.yaml] [KEY=VALUE ...]",
                       help=f"LLaMA-Factory's form: a YAML config and/or settings by their YAML names "
                            f"(`{p.prog} run.yaml seed=7`); flags override both")
    p.add_argument("--debug", action="store_true", help="show the traceback on errors")
    if cfg_cls is not None:
        add_arguments(p, cfg_cls)
    p.set_defaults(func=func, _parser=p)
    return p


def _count(least: int):
    """An argparse type: a whole number >= `least` (cells, workers, GPUs), refused by argparse otherwise."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if n < least:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, got {n}")
        return n
    return parse


def _sweep_parsers(sub) -> None:
    """`tell sweep` and `tell report`."""
    p = _subcommand(sub, "sweep", cmd_sweep, "run the paper's experiments as a grid of prepare -> train -> eval cells",
                    SWEEP_EXAMPLE, None)
    p.add_argument("spec", metavar="SPEC.yaml", help="the sweep spec (see examples/sweeps/)")
    p.add_argument("--out", required=True, metavar="DIR", help="sweep folder (cells/, results.csv, results.jsonl)")
    p.add_argument("--workers", type=_count(1), default=1,
                   help="cells run in parallel on this machine (executor local)")
    p.add_argument("--executor", choices=("local", "ray", "slurm"),
                   help="where cells run (default: the spec's executor.name, else local)")
    p.add_argument("--gpus-per-cell", type=_count(0), help="GPUs per cell (local: pinned per worker; ray; slurm)")
    p.add_argument("--cpus-per-cell", type=_count(1), help="CPUs per cell (ray, slurm)")
    p.add_argument("--ray-address", help="an existing Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--verbose", action="store_true",
                   help="show the libraries' own output in cells (weights-loading bars, notices); default: one "
                        "line per cell")
    p.add_argument("--no-wait", action="store_true",
                   help="slurm: submit the jobs and exit; the same command later collects what finished")
    p.add_argument("--dry-run", action="store_true",
                   help="print the grid, the tokens each cell trains on and the total cost; trains nothing "
                        "(the mixtures are prepared, which is cheap and cached)")
    p.add_argument("--allow-failed-cells", action="store_true",
                   help="exit 0 when some (not all) cells failed; by default a sweep with a failed cell exits 1, "
                        "after writing the results of the others")
    p = _subcommand(sub, "report", cmd_report, "plots, tables and token-efficiency from a sweep's results",
                    SWEEP_EXAMPLE, None)
    p.add_argument("results", metavar="RESULTS_DIR", help="a `tell sweep` output folder")
    p.add_argument("--metric", help="metric to plot (default: the spec's primary_metric, else the first)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tell", description=textwrap.dedent("""\
            Token-Efficient Leverage Learning: fine-tune an LLM on a low-resource task by adding an anchor
            prompt to the task data and shuffling it into far more general data."""))
    parser.add_argument("--version", action="version", version=f"tell {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _subcommand(sub, "prepare", cmd_prepare, "build a TELL mixture: anchor, exact token budgets, extensive shuffle",
                PREPARE_EXAMPLE, PrepareConfig)
    _subcommand(sub, "train", cmd_train, "train a LoRA adapter on a TELL mixture (paper defaults)",
                TRAIN_EXAMPLE, TrainConfig)
    _subcommand(sub, "eval", cmd_eval, "evaluate a model or adapter the way the paper does, with 95% bootstrap CIs",
                EVAL_EXAMPLE, EvalConfig)
    d = sub.add_parser("data", help="build the paper's data sets", description="build the paper's data sets")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = _subcommand(dsub, "build", cmd_data_build, "build a data set: halu-cot-json, is-en-news, gsm8k, agieval, "
                                                   "openbookqa",
                    DATA_EXAMPLE, None)
    p.add_argument("name", metavar="NAME", help="halu-cot-json | is-en-news | gsm8k | agieval | openbookqa")
    p.add_argument("--out", default="data", metavar="DIR", help="where to write NAME/ (default: data)")
    p.add_argument("--source", metavar="DIR", help="local copies laid out like ../shared/data (default: that folder "
                                                   "when it exists, else download the public files)")
    p.add_argument("--cache", metavar="DIR", help="download cache (default: ~/.cache/tell/sources)")
    _sweep_parsers(sub)
    p = _subcommand(sub, "demo", cmd_demo, "the whole of tell in a small synthetic world, on a CPU, with no downloads",
                    DEMO_EXAMPLE, None)
    p.add_argument("--quick", action="store_true", help="a ~2 minute version (CI)")
    p.add_argument("--study", action="store_true", help="the whole pre-registered study of docs/study.md (version 4: "
                                                        "tell on a budget ladder and over 6 general amounts, 5 seeds; "
                                                        "at most 90 minutes on 2 cores; resumable: run it again to "
                                                        "finish)")
    p.add_argument("--out", default="out/demo", metavar="DIR", help="output folder (default: out/demo)")
    p.add_argument("--workers", type=_count(1), default=None,
                   help="sweep cells in parallel (default: 2 where there are 2 cores or more, each cell on its share "
                        "of them: the demo's tiny models train faster as two processes than as one with 2 threads; "
                        "1 with --quick)")
    p.add_argument("--cache", metavar="DIR", help="where the pretrained base is cached (default: ~/.cache/tell/demo)")
    p.add_argument("--verbose", action="store_true", help="show the libraries' own output in the sweep's cells")
    p.add_argument("--pretrain-base", action="store_true",
                   help="pretrain the base model on this machine (about 5 minutes on 2 cores) instead of using the one "
                        "shipped with tell (its sha256 and the command that made it: tell/synthetic/bases/*/shipped.json)")
    _subcommand(sub, "probe", cmd_probe, "hidden-state separation of task vs general inputs, with and without the anchor",
                PROBE_EXAMPLE, ProbeConfig)
    a = sub.add_parser("anchor", help="anchors written by the model itself", description="anchors written by the model")
    asub = a.add_subparsers(dest="anchor_command", metavar="ACTION", required=True)
    _subcommand(asub, "generate", cmd_anchor_generate, "sample anchors from the model, clean and rank them by the probe",
                ANCHOR_EXAMPLE, AnchorConfig)
    p = _subcommand(sub, "export", cmd_export, "export a run's adapter, alone or merged into the base model",
                    EXPORT_EXAMPLE, None)
    p.add_argument("run", metavar="RUN_DIR", help="a `tell train` run folder (or a PEFT adapter folder)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must be new or empty)")
    p.add_argument("--merge", action="store_true", help="merge the adapter into the base weights")
    p.add_argument("--gguf", choices=("f16", "q8_0"), help="also write the merged model as one GGUF file (llama.cpp, "
                   "Ollama), f16 or q8_0, with the anchor and chat template in its metadata; Llama-architecture "
                   "models with a byte-level BPE tokenizer (implies --merge)")
    p.add_argument("--model", metavar="PATH_OR_ID", help="base model (default: the one the run was trained on)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code to run")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ignore_library_warnings()
    try:
        try:
            return _dispatch(_parse(build_parser(), sys.argv[1:] if argv is None else argv))
        finally:
            sys.stdout.flush()  # a reader that went away (`tell ... | head -1`) shows up here, not at exit
    except BrokenPipeError:
        # Quietly, as a Unix tool killed by SIGPIPE: point stdout at /dev/null so that Python's own flush at
        # exit does not print a second traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Flags spelt with underscores taken as with dashes; an unknown flag refused with the nearest ones."""
    import difflib

    args, extra = parser.parse_known_args(dashed_flags(argv))
    if extra:
        sub = getattr(args, "_parser", parser)
        # names compared without their "--", which every flag shares (--dry-run is no near miss of --lora-rank)
        known = [o[2:] for a in sub._actions for o in a.option_strings if o.startswith("--")]
        hints = [f"{x} (did you mean {' or '.join('--' + k for k in near)}?)" if (near := difflib.get_close_matches(
            x.split("=", 1)[0].lstrip("-"), known, n=2, cutoff=0.6)) else x for x in extra]
        sub.error(f"unrecognized arguments: {' '.join(hints)}")
    return args


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except TellError as e:
        if getattr(args, "debug", False):
            raise
        print(f"tell: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a write the file system refused outside tell's own writers (save_pretrained, ...)
        from tell.io import refused_write

        err = None if getattr(args, "debug", False) else refused_write(e, e.filename or "")
        if err is None:
            return _full_disk(args, e)  # shutil.Error (copytree) is an OSError without an errno: read its text
        print(f"tell: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("tell: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a library's own writer refused for space (torch, safetensors, tokenizers)
        return _full_disk(args, e)


def _full_disk(args: argparse.Namespace, e: BaseException) -> int:
    """One line for a write refused for space that tell's own writers did not catch; anything else re-raised."""
    from tell.io import disk_of, full_disk

    if getattr(args, "debug", False) or not full_disk(e):
        raise e
    out = getattr(args, "out", None) or getattr(e, "filename", None) or "."
    print(f"tell: error: a write was refused under {out} on {disk_of(out)}: the disk is full or a file-size limit was hit "
          f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); free space and run the "
          "command again (tell train with --resume: from its last complete checkpoint; an unfinished export or "
          "checkpoint is never taken for a finished one)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
