"""`eval`: a base model (+ adapter) on eval sets -> predictions.jsonl + metrics.json (with 95% CIs).

Resumable: `eval_config.json` fixes what is computed; predictions are appended a whole batch at a time,
so a rerun with the same settings skips finished items (a torn last line is dropped) whose row was made by the
same adapter, data file, item, decoding and anchor (`made_by`); anything else is redone.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import random
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from tell import provenance
from tell.artifacts import TELL_JSON, EvalDir, RunDir, adapter_identity, read_json
from tell.config import to_dict
from tell.eval.config import EvalConfig
from tell.data.anchor import Anchor
from tell.data.loading import load_records
from tell.data.records import Record
from tell.errors import TellError, template_errors
from tell.eval.kinds import KIND_NAMES, KINDS, check_items, kind
from tell.eval.store import PredictionStore
from tell.io import not_a_file, remove_stale_tmp, sha256_file, write_json
from tell.prompting import prompt_ids, prompt_text, use_template


@dataclass
class EvalSet:
    name: str
    path: Path
    records: list[Record]
    kind: str
    role: str               # task sets get the anchor; general-ability sets do not
    train_path: Path | None  # where k-shot examples come from


def _file_set(spec: str, cfg: EvalConfig) -> EvalSet:
    recs = load_records(spec, source="task", progress=False).records
    first: dict = {}  # each record is scored as its own meta.kind (else --metric); a file holds one kind
    for r in recs:
        first.setdefault(r.meta.get("kind") or cfg.metric, r)
    if len(first) > 1:
        (k0, r0), (k1, r1) = list(first.items())[:2]
        say = lambda k: f"of kind {k!r}" if k else "without meta.kind"  # noqa: E731
        raise TellError(f"row {r1.row} is {say(k1)} but row {r0.row} {say(k0)}; expected one kind per eval file "
                        "(split it, one file per kind)", file=spec, field="meta.kind")
    name = next(iter(first))
    if name is None:
        raise TellError(f"the records have no meta.kind; give --metric one of {list(KIND_NAMES)}", file=spec)
    if name not in KINDS:
        raise TellError(f"unknown kind {name!r} (row {recs[0].row}); expected one of {list(KIND_NAMES)}", file=spec,
                        field="meta.kind")
    role = recs[0].meta.get("role") or kind(name).role
    check_items(name, recs)
    return EvalSet(spec, Path(spec), recs, name, role, None)


def resolve_set(spec: str, cfg: EvalConfig) -> list[EvalSet]:
    """A built set's name (built on first use into `data_dir`) or a file."""
    from tell.data.builders import BUILDERS, DATASET_MANIFEST, build, not_built

    name, _, sub = spec.partition(":")
    if Path(spec).is_file() or name not in BUILDERS:
        if Path(spec).is_dir():
            raise TellError(f"is a folder; expected an eval file (.jsonl, .json, .parquet, .csv) or one of "
                            f"{sorted(BUILDERS)}", file=spec)
        if not Path(spec).is_file() and (hint := not_built(spec)):
            raise TellError(f"no such file; {hint}", file=spec)
        if os.path.lexists(spec) and not Path(spec).is_file():
            raise TellError(f"{not_a_file(Path(spec))}; expected an eval file", file=spec)
        if not Path(spec).is_file():
            raise TellError(f"unknown eval set '{spec}'; expected a file or one of {sorted(BUILDERS)} "
                            "(is-en-news:en-is, agieval:SUBTASK)")
        return [_file_set(spec, cfg)]
    root = Path(cfg.data_dir) / name
    if not (root / DATASET_MANIFEST).is_file():
        print(f"building data set {name} into {cfg.data_dir}/ (tell data build {name})")
        build(name, cfg.data_dir)
    if name in ("is-en-news", "agieval") and not sub:
        if name == "is-en-news":
            raise TellError("is-en-news needs a direction: is-en-news:en-is or is-en-news:is-en")
        subs = sorted(p.name for p in root.iterdir() if (p / "test.jsonl").is_file())
    else:
        subs = [sub] if sub else [""]
    sets = []
    for s in subs:
        folder = root / s if s else root
        test = folder / "test.jsonl"
        if not test.is_file():
            raise TellError(f"no test split for '{name}:{s}'", file=str(test))
        train = folder / "train.jsonl"  # a built set is read and checked as any eval file is (one known kind)
        sets.append(replace(_file_set(str(test), cfg), name=f"{name}:{s}" if s else name,
                            train_path=train if train.is_file() else None))
    return sets


