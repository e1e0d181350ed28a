"""`anchor generate`: the model writes candidate anchors for a task (paper A.6, "self-instruct anchor"),
which are cleaned and ranked by how much they separate task from general inputs inside the model.

An experiment rather than a probe: it samples, probes, and with `--pilot` runs short sweeps."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Callable, Sequence

from tell.config import to_dict
from tell.experiments.config import AnchorConfig
from tell.data.anchor import Anchor
from tell.data.formats import visible
from tell.data.loading import load_records
from tell.data.records import Record
from tell.errors import TellError
from tell.io import atomic_open, write_json

META_PROMPT = ("Here are examples of a task.\n\n{examples}\n\nWrite one short instruction, a single sentence, that "
               "tells someone what this task is. Reply with the instruction only.")


def meta_record(examples: Sequence[Record]) -> Record:
    shown = "\n\n".join(f"Input: {r.prompt}\nOutput: {r.response}" for r in examples)
    return Record(prompt=META_PROMPT.format(examples=shown), response="")


def clean(text: str, examples: Sequence[Record], min_words: int, max_words: int) -> tuple[str | None, str]:
    """(anchor, '') or (None, reason). Takes the first non-empty line, strips quotes and labels."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"^(instruction|anchor|answer)\s*[:：]\s*", "", line, flags=re.I).strip().strip("\"'“”‘’`").strip()
    words = [w for w in line.split() if visible(w)]  # a zero-width "word" shows nothing
    if not words:
        return None, "empty"
    if len(words) < min_words:
        return None, "too short"
    if len(words) > max_words:
        return None, "too long"
    norm = " ".join(line.lower().split())
    for r in examples:
        for part in (r.prompt, r.response):
            p = " ".join(part.lower().split())
            if norm in p or (len(p) > 20 and p in norm):
                return None, "copied from the examples"
    return line, ""


def rank(candidates: Sequence[str], gain: Callable[[str], float]) -> list[dict]:
    """Candidates (distinct) by their separation gain over no anchor, best first."""
    seen, table = set(), []
    for c in candidates:
        if c in seen:
            continue
        seen.add(c)
        table.append({"anchor": c, "gain": float(gain(c))})
    return sorted(table, key=lambda r: -r["gain"])


def sample_candidates(cfg: AnchorConfig, model, tok, shown: Sequence[Record]) -> tuple[list[str], list[dict]]:
    """(clean candidates, rejected texts with the reason), sampled with the config's decoding settings."""
    from tell.eval.generate import generate_batch
    from tell.prompting import prompt_ids

    ids = prompt_ids(tok, meta_record(shown))
    raw = []
    for i in range(cfg.candidates):
        raw += generate_batch(model, tok, [ids], max_new_tokens=cfg.max_new_tokens, greedy=False,
                              temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                              repetition_penalty=cfg.repetition_penalty, seed=cfg.seed + i)
    kept, rejected = [], []
    for text in raw:
        c, why = clean(text, shown, cfg.min_words, cfg.max_words)
        (kept.append(c) if c else rejected.append({"text": text, "reason": why}))
    return kept, rejected


def generate_anchor(cfg: AnchorConfig) -> dict:
    from tell.models import load_for_inference
    from tell.probe.capture import embed, resolve_layers
    from tell.probe.separation import separation

    if not (cfg.model and cfg.task and cfg.general and cfg.out):
        raise TellError("expected --model, --task, --general and --out")
    task = load_records(cfg.task, source="task", progress=False).records
    general = load_records(cfg.general, source="general", progress=False).records
    rng = random.Random(cfg.seed)
    shown = rng.sample(task, min(cfg.shots, len(task)))
    model, tok = load_for_inference(cfg.model, cfg.adapter, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    kept, rejected = sample_candidates(cfg, model, tok, shown)

    layers = resolve_layers(model, cfg.layers)
    k = layers[0]
    n = min(cfg.examples, len(task), len(general))  # equal groups, as `tell probe` draws them (chance stays 0.5)
    probe_task = random.Random(f"{cfg.seed}:task").sample(task, n)
    probe_general = random.Random(f"{cfg.seed}:general").sample(general, n)
    g_vec = embed(model, tok, probe_general, [k])[k].numpy()
    base = separation(embed(model, tok, probe_task, [k])[k].numpy(), g_vec, bootstrap=0, seed=cfg.seed)
    base_v = base[cfg.rank_metric]["value"]

    def gain(anchor: str) -> float:
        a = Anchor(anchor)
        vec = embed(model, tok, [a.apply(r) for r in probe_task], [k])[k].numpy()
        return separation(vec, g_vec, bootstrap=0, seed=cfg.seed)[cfg.rank_metric]["value"] - base_v

    table = rank(kept, gain)
    if cfg.pilot and table:
        table = pilot(cfg, table)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"kind": "tell-anchor-candidates", "settings": to_dict(cfg), "layer": k, "metric": cfg.rank_metric,
           "no_anchor_separation": base_v, "ranked": table, "rejected": rejected,
           "shown_examples": [r.uid() for r in shown],
           "probe_groups": {"task": len(probe_task), "general": len(probe_general)}}
    write_json(out / "candidates.json", doc)
    if not table:  # the record is written; an earlier run's anchor.txt would pass for this run's choice
        (out / "anchor.txt").unlink(missing_ok=True)
        reasons = {}
        for r in rejected:
            reasons[r.get("reason", "?")] = reasons.get(r.get("reason", "?"), 0) + 1
        raise TellError(f"no candidate was kept: {len(rejected)} rejected ({reasons}); see candidates.json, and "
                        "sample more (--candidates) or widen --min-words / --max-words", file=str(out))
    with atomic_open(out / "anchor.txt") as f:
        f.write(table[0]["anchor"] + "\n")
    return doc


def pilot(cfg: AnchorConfig, table: list[dict]) -> list[dict]:
    """Re-rank the top `cfg.pilot` candidates by a short TELL run + eval, through the sweep machinery."""
    from tell.experiments.config import SweepSpec
    from tell.experiments.sweep import Sweep

    if not (cfg.eval and cfg.task_tokens and cfg.ratio is not None):
        raise TellError("--pilot needs --eval, --task-tokens and --ratio")
    for i, row in enumerate(table[:cfg.pilot]):
        spec = SweepSpec(name=f"pilot {i}", model=cfg.model, task=cfg.task, general=[cfg.general], anchor=row["anchor"],
                         eval=[cfg.eval], methods=["tell"], task_tokens=[cfg.task_tokens], ratios=[cfg.ratio],
                         seeds=[cfg.seed], decoding={"greedy": True})
        rows = Sweep(spec, Path(cfg.out) / "pilot" / str(i)).run(log=lambda *_: None)
        first = rows[0] if rows else None
        row["pilot"] = {"metric": first["metric"], "value": first["value"]} if first else None
    top = sorted(table[:cfg.pilot], key=lambda r: -((r.get("pilot") or {}).get("value") or -1e9))
    return top + table[cfg.pilot:]
