"""`eval`: a base model (+ adapter) on eval sets -> predictions.jsonl + metrics.json (with 95% CIs).

Resumable: `eval_config.json` fixes what is computed; predictions are appended a whole batch at a time,
so a rerun with the same settings skips finished items (a torn last line is dropped).
"""

from __future__ import annotations

import datetime
import json
import os
import random
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from tell import provenance
from tell.config import EvalConfig, to_dict
from tell.data.anchor import Anchor
from tell.data.loading import load_records
from tell.data.records import Record
from tell.errors import TellError
from tell.eval import metrics as M
from tell.io import atomic_open, sha256_file, write_json
from tell.prompting import prompt_ids, prompt_text

DEFAULT_NEW_TOKENS = {"json": 512, "translation": 1024, "gsm8k": 384, "mcq": 32, "cloze": 64, "format": 64}
KINDS = tuple(DEFAULT_NEW_TOKENS)


@dataclass
class EvalSet:
    name: str
    path: Path
    records: list[Record]
    kind: str
    role: str               # task sets get the anchor; general-ability sets do not
    train_path: Path | None  # where k-shot examples come from


def resolve_set(spec: str, cfg: EvalConfig) -> list[EvalSet]:
    """A built set's name (built on first use into `data_dir`) or a file."""
    from tell.data.builders import BUILDERS, build

    name, _, sub = spec.partition(":")
    if Path(spec).is_file() or name not in BUILDERS:
        if not Path(spec).is_file():
            raise TellError(f"unknown eval set '{spec}'; expected a file or one of {sorted(BUILDERS)} "
                            "(is-en-news:en-is, agieval:SUBTASK)")
        recs = load_records(spec, source="task", progress=False).records
        kind = recs[0].meta.get("kind") or cfg.metric
        if kind not in KINDS:
            raise TellError(f"the records have no meta.kind; give --metric one of {list(KINDS)}", file=spec)
        # Without meta.role, the paper's split: JSON and translation are task sets, the rest general ability.
        role = recs[0].meta.get("role") or ("task" if kind in ("json", "translation", "format") else "general")
        return [EvalSet(spec, Path(spec), recs, kind, role, None)]
    root = Path(cfg.data_dir) / name
    if not (root / "manifest.json").is_file():
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
        recs = load_records(str(test), source="task", progress=False).records
        train = folder / "train.jsonl"
        sets.append(EvalSet(f"{name}:{s}" if s else name, test, recs, recs[0].meta["kind"], recs[0].meta["role"],
                            train if train.is_file() else None))
    return sets


def resolve_anchor(cfg: EvalConfig) -> Anchor | None:
    """--no-anchor > --anchor > the anchor of the run's mixture manifest > none."""
    if cfg.no_anchor:
        return None
    recorded = None
    if cfg.adapter and (Path(cfg.adapter) / "mixture_manifest.json").is_file():
        recorded = json.loads((Path(cfg.adapter) / "mixture_manifest.json").read_text()).get("anchor")
    if cfg.anchor:
        placement = cfg.anchor_placement or (recorded or {}).get("placement", "prefix")
        return Anchor(cfg.anchor, placement, (recorded or {}).get("separator", "\n"))
    if recorded:
        return Anchor(recorded["text"], recorded["placement"], recorded["separator"])
    return None


def with_shots(rec: Record, shots: list[Record]) -> Record:
    """k-shot examples as earlier chat turns, so the chat template (or plain template) frames them."""
    history = []
    for s in shots:
        history += [{"role": "user", "content": s.prompt}, {"role": "assistant", "content": s.response}]
    return replace(rec, history=history + list(rec.history))


def score(kind: str, output: str, rec: Record) -> dict:
    m = rec.meta
    if kind == "json":
        return M.score_json(output, m.get("label", rec.response.strip()))
    if kind == "gsm8k":
        return M.score_gsm8k(output, m.get("answer") or M.gsm8k_number(rec.response))
    if kind == "mcq":
        return M.score_mcq(output, m.get("label", rec.response.strip()), m.get("choices") or "ABCDE")
    if kind == "cloze":
        return M.score_cloze(output, m.get("answer", rec.response))
    if kind == "format":
        if "format_regex" not in m:
            raise TellError(f"format items need meta.format_regex ({rec.origin}:{rec.row})")
        return M.score_format(output, m["format_regex"], m.get("answer", rec.response))
    return {}


def set_metrics(kind: str, rows: list[dict], cfg: EvalConfig) -> dict:
    seed, B = cfg.bootstrap_seed, cfg.bootstrap
    if kind == "json":
        return M.json_metrics([r["scores"] for r in rows], seed, B)
    if kind == "translation":
        return M.translation_metrics([r["output"] for r in rows], [r["reference"] for r in rows], seed, B,
                                     bleurt=cfg.bleurt, comet=cfg.comet, sources=[r.get("source_text", "") for r in rows])
    out = {}
    if kind == "format":
        out["format_adherence"] = M.mean_metric([r["scores"]["format"] for r in rows], seed, B)
    out["accuracy"] = M.mean_metric([r["scores"]["correct"] for r in rows], seed, B)
    return out