def resolve_anchor(cfg: EvalConfig) -> Anchor | None:
    """--no-anchor > --anchor > the anchor the run was trained with > none."""
    if cfg.no_anchor:
        return None
    recorded = _recorded_anchor(cfg.adapter, warn=not cfg.anchor) if cfg.adapter else None
    if cfg.anchor is not None:  # '' is refused by Anchor, never read as "the recorded anchor"
        placement = cfg.anchor_placement or (recorded.placement if recorded else "prefix")
        return Anchor(cfg.anchor, placement, recorded.separator if recorded else "\n")
    return recorded


def _recorded_anchor(adapter: str, warn: bool) -> Anchor | None:
    """The anchor a `tell train` run folder or a `tell export` folder (tell.json) records. An adapter that
    records nothing either way (a PEFT adapter from elsewhere) is evaluated without one, with a warning."""
    run = RunDir(adapter)
    if run.mixture_manifest_path.is_file():
        return run.anchor()
    export = Path(adapter) / TELL_JSON
    if export.is_file():
        doc = read_json(export, "the export's own record (tell export writes it)",
                        fix="export the run again with tell export")
        if not isinstance(doc, dict):
            raise TellError(f"holds a JSON {type(doc).__name__}; expected an object (the export's own record): the "
                            "file is damaged, export the run again with tell export", file=str(export))
        return Anchor.from_json(doc.get("anchor"))
    if warn:
        print(f"tell: warning: {adapter} records no anchor (not a tell run or export): task sets are evaluated "
              "without one; give --anchor if it was trained with one", file=sys.stderr)
    return None


def with_shots(rec: Record, shots: list[Record]) -> Record:
    """k-shot examples as earlier chat turns, so the chat template (or plain template) frames them."""
    history = []
    for s in shots:
        history += [{"role": "user", "content": s.prompt}, {"role": "assistant", "content": s.response}]
    return replace(rec, history=history + list(rec.history))


def score(kind_name: str, output: str, rec: Record) -> dict:
    scorer = kind(kind_name).score
    return scorer(output, rec) if scorer else {}


def set_metrics(kind_name: str, rows: list[dict], cfg: EvalConfig) -> dict:
    extra = {"bleurt": cfg.bleurt, "comet": cfg.comet} if kind_name == "translation" else {}
    return kind(kind_name).aggregate(rows, cfg.bootstrap_seed, cfg.bootstrap, **extra)


# What other commands write (a run folder, a mixture, a sweep): an eval folder holding one is refused.
OTHER_ARTIFACTS = ("config.json", "train_log.jsonl", "adapter", "manifest.json", "mixture.jsonl", "results.jsonl",
                   "cells")


def _claim_folder(cfg: EvalConfig, folder: EvalDir) -> dict:
    """The settings that fix what is computed; a folder holding another eval's settings is refused."""
    settings = {k: v for k, v in to_dict(cfg).items() if k not in ("progress", "out")}
    others = [n for n in OTHER_ARTIFACTS if (folder.path / n).exists()]
    if others:  # a run, mixture or sweep folder: its metrics.json (and more) would be replaced
        raise TellError(f"the folder holds another command's output ({', '.join(others)}); choose a new --out",
                        file=str(folder.path), field="out")
    if folder.config_path.is_file():
        from tell.artifacts import read_json

        old = read_json(folder.config_path, "a `tell eval` folder's settings")
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise TellError(f"the folder holds an eval with other settings {diff}; choose a new --out",
                            file=str(folder.path))
    return settings


def set_inputs(es: EvalSet, cfg: EvalConfig, anchor: Anchor | None) -> tuple[list[Record], list[Record], int]:
    """(items, their model inputs: anchor where the set is the task's, k-shot turns; k)."""
    items = es.records[:cfg.limit] if cfg.limit else es.records
    k = cfg.shots if cfg.shots is not None else kind(es.kind).shots
    train = load_records(str(es.train_path), source="task", progress=False).records if k and es.train_path else []
    if k and not train:
        raise TellError(f"{k}-shot prompting needs a train split for {es.name}")
    inputs = []
    # fixed: one pair (k shots) for every item, as the paper's 2-shot translation eval; per-item: one draw per item
    fixed = random.Random(f"{cfg.shot_seed}:{es.name}").sample(train, k) if k and cfg.shot_mode == "fixed" else None
    for j, rec in enumerate(items):
        shots = fixed if fixed is not None else random.Random(f"{cfg.shot_seed}:{es.name}:{j}").sample(train, k) \
            if k else []
        if anchor:
            rec, shots = anchor.apply(rec), [anchor.apply(s) for s in shots]
        inputs.append(with_shots(rec, shots))
    return items, inputs, k


