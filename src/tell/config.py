"""Typed config groups, read from YAML and/or command-line flags (flags win).

Each group is a dataclass whose fields carry their help text in `metadata["help"]`; the CLI flags are
generated from the fields, so a field is documented once. Unknown YAML keys are rejected by name, and
values are type-checked with the file and key in the message.

Values are checked once, where they enter: a field's `opt(check=(predicate, expected))` (a range, a finite
number, a folder rather than a file) runs in `check_value` for YAML and the sweep's typed overrides, and in
every group's `__post_init__` (flags, and configs built in code such as the sweep's cells), so each bad value
gets the same one-line refusal naming the field before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from tell.data.anchor import PLACEMENTS
from tell.data.emit import EMITS
from tell.data.formats import FORMATS
from tell.data.sources import check_columns, check_spec, parse_columns
from tell.errors import TellError
from tell.eval.kinds import KIND_NAMES
from tell.experiments.methods import DEFAULT_METHODS, METHOD_NAMES
from tell.models import DTYPES


def opt(default: Any = None, help: str = "", *, flag: str | None = None, choices: tuple | None = None,
        metavar: str | None = None, secret: bool = False, check: tuple[Callable[[Any], bool], str] | None = None,
        parse: Callable[[Any, str | None, str], Any] | None = None, input_flag: str | None = None) -> Any:
    """A config field with its help text (and optional flag name, choices, metavar). `check` is
    (predicate, what is expected): a value the predicate refuses is a one-line error naming the field
    (None always passes: it means "not given"). `parse(value, file, name)` reads a YAML value the type alone
    cannot describe (an input given as text or a mapping). `input_flag`: "input" for a flag naming an input
    (--task, --general), "refine" for one that refines the input flag just before it (--format, --columns)."""
    meta = {"help": help, "flag": flag, "choices": choices, "metavar": metavar, "secret": secret, "check": check,
            "parse": parse, "input_flag": input_flag}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional?) for `X | None` / `Optional[X]`."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per field of `cls`. Defaults are suppressed so that only flags given are seen."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, _ = _base_type(hints[f.name])
        meta = f.metadata
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        help_text = meta.get("help", "")
        if default not in (None, [], "", False, {}):
            help_text += f" (default: {default})"
        # argparse %-formats help strings: a literal "95%" must be written "95%%"
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text.replace("%", "%%")}
        if meta.get("input_flag") == "input":
            kw.update(action=_InputFlag, many=typing.get_origin(tp) is list)
        elif meta.get("input_flag") == "refine":
            kw.update(action=_RefineFlag, type=_columns_flag if tp is dict else tp)
        if meta.get("input_flag"):
            kw.update({k: meta[k] for k in ("choices", "metavar") if meta.get(k)})
            parser.add_argument(_flag(f), **kw)
            continue
        if tp is bool:
            action = argparse.BooleanOptionalAction if default else "store_true"
            parser.add_argument(_flag(f), action=action, **kw)
            continue
        if typing.get_origin(tp) is list:
            kw.update(action="append", type=typing.get_args(tp)[0])
        elif tp is dict:
            kw.update(action="append", type=_key_value)
        else:
            kw.update(type=tp)
        if meta.get("choices"):
            kw["choices"] = meta["choices"]
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        parser.add_argument(_flag(f), **kw)


class _InputFlag(argparse.Action):
    """A flag naming an input (--task, --general): remembered, so that a --format / --columns right after it
    refines that input alone."""

    def __init__(self, *args: Any, many: bool = False, **kw: Any):
        super().__init__(*args, **kw)
        self.many = many

    def __call__(self, parser, ns, value, option_string=None):
        if self.many:
            setattr(ns, self.dest, list(getattr(ns, self.dest, None) or []) + [value])
            ns._tell_last_input = (self.dest, len(getattr(ns, self.dest)) - 1)
        else:
            setattr(ns, self.dest, value)
            ns._tell_last_input = (self.dest, None)


class _RefineFlag(argparse.Action):
    """--format / --columns: of the input flag just before it (the input becomes a mapping {path, format,
    columns}); before any input flag, the default of every input that names none."""

    def __call__(self, parser, ns, value, option_string=None):
        merge = lambda old: {**old, **value} if isinstance(value, dict) and isinstance(old, dict) else value  # noqa: E731
        target = getattr(ns, "_tell_last_input", None)
        if target is None:
            setattr(ns, self.dest, merge(getattr(ns, self.dest, None)))
            return
        dest, i = target
        items = getattr(ns, dest)
        spec = items if i is None else items[i]
        spec = {"path": spec} if isinstance(spec, str) else dict(spec)
        spec[self.dest] = merge(spec.get(self.dest))
        if i is None:
            setattr(ns, dest, spec)
        else:
            items[i] = spec


def _columns_flag(text: str) -> dict[str, str]:
    try:
        return parse_columns(text)
    except TellError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("field 'columns': ")) from None


def _key_value(text: str) -> tuple[str, Any]:
    """KEY=VALUE from a flag; the value is read as YAML (true, 3, 1.0e-4, a string)."""
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        return key.strip(), value


# Checks for `opt(check=...)`: (predicate, what is expected). NaN fails every comparison, so "finite" is explicit.
def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


POSITIVE = (lambda v: _finite(v) and v > 0, "a finite number > 0")
NON_NEGATIVE = (lambda v: _finite(v) and v >= 0, "a finite number >= 0")
SHARE = (lambda v: _finite(v) and 0 <= v <= 1, "a share between 0 and 1")


def at_least(n: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _finite(v) and v >= n, f"a whole number >= {n}")


def _layer_spec(v: Any) -> bool:
    if v in ("middle", "all"):
        return True
    parts = str(v).split(",")
    return all(p.strip().isdigit() and int(p) >= 1 for p in parts)


LAYERS = (_layer_spec, "middle, all, or layer numbers >= 1 separated by commas (e.g. 8,16)")
# An output folder may be new or an existing folder (the command decides what it accepts there), never a file.
OUT_FOLDER = (lambda v: not Path(v).exists() or Path(v).is_dir(), "a folder, not an existing file")


def check_field(cls: type, name: str, value: Any, where: str | None = None) -> Any:
    """Run the field's `check` (if any) on a typed value; refuse it in one line naming the field."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    check = f.metadata.get("check")
    if check is None or value is None:
        return value
    predicate, expected = check
    try:
        ok = bool(predicate(value))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise TellError(f"expected {expected}, got {value!r}", file=where, field=name)
    return value


