"""python benchmarks/prepare.py [--general-tokens 10000000] [--task-tokens 10000] [--pool-factor 1.3]

Benchmark of `tell prepare` against the obvious Hugging Face `datasets` pipeline, side by side in one run.

The general pool is HaluEval general (user_query -> chatgpt_response) and GSM8K train (question -> answer)
from ../shared/data, repeated as distinct examples (each copy's prompt starts with "[copy k]") until it
holds about --pool-factor x the general budget. Task data: Halu-CoT-JSON prompts. Tokens are counted with the Llama-2
SentencePiece model. Each pipeline runs in its own process (peak RSS is per process) with a cold cache.

  tell:     prepare(task_tokens=T, general_tokens=G): tokenizes only what the budgets need.
  baseline: load_dataset("json") for both files, a batched .map that tokenizes every row (same
            SentencePiece model, same threads), interleave_datasets with token-share probabilities,
            .shuffle(seed), written to JSONL.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
SPM = SHARED / "tokenizers" / "llama2" / "tokenizer.model"


def build_pool(work: Path, general_tokens: int, factor: float = 1.3) -> tuple[Path, Path, int]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(SPM))
    base = []
    with open(SHARED / "halueval" / "general_data.jsonl") as f:
        base += [(r["user_query"], r["chatgpt_response"]) for r in map(json.loads, f)]
    with open(SHARED / "gsm8k" / "train.jsonl") as f:
        base += [(r["question"], r["answer"]) for r in map(json.loads, f)]
    base_tokens = sum(len(x) for x in sp.encode([p + "\n" + r for p, r in base], num_threads=os.cpu_count()))
    copies = int(factor * general_tokens / base_tokens) + 1
    general = work / "general.jsonl"
    with open(general, "w") as f:
        for k in range(copies):
            for p, r in base:
                f.write(json.dumps({"prompt": f"[copy {k}] {p}", "response": r}) + "\n")
    task = work / "task.jsonl"
    with open(SHARED / "tell" / "test_Halu_CoT_JSON.jsonl") as src, open(task, "w") as f:
        for line in src:
            r = json.loads(line)
            f.write(json.dumps({"prompt": r["prompt"], "response": r["response"]}) + "\n")
    return task, general, copies


def run_tell(task: str, general: str, out: str, task_tokens: int, general_tokens: int) -> dict:
    from tell.prepare import PrepareConfig
    from tell.prepare import prepare

    t0 = time.perf_counter()
    m = prepare(PrepareConfig(task=task, general=[general], tokenizer=str(SPM), task_tokens=task_tokens,
                              general_tokens=general_tokens, anchor="Judge hallucination, answer in JSON.",
                              seed=42, out=out, progress=False))
    return {"seconds": time.perf_counter() - t0, "tokens_counted": m["budget"]["tokens_counted"],
            "mixture_tokens": m["mixture"]["tokens"], "examples": m["mixture"]["examples"]}


def run_baseline(task: str, general: str, out: str, task_tokens: int, general_tokens: int) -> dict:
    import datasets
    import sentencepiece as spm

    datasets.disable_progress_bars()
    sp = spm.SentencePieceProcessor(model_file=str(SPM))
    threads = os.cpu_count()
    t0 = time.perf_counter()

    def tok(batch):
        texts = [p + "\n" + r for p, r in zip(batch["prompt"], batch["response"])]
        return {"n_tokens": [len(x) for x in sp.encode(texts, num_threads=threads)]}

    ds_task = datasets.load_dataset("json", data_files=task, split="train").map(tok, batched=True, batch_size=1000)
    ds_gen = datasets.load_dataset("json", data_files=general, split="train").map(tok, batched=True, batch_size=1000)
    counted = sum(ds_task["n_tokens"]) + sum(ds_gen["n_tokens"])
    # Row-level probabilities that give the wanted token shares (mean tokens per row differ).
    t_mean = sum(ds_task["n_tokens"]) / len(ds_task)
    g_mean = sum(ds_gen["n_tokens"]) / len(ds_gen)
    rows_t, rows_g = task_tokens / t_mean, general_tokens / g_mean
    p_task = rows_t / (rows_t + rows_g)
    mixed = datasets.interleave_datasets([ds_task, ds_gen], probabilities=[p_task, 1 - p_task], seed=42,
                                         stopping_strategy="first_exhausted")
    mixed = mixed.select(range(min(len(mixed), int(rows_t + rows_g)))).shuffle(seed=42)
    mixed.to_json(out)
    return {"seconds": time.perf_counter() - t0, "tokens_counted": counted,
            "mixture_tokens": sum(mixed["n_tokens"]), "examples": len(mixed)}


def child(which: str, *args) -> None:
    fn = run_tell if which == "tell" else run_baseline
    res = fn(*args[:3], int(args[3]), int(args[4]))
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--general-tokens", type=int, default=10_000_000)
    ap.add_argument("--task-tokens", type=int, default=10_000)
    ap.add_argument("--pool-factor", type=float, default=1.3, help="general pool size / general budget")
    ap.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        task, general, copies = build_pool(work, a.general_tokens, a.pool_factor)
        results = {}
        for which in ("tell", "baseline"):
            env = dict(os.environ, HF_DATASETS_CACHE=str(work / f"cache-{which}"), HF_HUB_OFFLINE="1")
            out = str(work / f"{which}-out" if which == "tell" else work / "baseline.jsonl")
            r = subprocess.run([sys.executable, __file__, "--child", which, str(task), str(general), out,
                                str(a.task_tokens), str(a.general_tokens)], env=env, capture_output=True, text=True)
            if r.returncode:
                sys.exit(r.stderr)
            results[which] = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"general pool: {copies} copies of HaluEval general + GSM8K train; budgets: task {a.task_tokens:,}, "
          f"general {a.general_tokens:,} tokens; {os.cpu_count()} cores")
    print(f"{'pipeline':<10} {'wall s':>8} {'tokens counted':>15} {'counted tok/s':>14} {'mixture tokens':>15} "
          f"{'peak RSS MB':>12}")
    for k, r in results.items():
        print(f"{k:<10} {r['seconds']:>8.2f} {r['tokens_counted']:>15,} {r['tokens_counted'] / r['seconds']:>14,.0f} "
              f"{r['mixture_tokens']:>15,} {r['peak_rss_mb']:>12,.0f}")
    print(f"speed-up (baseline wall / tell wall): {results['baseline']['seconds'] / results['tell']['seconds']:.2f}x")


if __name__ == "__main__":
    main()
