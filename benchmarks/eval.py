"""python benchmarks/eval.py [--prompts 64] [--new-tokens 64] [--batch-size 16]

Batched generation (left padding + KV cache, as `tell eval` does) vs one prompt at a time, side by side,
greedy, on a tiny Llama-style model with random weights (hidden 256, 4 layers, 8k BPE vocabulary) on CPU.
Prompts: GSM8K test questions from ../shared/data in the plain template. Reports generated tokens per
second for both and whether the greedy outputs are identical.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    a = ap.parse_args()

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tell.data.records import Record
    from tell.eval.generate import batches_by_length, generate_batch
    from tell.prompting import prompt_ids

    rows = [json.loads(line) for line in open(SHARED / "gsm8k" / "test.jsonl")][:a.prompts]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([r["question"] + " " + r["answer"] for r in rows] * 4,
                            trainers.BpeTrainer(vocab_size=8000, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                 pad_token="<pad>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(hf), hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=2048,
                      bos_token_id=1, eos_token_id=2, pad_token_id=3)
    with tempfile.TemporaryDirectory() as tmp:
        LlamaForCausalLM(cfg).save_pretrained(tmp)
        model = AutoModelForCausalLM.from_pretrained(tmp).eval()
    prompts = [prompt_ids(hf, Record(prompt=r["question"], response="")) for r in rows]
    kw = dict(max_new_tokens=a.new_tokens, greedy=True, temperature=0.3, top_k=20, top_p=0.7,
              repetition_penalty=1.0, seed=0)

    def count(outs):
        return sum(len(hf(o, add_special_tokens=False)["input_ids"]) for o in outs)

    generate_batch(model, hf, prompts[:2], **kw)  # warm-up
    t0 = time.perf_counter()
    single = [generate_batch(model, hf, [p], **kw)[0] for p in prompts]
    t_single = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = [None] * len(prompts)
    for idx in batches_by_length(prompts, a.batch_size):
        for i, o in zip(idx, generate_batch(model, hf, [prompts[i] for i in idx], **kw)):
            batched[i] = o
    t_batched = time.perf_counter() - t0
    same = sum(x == y for x, y in zip(single, batched))
    n = count(single)
    print(f"{len(prompts)} prompts ({min(map(len, prompts))}-{max(map(len, prompts))} tokens), "
          f"{a.new_tokens} new tokens each, greedy; torch threads {torch.get_num_threads()}")
    print(f"{'mode':<14} {'wall s':>8} {'generated tokens':>17} {'tokens/s':>9}")
    print(f"{'one at a time':<14} {t_single:>8.2f} {n:>17,} {n / t_single:>9,.0f}")
    print(f"{'batch ' + str(a.batch_size):<14} {t_batched:>8.2f} {count(batched):>17,} {count(batched) / t_batched:>9,.0f}")
    print(f"speed-up: {t_single / t_batched:.2f}x; identical greedy outputs: {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