def validate(cfg: Any) -> None:
    """Every field's check; called by each config group's __post_init__, so flags, YAML, the sweep's typed
    overrides and configs built in code are all refused the same way, before anything is written."""
    for f in dataclasses.fields(cfg):
        check_field(type(cfg), f.name, getattr(cfg, f.name))


def check_value(cls: type, name: str, value: Any, where: str) -> Any:
    """A YAML (or sweep override) value, typed as the field's flag would type it, then checked."""
    return check_field(cls, name, _typed_value(cls, name, value, where), where)


def as_float(value: Any) -> Any:
    """YAML 1.1 reads `1e-4` (no dot) as text: accept a string that parses as a number for a float field."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _typed_value(cls: type, name: str, value: Any, where: str) -> Any:
    tp, optional = _base_type(typing.get_type_hints(cls)[name])
    if value is None:
        if optional:
            return None
        raise TellError(f"is null; expected a {getattr(tp, '__name__', tp)}", file=where, field=name)
    parse = next(f.metadata.get("parse") for f in dataclasses.fields(cls) if f.name == name)
    if parse is not None:
        return parse(value, where, name)
    if typing.get_origin(tp) is list:
        inner = typing.get_args(tp)[0]
        if not isinstance(value, list):
            value = [value]  # a single value where a list is expected
        if inner is float:
            value = [float(v) if isinstance(v, int) and not isinstance(v, bool) else as_float(v) for v in value]
        if inner is int:
            value = [int(v) if isinstance(v, float) and v.is_integer() else v for v in value]
        if not all(isinstance(v, inner) and not (inner is int and isinstance(v, bool)) for v in value):
            raise TellError(f"expected a list of {inner.__name__}", file=where, field=name)
        return value
    if tp is dict:
        if not isinstance(value, dict):
            raise TellError(f"expected a mapping, got {type(value).__name__}", file=where, field=name)
        return value
    if tp is float:
        value = as_float(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)  # YAML reads 1e6 as a float
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise TellError(f"expected {tp.__name__}, got {type(value).__name__} {value!r}", file=where, field=name)
    choices = next(f.metadata.get("choices") for f in dataclasses.fields(cls) if f.name == name)
    if choices and value not in choices:
        raise TellError(f"expected one of {list(choices)}, got {value!r}", file=where, field=name)
    return value


def load_yaml(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise TellError("no such config file", file=path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise TellError(f"invalid YAML ({getattr(e, 'problem', e)})", file=path,
                        line=None if line is None else line + 1) from None
    except UnicodeDecodeError as e:
        raise TellError(f"not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save the file as UTF-8",
                        file=path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TellError("expected a mapping of setting: value at the top level", file=path)
    return data


def build(cls: type, *, yaml_path: str | None = None, overrides: dict[str, Any] | None = None):
    """Defaults <- YAML file <- overrides (flags). Unknown YAML keys are errors."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if yaml_path:
        data = load_yaml(yaml_path)
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name not in names:
                raise TellError(f"unknown setting; expected one of {sorted(names)}", file=yaml_path, field=str(key))
            values[name] = check_value(cls, name, value, yaml_path)
    for name, value in (overrides or {}).items():
        if name in names:
            if isinstance(value, list) and value and isinstance(value[0], tuple):  # KEY=VALUE flags
                value = {**values.get(name, {}), **dict(value)}
            values[name] = value
    return cls(**values)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config for a run dir or manifest, with secret fields masked."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = "***" if f.metadata.get("secret") and v else v
    return out


