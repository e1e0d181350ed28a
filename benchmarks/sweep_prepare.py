"""python benchmarks/sweep_prepare.py [--task-tokens 10000] [--ratios 1 3 10 30 100 300 1000]

The prepare time of a sweep's cells (what `tell sweep --dry-run` does: every cell's mixture, nothing trained),
without and with the shared token-count cache (`tell.data.tokens.CachedCounter`), side by side in one run:

  uncached  every cell tokenizes the examples its budgets need (the cache switched off);
  cold      a new sweep folder: cells share one cache that starts empty;
  warm      the same sweep again in a new folder with the cache of the cold run copied in.

Cells: sft, tell, tell-no-anchor and general-only at one task budget x the ratios (paired baselines at every
ratio), seed 42. Data: Halu-CoT-JSON prompts as the task, HaluEval general + GSM8K train (repeated as distinct
copies up to 1.3x the largest general budget) as general data, from ../shared/data; tokens counted with the
Llama-2 SentencePiece model. Tokenizer time is the time spent inside SentencePiece's encode. Every mixture
of the cached runs is checked byte-identical to the uncached run's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from prepare import SPM, build_pool  # noqa: E402  (the prepare benchmark's pool builder)


def run(spec_path: Path, out: Path, cache: bool) -> dict:
    import tell.prepare as P
    from tell.data.tokens import SentencePieceCounter
    from tell.experiments.sweep import Sweep, load_spec

    spent = {"tokenizer_s": 0.0, "texts": 0}
    real = SentencePieceCounter.count

    def timed(self, texts):
        t0 = time.perf_counter()
        try:
            return real(self, texts)
        finally:
            spent["tokenizer_s"] += time.perf_counter() - t0
            spent["texts"] += len(texts)

    SentencePieceCounter.count = timed
    cached_counter = P.CachedCounter
    if not cache:
        P.CachedCounter = lambda inner, folder: inner  # the cache switched off
    try:
        t0 = time.perf_counter()
        plan = Sweep(load_spec(str(spec_path)), out).plan()
        wall = time.perf_counter() - t0
    finally:
        SentencePieceCounter.count = real
        P.CachedCounter = cached_counter
    cells = [c for c, m in plan if m]
    return {"cells": len(cells), "wall_s": round(wall, 2), **{k: round(v, 2) if isinstance(v, float) else v
                                                             for k, v in spent.items()}}


def mixtures(out: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted((out / "mixtures").glob("*/mixture.jsonl"))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task-tokens", type=int, default=10000)
    ap.add_argument("--ratios", type=float, nargs="+", default=[1, 3, 10, 30, 100, 300, 1000])
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tell-sweep-prepare-"))
    task, general, copies = build_pool(work, int(args.task_tokens * max(args.ratios)))
    spec = work / "spec.yaml"
    spec.write_text(json.dumps({
        "name": "prepare benchmark", "model": str(SPM), "tokenizer": str(SPM), "task": str(task),
        "general": [str(general)], "anchor": "Judge the response; answer in the required JSON format.",
        "eval": ["unused.jsonl"], "methods": ["sft", "tell", "tell-no-anchor", "general-only"],
        "task_tokens": [args.task_tokens], "ratios": args.ratios, "seeds": [42]}))
    res = {"uncached": run(spec, work / "uncached", cache=False), "cold": run(spec, work / "cold", cache=True)}
    shutil.copytree(work / "cold" / "token_counts", work / "warm" / "token_counts")
    res["warm"] = run(spec, work / "warm", cache=True)
    ref = mixtures(work / "uncached")
    same = {k: mixtures(work / k) == ref for k in ("cold", "warm")}
    print(json.dumps({"general_copies": copies, "results": res, "byte_identical": same,
                      "tokenizer_time_ratio_uncached_over_cold": round(res["uncached"]["tokenizer_s"] /
                                                                      max(res["cold"]["tokenizer_s"], 1e-9), 2),
                      "tokenizer_time_ratio_uncached_over_warm": round(res["uncached"]["tokenizer_s"] /
                                                                      max(res["warm"]["tokenizer_s"], 1e-9), 2),
                      "wall_ratio_uncached_over_cold": round(res["uncached"]["wall_s"] / res["cold"]["wall_s"], 2)},
                     indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