# Room for an answer longer than the longest reference (the model's wording differs), as a factor and a constant.
LENGTH_MARGIN = (1.25, 16)


def default_max_new_tokens(kind_name: str, items: list[Record], tokenizer) -> int:
    """Tokens to generate when --max-new-tokens is not given: the kind's default, or more where the set's longest
    reference answer (the record's response, as the model's tokenizer counts it) x 1.25 + 16 needs more, so that a
    model that answers like the references is never cut off (IS-EN-NEWS references run past 1,024 tokens)."""
    longest = max((len(tokenizer(r.response, add_special_tokens=False)["input_ids"]) for r in items), default=0)
    factor, extra = LENGTH_MARGIN
    return max(kind(kind_name).max_new_tokens, int(longest * factor) + extra)


def generation_length(es: EvalSet, cfg: EvalConfig, items: list[Record], ids: list[list[int]], tokenizer,
                      context: int | None) -> int:
    """--max-new-tokens, or the set's default (`default_max_new_tokens`) cut to what the model's context leaves
    after the set's longest prompt (said once on stderr). An explicit value that does not fit, or a prompt that
    fills the context alone, is refused: past its context a model with learned positions fails, one with rotary
    positions generates from positions it never saw."""
    longest = max(map(len, ids), default=0)
    room = context - longest if context else None
    where = f"the model's context of {context:,} tokens after the longest prompt of {es.name} ({longest:,} tokens)"
    if room is not None and room < 1:
        raise TellError(f"no room to generate in {where}; expected prompts shorter than the context (a shorter set, "
                        "fewer shots, or a model with a longer context)", field="max_new_tokens")
    if cfg.max_new_tokens:
        if room is not None and cfg.max_new_tokens > room:
            raise TellError(f"{cfg.max_new_tokens:,} new tokens do not fit in {where}; expected at most {room:,}",
                            field="max_new_tokens")
        return cfg.max_new_tokens
    n = default_max_new_tokens(es.kind, items, tokenizer)
    if room is not None and n > room:
        print(f"tell: note: {es.name}: generating at most {room:,} new tokens (the default {n:,} cut to what is left "
              f"in {where})", file=sys.stderr)
        return room
    return n


@dataclass
class SetPrompts:
    """What an eval set's generation is made from, computed before anything is written (a set whose prompts leave
    no room to generate is refused then)."""
    items: list[Record]
    inputs: list[Record]  # the model inputs: anchor where the set is the task's, k-shot turns
    ids: list[list[int]]
    k: int
    anchor: Anchor | None
    max_new_tokens: int


def set_prompts(es: EvalSet, cfg: EvalConfig, model, tokenizer, anchor: Anchor | None) -> SetPrompts:
    from tell.models import context_length

    use_anchor = anchor if es.role == "task" else None
    items, inputs, k = set_inputs(es, cfg, use_anchor)
    with template_errors(cfg.model):
        ids = [prompt_ids(tokenizer, r) for r in inputs]
    n = generation_length(es, cfg, items, ids, tokenizer, context_length(model.config))
    return SetPrompts(items, inputs, ids, k, use_anchor, n)


def prediction_row(es: EvalSet, rec: Record, text: str, shown: str) -> dict:
    row = {"set": es.name, "id": rec.uid(), "input": shown, "output": text,
           "reference": rec.meta.get("reference", rec.response), "scores": score(es.kind, text, rec)}
    if es.kind == "translation":
        row["source_text"] = rec.meta.get("source_text", "")
    return row


def _made_by(cfg: EvalConfig, items: list[Record], adapter_sha256: str | None, data_sha256: str, decoding: dict,
             anchor: Anchor | None, k: int, adapter_id: str | None = None, base_id: str | None = None) -> list[dict]:
    """What produces each item's prediction (`PredictionStore`): the adapter and data file checksums, the item's
    content hash, and a digest of the decoding settings, the anchor, the shots and the eval's settings. The
    adapter counts by every file of its folder (`adapter_identity`: adapter_config.json's alpha or target modules,
    weights saved under another name, its tokenizer), not only adapter_model.safetensors; the base model by
    `models.base_identity` (a folder whose weights were replaced in place is another model)."""
    # greedy decoding does not read the sampling seed: the same model and items give the same rows at any seed
    ignored = ("progress", "out") + (("sample_seed",) if cfg.greedy else ())
    settings = {n: v for n, v in to_dict(cfg).items() if n not in ignored}
    setup = hashlib.sha256(json.dumps({"decoding": decoding, "anchor": anchor.to_json() if anchor else None,
                                       "shots": k, "settings": settings, "base": base_id}, sort_keys=True, default=str).encode())
    return [{"adapter_sha256": adapter_sha256, "adapter_folder_sha256": adapter_id, "data_sha256": data_sha256,
             "item": rec.key, "setup": setup.hexdigest()[:16]} for rec in items]