# Experiment trackers `tell train --report-to` takes (transformers' integrations; tell.train.run checks the package).
REPORT_TO = ("none", "tensorboard", "wandb", "mlflow")


def _inputs(value: Any, where: str | None, name: str) -> list:
    return [check_spec(v, where, name) for v in (value if isinstance(value, list) else [value])]


@dataclass
class PrepareConfig:
    """`tell prepare`: build a TELL mixture (anchor + exact budgets + extensive shuffle)."""

    def __post_init__(self) -> None:
        validate(self)

    task: str | None = opt(None, "task data: a JSONL/JSON/Parquet/CSV file (.gz/.zst too), a folder or glob of "
                                 "them, a Hub data set id (owner/name[:split]) or a --dataset-info entry; in YAML "
                                 "also a mapping {path, format, columns, tags} or {dataset}", metavar="FILE_OR_ID",
                           parse=check_spec, input_flag="input")
    general: list[str] = opt([], "general data (repeatable; sources are pooled), as --task", metavar="FILE_OR_ID",
                             parse=lambda v, where, name: _inputs(v, where, name), input_flag="input")
    format: str = opt("auto", "record format, or auto-detect; after an input flag (--task, --general, --eval-file) "
                              "of that input only, before any of every input", choices=("auto", *FORMATS),
                      input_flag="refine")
    columns: dict = opt({}, "read other keys as a format's fields, FIELD=KEY,... (prompt=user_query,"
                            "response=chatgpt_response; sharegpt tags too: role_tag=role); after an input flag of "
                            "that input only, before any of every input", metavar="FIELD=KEY,...",
                        parse=check_columns, input_flag="refine")
    dataset_info: str | None = opt(None, "a LLaMA-Factory dataset_info.json: an input named like one of its entries "
                                         "(--task NAME, --general NAME) is read as the entry says (file_name or "
                                         "hf_hub_url, formatting, columns, tags)", metavar="FILE")
    emit: list[str] = opt([], "also write the mixture, in the same order, for other trainers: messages "
                              "(mixture.messages.jsonl: TRL / LLaMA-Factory chats) or prompt-completion "
                              "(mixture.prompt-completion.jsonl: TRL's conversational prompt/completion); "
                              "repeatable", choices=EMITS,
                          check=(lambda v: all(x in EMITS for x in v), f"a list of {list(EMITS)}"))
    tokenizer: str | None = opt(None, "tokenizer that counts tokens: a SentencePiece .model file, or a Hugging "
                                      "Face tokenizer dir or Hub id", metavar="PATH_OR_ID")
    trust_remote_code: bool = opt(False, "allow a Hub tokenizer to run its own code")
    task_tokens: int | None = opt(None, "task token budget (whole examples closest to N); omit for all task "
                                        "data; 0 for general-only", metavar="N",
                                  check=at_least(0))
    ratio: float | None = opt(None, "general tokens = RATIO x task tokens (0: task-only SFT data)", metavar="R",
                              check=NON_NEGATIVE)
    general_tokens: int | None = opt(None, "general token budget, instead of --ratio", metavar="N",
                                     check=at_least(0))
    anchor: str | None = opt(None, "anchor prompt text, added once to every task example", metavar="TEXT")
    anchor_file: str | None = opt(None, "read the anchor text from a file", metavar="FILE")
    no_anchor: bool = opt(False, "no anchor (the ablation)")
    anchor_placement: str = opt("prefix", "where the anchor goes", choices=PLACEMENTS)
    anchor_separator: str = opt("\n", "text between the anchor and the prompt or system text")
    anchor_in_budget: bool = opt(False, "count the anchor's tokens inside --task-tokens (tell 0.1's rule: an anchored "
                                        "mixture then holds fewer task examples than an unanchored one at the same "
                                        "budget). By default the budget counts the task's own tokens, the same "
                                        "examples are chosen with or without the anchor, and the anchor's tokens are "
                                        "recorded beside them (budget.anchor_tokens)")
    seed: int = opt(42, "seed of the task subset, general subset and shuffle (each derived with its purpose)")
    max_length: int | None = opt(None, "longest example allowed, in tokens: a longer one is an invalid row (refused, "
                                       "or dropped with --skip-invalid)", metavar="N", check=at_least(1))
    train_max_length: int | None = opt(None, "the training length (`tell train --max-length`; the sweep passes its "
                                             "train.max_length): the manifest and summary count the examples longer "
                                             "than N tokens, which training would cut, and --length-policy acts on "
                                             "them. Counted by --tokenizer (named in the manifest) on the example's "
                                             "text, without the chat template's tokens: a lower bound of what the "
                                             "model's tokenizer and template make of it; `tell train` counts the "
                                             "exact cuts", metavar="N", check=at_least(1))
    length_policy: str = opt("keep", "examples over --train-max-length: keep (count them; training cuts their "
                                     "tail), drop (leave them out of the budgets, counted), or refuse (stop)",
                             choices=("keep", "drop", "refuse"))
    skip_invalid: bool = opt(False, "drop invalid rows (and too long examples) and count them, instead of stopping")
    allow_repeat: bool = opt(False, "repeat data when a pool is smaller than its budget (reports the repeat factor)")
    eval_file: list[str] = opt([], "eval set to check for overlap with the mixture (repeatable), as --task",
                               metavar="FILE", parse=lambda v, where, name: _inputs(v, where, name),
                               input_flag="input")
    fail_on_contamination: bool = opt(False, "stop with an error if any eval example overlaps the mixture")
    out: str | None = opt(None, "output folder for mixture.jsonl and manifest.json", metavar="DIR",
                          check=OUT_FOLDER)
    token_cache: str | None = opt(None, "folder of cached token counts, per tokenizer and text, shared between "
                                        "runs (a sweep passes its own); the mixture is the same with or without it",
                                  metavar="DIR")
    progress: bool = opt(True, "show progress bars")


