"""python benchmarks/train.py [--examples 480] [--hidden 256] [--layers 4] [--micro-batch-size 16]

Packing vs padding-to-the-longest for `tell train`, side by side in one run, on CPU.

Model: a Llama-style model built from a config with random weights (hidden 256, 4 layers, 8 heads,
vocab 8k BPE trained on the data), LoRA r=8 on all linear layers, batch 16 (micro-batch 16 by default, --micro-batch-size 4 for 4 x 4).
Mixture: `tell prepare` of Halu-CoT-JSON prompts (task) with HaluEval general answers (Alpaca queries,
ChatGPT answers: Alpaca's length spread) at ratio 10, read from ../shared/data.
Reported: non-padding tokens per second of training (wall time of `Trainer.train`, the same work in
both modes), the share of computed positions that are padding, and the final losses (which must
agree: packing changes the speed, not the computation).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"


def build(work: Path, examples: int, hidden: int, layers: int) -> tuple[Path, Path]:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tell.prepare import PrepareConfig
    from tell.prepare import prepare

    gen = [json.loads(line) for line in open(SHARED / "halueval" / "general_data.jsonl")]
    with open(work / "general.jsonl", "w") as f:
        for r in gen:
            f.write(json.dumps({"prompt": r["user_query"], "response": r["chatgpt_response"]}) + "\n")
    task = [json.loads(line) for line in open(SHARED / "tell" / "test_Halu_CoT_JSON.jsonl")]
    with open(work / "task.jsonl", "w") as f:
        for r in task[:200]:
            f.write(json.dumps({"prompt": r["prompt"], "response": r["response"]}) + "\n")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = [r["user_query"] + " " + r["chatgpt_response"] for r in gen] + [r["prompt"] for r in task[:200]]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=8000, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                 pad_token="<pad>")
    model_dir = work / "model"
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(hf), hidden_size=hidden, intermediate_size=hidden * 11 // 4,
                      num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=8,
                      max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    LlamaForCausalLM(cfg).save_pretrained(model_dir)
    hf.save_pretrained(model_dir)
    # Task budget chosen so that ratio 10 gives about `examples` examples in all.
    m = prepare(PrepareConfig(task=str(work / "task.jsonl"), general=[str(work / "general.jsonl")],
                              tokenizer=str(model_dir), task_tokens=examples * 180 // 11, ratio=10.0,
                              anchor="Judge hallucination; answer in JSON.", out=str(work / "mix"), progress=False))
    print(f"mixture: {m['mixture']['examples']} examples, {m['mixture']['tokens']:,} tokens "
          f"(task {m['budget']['task_examples']}, general {m['budget']['general_examples']})")
    return work / "mix", model_dir


def padding_share(mix: Path, model_dir: Path, packed: bool, max_length: int, micro: int) -> tuple[float, int]:
    from transformers import AutoTokenizer

    from tell.artifacts import MixtureDir
    from tell.train.batching import Collator, tokenize_mixture

    tok = AutoTokenizer.from_pretrained(model_dir)
    ex = tokenize_mixture(MixtureDir(mix), tok, max_length=max_length, length_policy="truncate",
                          train_on_prompt=False, progress=False).examples
    col = Collator(tok.pad_token_id, packed=packed, row_length=max_length)
    cells = real = 0
    for i in range(0, len(ex), micro):
        b = col(ex[i:i + micro])
        cells += b["input_ids"].numel()
        real += int((b["token_source"] >= 0).sum())
    return 1 - real / cells, real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=480)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--micro-batch-size", type=int, default=16)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tell.train.config import TrainConfig
    from tell.train.run import train

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mix, model_dir = build(work, a.examples, a.hidden, a.layers)
        rows = {}
        for mode in ("off", "on"):
            share, real = padding_share(mix, model_dir, mode == "on", a.max_length, a.micro_batch_size)
            m = train(TrainConfig(mixture=str(mix), model=str(model_dir), out=str(work / f"run-{mode}"),
                                  packing=mode, save_steps=0, progress=False, max_length=a.max_length,
                                  logging_steps=1000, micro_batch_size=a.micro_batch_size))
            seconds = m["seconds"]  # the training loop (Trainer.train), not model loading
            rows[mode] = {"seconds": seconds, "tokens": real, "tok_s": real / seconds, "padding": share,
                          "loss": m["train_loss"]}
    print(f"{'mode':<8} {'wall s':>8} {'real tokens':>12} {'real tok/s':>11} {'padding %':>10} {'train loss':>11}")
    for mode, name in (("off", "padded"), ("on", "packed")):
        r = rows[mode]
        print(f"{name:<8} {r['seconds']:>8.1f} {r['tokens']:>12,} {r['tok_s']:>11,.0f} {100 * r['padding']:>10.1f} "
              f"{r['loss']:>11.5f}")
    print(f"speed-up (packed / padded real tokens per second): {rows['on']['tok_s'] / rows['off']['tok_s']:.2f}x")


if __name__ == "__main__":
    main()