def evaluate_set(es: EvalSet, prompts: SetPrompts, cfg: EvalConfig, model, tokenizer, store: PredictionStore,
                 adapter_sha256: str | None = None, adapter_id: str | None = None, base_id: str | None = None) -> dict:
    """Generate what is not saved yet (or was saved from another adapter, data file or setting), then score the
    whole set."""
    from tell.eval.generate import generate_all

    items, inputs, ids, k, use_anchor = prompts.items, prompts.inputs, prompts.ids, prompts.k, prompts.anchor
    decoding = dict(max_new_tokens=prompts.max_new_tokens, greedy=cfg.greedy,
                    temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                    repetition_penalty=cfg.repetition_penalty)
    data_sha256 = sha256_file(es.path)
    made_by = _made_by(cfg, items, adapter_sha256, data_sha256, decoding, use_anchor, k, adapter_id, base_id)
    done = {j for j, rec in enumerate(items) if store.has(es.name, rec.uid(), made_by[j])}

    def save(idx: list[int], outs: list[str]) -> None:
        store.add([prediction_row(es, items[j], text, prompt_text(tokenizer, inputs[j])) | {"made_by": made_by[j]}
                   for j, text in zip(idx, outs) if j not in done])

    with tqdm(total=len(items), initial=len(done), desc=f"eval {es.name}", unit=" ex",
              disable=None if cfg.progress else True) as bar:
        generate_all(model, tokenizer, ids, batch_size=cfg.batch_size, done=done, on_batch=save,
                     progress=bar.update, seed=cfg.sample_seed, **decoding)
    rows = store.rows(es.name, [rec.uid() for rec in items])
    return {"kind": es.kind, "role": es.role, "items": len(rows), "shots": k, "shot_mode": cfg.shot_mode if k else None,
            "anchor": use_anchor.to_json() if use_anchor else None,
            "data": str(es.path), "data_sha256": data_sha256,
            "decoding": decoding, "metrics": set_metrics(es.kind, rows, cfg)}


def subtask_averages(sets: list[EvalSet], cfg: EvalConfig, store: PredictionStore) -> dict:
    """{"agieval": ...} when several AGIEval sub-tasks ran: the mean of the sub-tasks' accuracies (each sub-task
    counts once, as AGIEval reports its average), with a bootstrap interval that resamples items within each
    sub-task."""
    from tell.eval.metrics import macro_mean

    subs = [es for es in sets if es.name.startswith("agieval:")]
    if len(subs) < 2:
        return {}
    values = [[r["scores"]["correct"] for r in store.rows(es.name, [rec.uid() for rec in
                                                                    (es.records[:cfg.limit] if cfg.limit else es.records)])]
              for es in subs]
    return {"agieval": {"sets": [es.name for es in subs], "items": sum(map(len, values)), "role": subs[0].role,
                        "average": "mean over sub-tasks of each sub-task's accuracy",
                        "metrics": {"accuracy": macro_mean(values, cfg.bootstrap_seed, cfg.bootstrap)}}}


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def all_sets(cfg: EvalConfig) -> list[EvalSet]:
    """--data, --general-data and --task-data resolved; a set named twice, or names that hold no set, refused."""
    sets = [s for spec in cfg.data for s in resolve_set(spec, cfg)]
    sets += [replace(s, role="general") for spec in cfg.general_data for s in resolve_set(spec, cfg)]
    sets += [replace(s, role="task") for spec in cfg.task_data for s in resolve_set(spec, cfg)]
    twice = sorted({s.name for s in sets if [t.name for t in sets].count(s.name) > 1})
    if twice:  # one set under two roles: its rows would be one set's, the other role's result lost
        raise TellError(f"{twice} given more than once (--data, --general-data, --task-data); expected each set once",
                        field="data")
    if (cfg.data or cfg.general_data or cfg.task_data) and not sets:
        raise TellError("the eval sets named hold no set to evaluate (a built set without sub-tasks?)", field="data")
    return sets