@dataclass
class TrainConfig:
    """`tell train`: LoRA on a TELL mixture, in the mixture's order, one epoch by default (paper A.1)."""

    def __post_init__(self) -> None:
        validate(self)

    mixture: str | None = opt(None, "a `tell prepare` output folder (mixture.jsonl + manifest.json)", metavar="DIR")
    model: str | None = opt(None, "base model: a local Hugging Face model dir or a Hub id", metavar="PATH_OR_ID")
    out: str | None = opt(None, "run folder (adapter, config, logs, checkpoints)", metavar="RUN_DIR",
                          check=OUT_FOLDER)
    resume: bool = opt(False, "continue from the last complete checkpoint in RUN_DIR")
    trust_remote_code: bool = opt(False, "allow the model's own code from the Hub to run")
    dtype: str = opt("auto", "weights dtype: auto (bf16 on a GPU that has it, else float32)",
                     choices=DTYPES)
    attn_implementation: str | None = opt(None, "attention kernel: sdpa, eager, flash_attention_2 (default: "
                                                "flash_attention_2 on a GPU when flash-attn is installed, else sdpa)",
                                          metavar="NAME")
    lora_r: int = opt(8, "LoRA rank", check=at_least(1))
    lora_alpha: int = opt(32, "LoRA alpha", check=at_least(1))
    lora_dropout: float = opt(0.05, "LoRA dropout", check=(lambda v: _finite(v) and 0 <= v < 1, "a probability in [0, 1)"))
    target_modules: str = opt("all-linear", "LoRA target modules: all-linear (every linear layer of attention and "
                                            "MLP, not the LM head) or a comma-separated list, e.g. q_proj,v_proj")
    learning_rate: float = opt(1e-4, "peak learning rate (AdamW)", check=POSITIVE)
    weight_decay: float = opt(0.01, "AdamW weight decay", check=NON_NEGATIVE)
    lr_scheduler: str = opt("linear", "learning-rate schedule", choices=("linear", "cosine", "constant_with_warmup"))
    warmup_ratio: float = opt(0.03, "share of the steps spent warming up (0..1); warm-up starts above zero: step i "
                                    "of W runs at (i+1)/(W+1) of the peak, so no step runs at learning rate 0 "
                                    "(tell.train.schedule)", check=SHARE)
    batch_size: int = opt(16, "examples per optimizer step (micro batch x accumulation x processes)",
                          check=at_least(1))
    micro_batch_size: int = opt(4, "examples per forward pass on each process", check=at_least(1))
    epochs: float = opt(1.0, "passes over the mixture (TELL: 1)", check=POSITIVE)
    max_steps: int | None = opt(None, "train exactly N optimizer steps, going over the mixture again as needed "
                                      "(overrides epochs; the sweep's sft-matched baseline uses it)", metavar="N",
                                check=at_least(1))
    seed: int = opt(42, "seed of LoRA init, dropout and anything random in training")
    max_length: int = opt(1024, "longest example in tokens (after the chat template)", check=at_least(2))
    length_policy: str = opt("truncate", "examples over max_length: truncate the answer's tail, or drop them "
                                         "(an example left with no answer token is always dropped and counted)",
                             choices=("truncate", "drop"))
    train_on_prompt: bool = opt(False, "compute the loss on prompt tokens too (default: answer tokens only)")
    packing: str = opt("auto", "pack several examples per row without attention across their borders "
                               "(auto: on where the model supports it)", choices=("auto", "on", "off"))
    gradient_checkpointing: bool = opt(False, "recompute activations to save memory")
    logging_steps: int = opt(1, "log every N optimizer steps", check=at_least(1))
    save_steps: int = opt(50, "checkpoint every N optimizer steps (0: only at the end)", check=at_least(0))
    save_total_limit: int = opt(2, "complete checkpoints to keep", check=at_least(1))
    max_grad_norm: float = opt(1.0, "gradient clipping norm", check=POSITIVE)
    divergence_factor: float = opt(10.0, "stop when the loss exceeds this factor x the first logged loss "
                                         "(a non-finite loss always stops)", check=POSITIVE)
    training_args: dict = opt({}, "other transformers TrainingArguments settings, passed through as they are "
                                  "(YAML mapping, or --training-arg KEY=VALUE, repeatable; e.g. tf32=true, "
                                  "optim=adamw_torch_fused); the settings tell makes itself are refused",
                              flag="--training-arg", metavar="KEY=VALUE")
    report_to: str = opt("none", "also send the training metrics (loss, task / general loss, tokens seen, learning "
                                 "rate) to a tracker: tensorboard (event files under RUN_DIR/checkpoints/runs/), "
                                 "wandb or mlflow; its package must be installed", choices=REPORT_TO)
    run_name: str | None = opt(None, "the run's name in the tracker (default: the run folder's name)", metavar="NAME")
    progress: bool = opt(True, "show progress bars")


