"""python benchmarks/gpu_check.py [--cpu-smoke] [--results benchmarks/RESULTS.md] [--steps 6]

What only a GPU can show, in at most ~5 minutes on one H100 or H200: bf16 LoRA training throughput and MFU of
tell's own training step (its Collator, padded and packed, and the loss only where labels are,
`tell.eval.loss.token_nll`) for the SmolLM2-135M shape and a 7B Llama shape, both built from a config with random
weights (no download), batched greedy generation tokens per second (`tell.eval.generate.generate_batch`, a shared
opening and left padding as tell eval runs it), and peak GPU memory. Attention: flash-attention 2 (varlen for
packed rows) where `flash_attn` is installed, else PyTorch SDPA. It writes its own RESULTS.md section between
`<!-- gpu-check:begin -->` and `<!-- gpu-check:end -->` (atomic), with the device, the date and the commit.

`--cpu-smoke`: the same code on tiny shapes in float32 on the CPU, so that CI runs it and the script cannot rot;
its section is marked as a smoke run (its figures say nothing about speed).

MFU = achieved model FLOP/s over the device's dense bf16 peak (H100 SXM 989 TFLOP/s, H200 the same; a PCIe H100
756). Training FLOPs per token are counted as 6 N (N the base parameters; forward, activation gradients and the
frozen weights' gradient-free backward are close to 4 N, so this over-counts by about a third on purpose, as
the usual 6 N D rule does: say so with the figure) plus attention's 12 L d s.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"
SHAPES = {  # name -> LlamaConfig fields
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    "llama-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False),
}
SMOKE = {"tiny-a": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True),
         "tiny-b": dict(hidden_size=96, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=4, vocab_size=384, tie_word_embeddings=False)}
PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0}


def tokenizer(vocab: int):
    """A word-level tokenizer of `vocab` tokens made here (t0 ... tN, with pad/eos), for generation's pad and stop."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "<eos>": 1, **{f"t{i}": i for i in range(2, vocab)}}
    tok = Tokenizer(models.WordLevel(words, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def build(shape: dict, device: str, dtype, attn: str):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tell.train.model import add_lora

    torch.manual_seed(0)
    cfg = LlamaConfig(**shape, max_position_embeddings=4096, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    cfg._attn_implementation = attn
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # made in bf16 at once: a 7B model never exists in float32 beside it
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    n_base = sum(p.numel() for p in model.parameters())
    model = add_lora(model, r=8, alpha=32, dropout=0.05, target_modules="all-linear")
    return model, n_base


def examples(vocab: int, n: int, lo: int, hi: int, seed: int = 0) -> list[dict]:
    """Examples of mixed lengths whose labels cover a sixth of each (an answer), as on Halu-CoT-JSON."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.randint(lo, hi)
        ids = [rng.randrange(2, vocab) for _ in range(k)]
        cut = k - max(1, k // 6)
        out.append({"input_ids": ids, "labels": [-100] * cut + ids[cut:], "source": i % 2})
    return out


def train_throughput(model, exs: list[dict], micro: int, packed: bool, steps: int, row: int, device: str) -> dict:
    import torch

    from tell.eval.loss import token_nll
    from tell.train.batching import Collator

    col = Collator(pad_id=0, packed=packed, row_length=row)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batches = [col(exs[i:i + micro]) for i in range(0, len(exs) - micro + 1, micro)]
    model.train()

    def step(b) -> int:
        """One optimizer step; returns its non-padding tokens."""
        b = {k: v.to(device) for k, v in b.items()}
        labels, source = b.pop("labels"), b.pop("token_source")
        nll, _ = token_nll(model, labels, **b, use_cache=False)
        (nll.sum() / max(nll.numel(), 1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return int((source >= 0).sum())

    step(batches[0])  # warm-up: kernels, allocator
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t, tokens = time.perf_counter(), 0
    for b in (batches * (steps // len(batches) + 1))[1:steps + 1]:
        tokens += step(b)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    cells = sum(b["input_ids"].numel() for b in (batches * (steps // len(batches) + 1))[1:steps + 1])
    return {"tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds, "padding": 1 - tokens / cells,
            "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else None}


def generate_throughput(model, tok, vocab: int, rows: int, prompt: int, new: int, device: str) -> dict:
    import torch

    from tell.eval.generate import generate_batch

    rng = random.Random(1)
    opening = [rng.randrange(2, vocab) for _ in range(prompt // 2)]  # an instruction every prompt shares
    prompts = [opening + [rng.randrange(2, vocab) for _ in range(rng.randint(prompt // 4, prompt // 2))]
               for _ in range(rows)]
    model.eval()
    kw = dict(max_new_tokens=new, greedy=True, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=0)
    with torch.no_grad():
        generate_batch(model, tok, prompts[:2], **(kw | {"max_new_tokens": 4}))  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        outs = generate_batch(model, tok, prompts, **kw)
        if device == "cuda":
            torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    made = sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in outs)
    return {"rows": rows, "new_tokens": made, "seconds": seconds, "tok_s": made / seconds}


def flops_per_token(n_base: int, shape: dict, seq: int) -> float:
    return 6 * n_base + 12 * shape["num_hidden_layers"] * shape["hidden_size"] * seq


def peak_tflops(name: str) -> float | None:
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key.replace(" ", "").lower() in name.replace(" ", "").lower():
            return PEAK_TFLOPS[key]
    return None


def run(smoke: bool, steps: int) -> tuple[list[str], list[dict]]:
    import importlib.util

    import torch

    device = "cpu" if smoke else "cuda"
    if not smoke and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; use --cpu-smoke on a machine without a GPU")
    dtype = torch.float32 if smoke else torch.bfloat16
    flash = not smoke and importlib.util.find_spec("flash_attn") is not None
    attn = "flash_attention_2" if flash else "sdpa"
    name = "CPU (smoke)" if smoke else torch.cuda.get_device_name(0)
    peak = None if smoke else peak_tflops(name)
    rows = []
    for shape_name, shape in (SMOKE if smoke else SHAPES).items():
        big = shape["hidden_size"] >= 4096
        model, n_base = build(shape, device, dtype, attn)
        micro, lo, hi, row = (2, 16, 64, 128) if smoke else ((4, 256, 1024, 2048) if big else (16, 256, 1024, 4096))
        exs = examples(shape["vocab_size"], micro * (steps + 1), lo, hi)
        for packed in (False, True):
            r = train_throughput(model, exs, micro, packed, steps, row, device)
            seq = (lo + hi) / 2
            mfu = None if peak is None else r["tok_s"] * flops_per_token(n_base, shape, seq) / (peak * 1e12)
            rows.append({"shape": shape_name, "params": n_base, "what": f"train {'packed' if packed else 'padded'}",
                         "tok_s": r["tok_s"], "padding": r["padding"], "mfu": mfu, "peak_gib": r["peak_gib"]})
        tok = tokenizer(shape["vocab_size"])
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        g = generate_throughput(model, tok, shape["vocab_size"], 4 if smoke else 64, 32 if smoke else 512,
                                8 if smoke else 128, device)
        rows.append({"shape": shape_name, "params": n_base, "what": f"generate, batch {g['rows']}",
                     "tok_s": g["tok_s"], "padding": None, "mfu": None,
                     "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else None})
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    md = [BEGIN, "## GPU check" + (" (CPU smoke run: tiny shapes, float32; no speed figure here means anything)"
                                   if smoke else f": {name}"), "",
          f"`python benchmarks/gpu_check.py{' --cpu-smoke' if smoke else ''}` at {commit}, "
          f"{datetime.date.today().isoformat()}; torch {torch.__version__}, attention {attn}, "
          f"{'float32' if smoke else 'bf16'}, LoRA r=8 on all linear layers, random weights from a config, "
          f"{steps} timed steps after one warm-up; host {platform.machine()} with {os.cpu_count()} CPUs. MFU counts "
          "6 N + attention FLOPs per trained token against the dense bf16 peak (an over-count for LoRA, whose "
          "frozen weights get no weight gradients).", "",
          "| shape | base parameters | what | tokens/s | padding | MFU | peak GPU memory GiB |",
          "|---|---|---|---|---|---|---|"]
    share = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    for r in rows:
        gib = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
        md.append(f"| {r['shape']} | {r['params']:,} | {r['what']} | {r['tok_s']:,.1f} | {share(r['padding'])} | "
                  f"{share(r['mfu'])} | {gib} |")
    return md + [END], rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU (CI)")
    ap.add_argument("--steps", type=int, default=6, help="timed optimizer steps per training mode")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from demo_results import replace_block

    md, rows = run(args.cpu_smoke, args.steps)
    replace_block(args.results, md, BEGIN, END)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(md[1:-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