def _open_store(folder: EvalDir, settings: dict, fresh: bool) -> PredictionStore:
    """The folder's predictions, resumed. metrics.json is written last and stands only beside the rows and
    settings it was computed from: it goes as soon as either changes (at once when the settings differ, or an
    lm-eval run will rewrite it), so a rerun that fails before changing anything keeps the last good result.
    (`_claim_folder` has refused a folder holding other settings.)"""
    same = folder.config_path.is_file() and not fresh
    drop = lambda: folder.metrics_path.unlink(missing_ok=True)  # noqa: E731
    if not same:
        drop()
        folder.lm_eval_samples_path.unlink(missing_ok=True)  # an earlier eval's, until this one writes its own
    write_json(folder.config_path, settings)
    store = PredictionStore(folder.predictions_path, before_change=drop)
    store.resume()
    if store.unreadable:
        print(f"tell: warning: {folder.predictions_path}: {store.unreadable} saved row(s) are not predictions tell "
              "writes (the file was edited or damaged); their items are predicted again", file=sys.stderr)
    return store

def evaluate(cfg: EvalConfig) -> dict:
    from tell.models import (base_identity, gguf_provenance, inference_tokenizer, library_progress,
                             load_for_inference, resolve_adapter)

    lm_eval = cfg.lm_eval or cfg.lm_eval_general or cfg.lm_eval_task
    if not cfg.model or not (cfg.data or cfg.general_data or cfg.task_data or lm_eval) or not cfg.out:
        raise TellError("expected --model, at least one --data (or --general-data, --task-data, --lm-eval) and --out")
    library_progress(cfg.progress)
    folder = EvalDir(cfg.out)
    settings = _claim_folder(cfg, folder)
    if cfg.no_anchor and cfg.anchor:
        raise TellError("--anchor and --no-anchor contradict each other; give one", field="anchor")
    sets = all_sets(cfg)
    anchor = resolve_anchor(cfg)
    if lm_eval:  # what is wrong with the harness tasks is refused before any model is loaded or file written
        from tell.eval import harness
        lm_plan = harness.plan(harness.requested(cfg), cfg.lm_eval_include, anchor)
    # resolve_adapter refuses weight bytes altered since `tell train` saved them, before anything is written
    adapter_dir = resolve_adapter(cfg.adapter)[0] if cfg.adapter else None
    adapter_file = adapter_dir / "adapter_model.safetensors" if adapter_dir else None
    adapter_sha256 = sha256_file(adapter_file) if adapter_file and adapter_file.is_file() else None
    adapter_id = adapter_identity(adapter_dir) if adapter_dir else None
    # A model that cannot be loaded is refused before anything is written.
    if sets:
        model, tokenizer = load_for_inference(cfg.model, cfg.adapter, dtype=cfg.dtype,
                                              trust_remote_code=cfg.trust_remote_code)
        use_template(tokenizer, cfg.template)
        prompts = [set_prompts(es, cfg, model, tokenizer, anchor) for es in sets]
    else:  # the harness loads the model itself, later: its folder and tokenizer are checked now
        model, tokenizer = None, inference_tokenizer(cfg.model, adapter_dir, cfg.trust_remote_code)
        use_template(tokenizer, cfg.template)
    folder.path.mkdir(parents=True, exist_ok=True)
    store = _open_store(folder, settings, fresh=bool(lm_eval))
    summary, averages = {}, {}
    if sets:
        base_id = base_identity(cfg.model)
        summary = {es.name: evaluate_set(es, p, cfg, model, tokenizer, store, adapter_sha256, adapter_id, base_id)
                   for es, p in zip(sets, prompts)}
        averages = subtask_averages(sets, cfg, store)
        del model  # the harness loads its own copy: not two in memory at once
        _free_memory()
    store.finish()
    lm_results = harness.run(cfg, lm_plan, tokenizer, adapter_dir=adapter_dir, anchor=anchor,
                             folder=folder) if lm_eval else None
    result = {"kind": "tell-eval", "model": cfg.model, "adapter": str(cfg.adapter) if cfg.adapter else None,
              "adapter_sha256": adapter_sha256, "base_gguf": gguf_provenance(cfg.model),
              "sets": summary, **({"averages": averages} if averages else {}),
              **({"lm_eval": lm_results} if lm_results else {}),
              "seeds": {"sampling": cfg.sample_seed, "shots": cfg.shot_seed,
                                         "bootstrap": cfg.bootstrap_seed},
              "config": settings, "packages": provenance.package_versions(),
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    write_json(folder.metrics_path, result)
    remove_stale_tmp(folder.path, every_file=True)  # left by earlier, killed parts of the eval
    return result