@dataclass
class EvalConfig:
    """`tell eval`: generate on eval sets and score them the way the paper does, with bootstrap CIs."""

    def __post_init__(self) -> None:
        validate(self)
        if not self.greedy and not self.temperature > 0:
            raise TellError(f"expected a temperature > 0 for sampling (or --greedy), got {self.temperature!r}",
                            field="temperature")

    model: str | None = opt(None, "base model: a local dir or a Hub id", metavar="PATH_OR_ID")
    adapter: str | None = opt(None, "a `tell train` run folder or a PEFT adapter folder", metavar="RUN_DIR")
    data: list[str] = opt([], "eval set (repeatable): a built name (halu-cot-json, is-en-news:en-is, is-en-news:is-en, "
                              "gsm8k, agieval:SUBTASK, agieval, openbookqa) or a file", metavar="NAME_OR_FILE")
    general_data: list[str] = opt([], "general-ability eval set (repeatable), as --data but scored as role "
                                      "general whatever its data say: never given the anchor (forgetting tests)",
                                  metavar="NAME_OR_FILE")
    task_data: list[str] = opt([], "eval set (repeatable), as --data but scored as role task whatever its data say: "
                                   "given the run's anchor (e.g. gsm8k when GSM8K is the task, paper A.4)",
                               metavar="NAME_OR_FILE")
    lm_eval: list[str] = opt([], "lm-evaluation-harness task, group or tag (repeatable, or a comma list), run on the "
                                 "base model + adapter by the harness's hf model (needs tell[lm-eval]); tasks from "
                                 "--lm-eval-include are the user's (role task: given the run's anchor), registry "
                                 "tasks are general-ability tests; results go into metrics.json under lm_eval",
                             metavar="TASKS")
    lm_eval_general: list[str] = opt([], "as --lm-eval, but scored as role general whatever the task's source: never "
                                         "given the anchor (a local copy of a benchmark)", metavar="TASKS")
    lm_eval_task: list[str] = opt([], "as --lm-eval, but scored as role task whatever the task's source: given the "
                                      "run's anchor (e.g. the harness's gsm8k when GSM8K is the task, paper A.4)",
                                  metavar="TASKS")
    lm_eval_include: list[str] = opt([], "folder of lm-evaluation-harness task YAML files (repeatable): the user's "
                                         "own tasks", metavar="DIR")
    lm_eval_chat_template: str = opt("task", "which --lm-eval tasks are rendered with the chat template training "
                                             "used (the model's, or tell's plain template): task (the user's tasks "
                                             "only; registry tasks as the harness renders them), all, or none",
                                     choices=("task", "all", "none"))
    data_dir: str = opt("data", "where `tell data build` put the built sets (missing ones are built there)")
    out: str | None = opt(None, "output folder for predictions.jsonl and metrics.json", metavar="DIR",
                          check=OUT_FOLDER)
    limit: int | None = opt(None, "evaluate only the first N items of each set", metavar="N", check=at_least(1))
    greedy: bool = opt(False, "greedy decoding instead of the paper's sampling")
    temperature: float = opt(0.3, "sampling temperature (paper; > 0 unless --greedy)", check=NON_NEGATIVE)
    top_k: int = opt(20, "top-k (paper; 0: no top-k)", check=at_least(0))
    top_p: float = opt(0.7, "top-p (paper)", check=(lambda v: _finite(v) and 0 < v <= 1, "a share in (0, 1]"))
    repetition_penalty: float = opt(1.05, "repetition penalty (paper)", check=POSITIVE)
    max_new_tokens: int | None = opt(None, "tokens to generate (default: the set's metric kind's, see "
                                           "tell.eval.kinds, or the set's longest reference answer in the model's "
                                           "tokens x 1.25 + 16 where that is more; metrics.json records it)",
                                     metavar="N", check=at_least(1))
    batch_size: int = opt(16, "prompts per generation batch", check=at_least(1))
    shots: int | None = opt(None, "k-shot examples from the train split (default: 2 for translation, else 0)",
                            metavar="K", check=at_least(0))
    shot_seed: int = opt(42, "seed of the k-shot choice")
    shot_mode: str = opt("fixed", "k-shot examples: fixed (one seeded choice of k shots shown with every item, as "
                                  "the paper's translation eval) or per-item (a seeded choice for each item)",
                         choices=("fixed", "per-item"))
    sample_seed: int = opt(42, "seed of sampling (batch b uses seed + b)")
    anchor: str | None = opt(None, "anchor text for task prompts (default: the one in the run's manifest)",
                             metavar="TEXT")
    anchor_placement: str | None = opt(None, "where --anchor goes (default: as in the manifest, else prefix)",
                                       choices=PLACEMENTS)
    no_anchor: bool = opt(False, "apply no anchor, even if the run was trained with one")
    metric: str | None = opt(None, "metric kind for files without `meta.kind`",
                             choices=KIND_NAMES)
    bleurt: str | None = opt(None, "BLEURT-20 checkpoint folder (translation; needs the bleurt package)", metavar="DIR")
    comet: str | None = opt(None, "COMET checkpoint file (translation; needs unbabel-comet)", metavar="FILE")
    bootstrap: int = opt(1000, "bootstrap resamples for the 95% intervals")
    bootstrap_seed: int = opt(0, "seed of the bootstrap")
    dtype: str = opt("auto", "weights dtype", choices=DTYPES)
    trust_remote_code: bool = opt(False, "allow the model's own code from the Hub to run")
    progress: bool = opt(True, "show progress bars")