def _read_rows(path: Path) -> list[dict]:
    """The saved predictions, first copy of each item, up to a torn last line from a killed run."""
    if not path.is_file():
        return []
    rows, seen = [], set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break  # a torn last line from a killed run: everything after it is redone
        if (row["set"], row["id"]) not in seen:
            seen.add((row["set"], row["id"]))
            rows.append(row)
    return rows


def _resume_rows(path: Path) -> list[dict]:
    """Read the saved predictions and rewrite the file without a torn tail, so appends start clean."""
    rows = _read_rows(path)
    if path.is_file():
        with atomic_open(path) as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return rows


def evaluate(cfg: EvalConfig) -> dict:
    import torch

    from tell.train.export import resolve_adapter
    from tell.train.model import load_model, load_tokenizer

    if not cfg.model or not cfg.data or not cfg.out:
        raise TellError("expected --model, at least one --data and --out")
    out = Path(cfg.out)
    settings = {k: v for k, v in to_dict(cfg).items() if k not in ("progress", "out")}
    if (out / "eval_config.json").is_file():
        old = json.loads((out / "eval_config.json").read_text())
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise TellError(f"the folder holds an eval with other settings {diff}; choose a new --out", file=str(out))
    sets = [s for spec in cfg.data for s in resolve_set(spec, cfg)]
    anchor = resolve_anchor(cfg)
    adapter_dir = resolve_adapter(cfg.adapter)[0] if cfg.adapter else None
    tokenizer = load_tokenizer(str(adapter_dir or cfg.model), cfg.trust_remote_code)
    model = load_model(cfg.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    if adapter_dir:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    if torch.cuda.is_available():
        model.to("cuda")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "eval_config.json", settings)

    pred_path = out / "predictions.jsonl"
    done_rows = _resume_rows(pred_path)
    done = {(r["set"], r["id"]) for r in done_rows}
    summary = {}
    for es in sets:
        items = es.records[:cfg.limit] if cfg.limit else es.records
        k = cfg.shots if cfg.shots is not None else (2 if es.kind == "translation" else 0)
        train = load_records(str(es.train_path), source="task", progress=False).records if k and es.train_path else []
        if k and not train:
            raise TellError(f"{k}-shot prompting needs a train split for {es.name}")
        use_anchor = anchor if es.role == "task" else None
        inputs = []
        for j, rec in enumerate(items):
            shots = random.Random(f"{cfg.shot_seed}:{es.name}:{j}").sample(train, k) if k else []
            if use_anchor:
                rec, shots = use_anchor.apply(rec), [use_anchor.apply(s) for s in shots]
            inputs.append(with_shots(rec, shots))
        ids = [prompt_ids(tokenizer, r) for r in inputs]
        set_done = {j for j, rec in enumerate(items) if (es.name, rec.uid()) in done}
        decoding = dict(max_new_tokens=cfg.max_new_tokens or DEFAULT_NEW_TOKENS[es.kind], greedy=cfg.greedy,
                        temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                        repetition_penalty=cfg.repetition_penalty)

        def save(idx: list[int], outs: list[str]) -> None:
            with open(pred_path, "a", encoding="utf-8") as f:
                for j, text in zip(idx, outs):
                    if j in set_done:  # a batch that was half written before a crash: keep what was saved
                        continue
                    rec = items[j]
                    row = {"set": es.name, "id": rec.uid(), "input": prompt_text(tokenizer, inputs[j]),
                           "output": text, "reference": rec.meta.get("reference", rec.response),
                           "scores": score(es.kind, text, rec)}
                    if es.kind == "translation":
                        row["source_text"] = rec.meta.get("source_text", "")
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())

        from tell.eval.generate import generate_all
        with tqdm(total=len(items), initial=len(set_done), desc=f"eval {es.name}", unit=" ex",
                  disable=None if cfg.progress else True) as bar:
            generate_all(model, tokenizer, ids, batch_size=cfg.batch_size, done=set_done, on_batch=save,
                         progress=bar.update, seed=cfg.sample_seed, **decoding)
        by_id = {r["id"]: r for r in _read_rows(pred_path) if r["set"] == es.name}
        rows = [by_id[rec.uid()] for rec in items]
        summary[es.name] = {"kind": es.kind, "role": es.role, "items": len(rows), "shots": k,
                            "anchor": use_anchor.to_json() if use_anchor else None,
                            "data": str(es.path), "data_sha256": sha256_file(es.path),
                            "decoding": decoding, "metrics": set_metrics(es.kind, rows, cfg)}
    result = {"kind": "tell-eval", "model": cfg.model, "adapter": str(cfg.adapter) if cfg.adapter else None,
              "adapter_sha256": sha256_file(adapter_dir / "adapter_model.safetensors")
              if adapter_dir and (adapter_dir / "adapter_model.safetensors").is_file() else None,
              "sets": summary, "seeds": {"sampling": cfg.sample_seed, "shots": cfg.shot_seed,
                                         "bootstrap": cfg.bootstrap_seed},
              "config": settings, "packages": provenance.package_versions(),
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    write_json(out / "metrics.json", result)
    return result
