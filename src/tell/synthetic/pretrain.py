"""Pretraining the leverage world's base model: a tiny Llama-style model on the world's corpus, saved as an
ordinary Hugging Face model dir (with its word-level tokenizer) that every other command loads like any model."""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tell.errors import TellError
from tell.io import write_json
from tell.prompting import PLAIN_TURN
from tell.synthetic.world import World

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


@dataclass(frozen=True)
class BaseModelConfig:
    hidden: int = 96
    layers: int = 3
    heads: int = 4
    intermediate: int = 256
    seq_len: int = 128
    batch: int = 32
    steps: int = 700
    lr: float = 3e-3
    seed: int = 0


def build_tokenizer(world: World):
    """Word-level: one token per whitespace-separated word (the world's text is all space-separated)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    template_words = PLAIN_TURN.format(user="").split()
    words = sorted(set(world.vocabulary()) | set(template_words))
    vocab = {w: i for i, w in enumerate(SPECIALS + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                 pad_token="<pad>")
    check_tokenizer(hf, len(vocab))
    return hf


def check_tokenizer(tok, vocab_size: int, sample: str = "reverse ka lo") -> None:
    """A built tokenizer must have the expected vocabulary and encode a sample to something (see GUIDE 5:
    some tokenizer classes silently build a near-empty vocabulary). A real check, not an `assert`, which
    `python -O` would drop."""
    ids = tok(sample, add_special_tokens=False)["input_ids"]
    if len(tok) != vocab_size or not ids:
        import tokenizers
        import transformers

        raise TellError(f"the demo world's word-level tokenizer came out wrong: {len(tok)} tokens (expected "
                        f"{vocab_size}), {sample!r} encodes to {ids}; check the installed tokenizers "
                        f"({tokenizers.__version__}) and transformers ({transformers.__version__}) versions")


def pretrain(world: World, out: Path, cfg: BaseModelConfig = BaseModelConfig(), log=print) -> Path:
    """Train the base model on the world's pretraining sentences (next-token loss on packed rows)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    tok = build_tokenizer(world)
    sentences = world.pretrain_text()
    eos = tok.eos_token_id
    ids: list[int] = []
    for s in sentences:
        ids += tok(s, add_special_tokens=False)["input_ids"] + [eos]
    n_rows = len(ids) // cfg.seq_len
    data = torch.tensor(ids[:n_rows * cfg.seq_len]).view(n_rows, cfg.seq_len)
    mcfg = LlamaConfig(vocab_size=len(tok), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
                       num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
                       max_position_embeddings=1024, bos_token_id=tok.bos_token_id, eos_token_id=eos,
                       pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(mcfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(s / cfg.steps, 1.0))))
    rng = random.Random(cfg.seed)
    t0, losses = time.perf_counter(), []
    model.train()
    for step in range(cfg.steps):
        rows = torch.tensor([rng.randrange(n_rows) for _ in range(cfg.batch)])
        batch = data[rows]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            log(f"  pretraining step {step + 1}/{cfg.steps}: loss {sum(losses[-100:]) / 100:.3f} "
                f"({time.perf_counter() - t0:.0f}s)")
    tmp = out.with_name(out.name + ".tmp")
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a one-file "Writing model shards" bar says nothing on the demo's console
    try:
        model.save_pretrained(tmp)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    tok.save_pretrained(tmp)
    write_json(tmp / "tell_world.json", {"world": world.cfg.pretraining(), "pretraining": asdict(cfg),
                                          "final_loss": sum(losses[-50:]) / 50, "seconds": time.perf_counter() - t0,
                                          "tokens": len(ids)})
    import os
    import shutil
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