@dataclass
class SweepSpec:
    """A sweep: the paper's experiments as a grid of cells (method x task budget x general ratio x seed)."""

    name: str = opt("sweep", "name of the sweep (used in the report)")
    model: str | None = opt(None, "base model: a local dir or a Hub id")
    tokenizer: str | None = opt(None, "token counter for budgets (default: the model's tokenizer)")
    task: str | None = opt(None, "task training data (file or Hub id)")
    general: list[str] = opt([], "general data (files or Hub ids, pooled)")
    anchor: str | None = opt(None, "anchor text for the tell method")
    anchor_placement: str = opt("prefix", "where the anchor goes", choices=PLACEMENTS)
    eval: list[str] = opt([], "eval sets (built names or files), as for `tell eval --data`")
    eval_limit: int | None = opt(None, "items per eval set (all when omitted)", check=at_least(1))
    data_dir: str = opt("data", "where built eval sets live")
    metric: str | None = opt(None, "metric kind for eval files without meta.kind", choices=KIND_NAMES)
    methods: list[str] = opt(list(DEFAULT_METHODS), f"methods to run, of {list(METHOD_NAMES)}")
    task_tokens: list[int] = opt([], "task token budgets")
    ratios: list[float] = opt([], "general:task token ratios for tell (and its paired baselines)")
    seeds: list[int] = opt([42], "seeds (repeats): data subset, training and sampling")
    train: dict = opt({}, "overrides of `tell train` settings (e.g. learning_rate, micro_batch_size)")
    decoding: dict = opt({}, "overrides of `tell eval` settings (e.g. greedy, max_new_tokens, batch_size)")
    primary_metric: str | None = opt(None, "metric the report plots first (default: the first one of the first set)")
    paired_ratios: object = opt("all", "ratios at which the methods paired with tell (tell-no-anchor, general-only, "
                                       "sft-matched, tell-placebo, tell-random-anchor) run: all, or max (only the "
                                       "largest; a cheaper grid), or a mapping of method -> all | max")
    placebo_general: list[str] = opt([], "general data for tell-placebo: as many tokens as the general data but none "
                                         "of the task's skills (the control for 'more steps' vs 'transfer')")
    random_anchor: str | None = opt(None, "anchor of tell-random-anchor (default: drawn once per sweep from the "
                                          "tokenizer's vocabulary, as many tokens as the anchor; seeded)")
    anchor_in_budget: bool = opt(False, "count the anchor inside the task budget (tell 0.1's rule); by default "
                                        "tell and sft cells at one budget train the same task examples and the "
                                        "anchor's tokens are recorded beside them")
    general_eval: list[str] = opt([], "general-ability eval sets (role general: no anchor), evaluated in every cell "
                                      "and compared with the base model: what training made the model forget")
    task_eval: list[str] = opt([], "eval sets scored as the task's (role task: tell cells give them the anchor) "
                                   "whatever their data say, e.g. gsm8k when GSM8K is the task (paper A.4); as "
                                   "`tell eval --task-data`")
    lr_grid: object = opt(None, "learning-rate candidates: a list for every method, or a mapping of method -> list "
                                "(key 'default' for the rest). Each candidate is trained; the one kept per method, "
                                "task budget and ratio is chosen on the validation split (never the test sets) by "
                                "the rule in tell.experiments.results.LR_RULE")
    validation_task_examples: int = opt(32, "task examples held out of every budget for choosing learning rates "
                                            "(only with an lr_grid of more than one candidate)")
    validation_general_examples: int = opt(32, "general examples held out likewise")
    validation_seed: int = opt(0, "seed of the validation hold-out (one split for the whole sweep)")
    executor: dict = opt({}, "where cells run: {name: local|ray|slurm, workers, gpus_per_cell, cpus_per_cell, "
                             "ray_address, slurm: {partition, time_min, account, array, array_parallelism}} "
                             "(tell sweep's flags override it)")
    throughput: float | None = opt(None, "declared training throughput, tokens/s per cell, for the dry run's "
                                         "GPU-hours estimate when no cell has finished yet")
    efficiency_ratio: object = opt("all", "the general ratio at which the report reads token-efficiency, declared "
                                          "before running (or 'all' to show every ratio)")


@dataclass
class ProbeConfig:
    """`tell probe`: does the anchor move task inputs away from general inputs inside the model?"""

    def __post_init__(self) -> None:
        validate(self)

    model: str | None = opt(None, "base model: a local dir or a Hub id", metavar="PATH_OR_ID")
    adapter: str | None = opt(None, "a `tell train` run folder or a PEFT adapter folder", metavar="RUN_DIR")
    task: str | None = opt(None, "task records: a file, or a `tell prepare` folder (its task examples)",
                           metavar="FILE_OR_DIR")
    general: str | None = opt(None, "general records: a file, or a `tell prepare` folder (default: --task's "
                                    "folder when it is one)", metavar="FILE_OR_DIR")
    anchor: str | None = opt(None, "the anchor (default: the one in the manifest of --task or --adapter)", metavar="TEXT")
    anchor2: str | None = opt(None, "a second anchor to compare", metavar="TEXT")
    random_prefix: bool = opt(True, "also probe task inputs behind a random prefix as long as the anchor (seeded "
                                    "random vocabulary words, same token count, same place): the control that "
                                    "tells the anchor's separation from any prefix's (group task+random)")
    anchor_placement: str | None = opt(None, "where the anchor goes (default: as in the manifest, else prefix)",
                                       choices=PLACEMENTS)
    examples: int = opt(50, "examples per group (the paper: 50)", check=at_least(2))
    layers: str = opt("middle", "layer(s): middle (the paper's 16 of 32), all (a per-layer curve), or numbers 1..L",
                      check=LAYERS)
    pooling: str = opt("mean", "pool over the prompt tokens: mean, or the last token", choices=("mean", "last"))
    bootstrap: int = opt(200, "bootstrap resamples for the intervals (middle layer; 0 for none)", check=at_least(0))
    seed: int = opt(42, "seed of the example choice, the probe's folds, the bootstrap and t-SNE")
    out: str | None = opt(None, "output folder for probe.json and the plots", metavar="DIR",
                          check=OUT_FOLDER)
    dtype: str = opt("auto", "weights dtype", choices=DTYPES)
    trust_remote_code: bool = opt(False, "allow the model's own code from the Hub to run")


@dataclass
class AnchorConfig:
    """`tell anchor generate`: let the model write its own anchor (paper A.6), ranked by the probe."""

    def __post_init__(self) -> None:
        validate(self)

    model: str | None = opt(None, "the model that writes (and is probed)", metavar="PATH_OR_ID")
    adapter: str | None = opt(None, "optional adapter", metavar="RUN_DIR")
    task: str | None = opt(None, "task records (file)", metavar="FILE")
    general: str | None = opt(None, "general records (file) for the separation ranking", metavar="FILE")
    shots: int = opt(5, "task examples shown to the model")
    candidates: int = opt(8, "candidates sampled")
    temperature: float = opt(0.9, "sampling temperature for the candidates")
    max_new_tokens: int = opt(40, "tokens per candidate")
    top_k: int = opt(50, "top-k for the candidates")
    top_p: float = opt(0.95, "top-p for the candidates")
    repetition_penalty: float = opt(1.05, "repetition penalty for the candidates")
    min_words: int = opt(3, "shortest acceptable anchor, in words")
    max_words: int = opt(40, "longest acceptable anchor, in words")
    examples: int = opt(50, "examples per group for the ranking probe", check=at_least(2))
    layers: str = opt("middle", "probe layer(s)", check=LAYERS)
    rank_metric: str = opt("silhouette", "separation gain used to rank",
                           choices=("silhouette", "centroid_cosine_distance", "probe_accuracy"))
    pilot: int = opt(0, "also rank the top N by a short TELL training + eval (needs --general, --eval, "
                        "--task-tokens, --ratio)")
    eval: str | None = opt(None, "eval set for --pilot", metavar="NAME_OR_FILE")
    task_tokens: int | None = opt(None, "task budget for --pilot", metavar="N")
    ratio: float | None = opt(None, "general ratio for --pilot", metavar="R")
    seed: int = opt(42, "seed of the shown examples and the sampling")
    out: str | None = opt(None, "output folder: candidates.json and anchor.txt (the best)", metavar="DIR",
                          check=OUT_FOLDER)
    dtype: str = opt("auto", "weights dtype", choices=DTYPES)
    trust_remote_code: bool = opt(False, "allow the model's own code from the Hub to run")
