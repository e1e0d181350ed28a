"""Evaluation during training (`tell train --eval-data SET --eval-steps N`): tell's own metrics (JSON adherence,
accuracy, chrF++/BLEU, GSM8K) on held-out task items, with the run's anchor, and on general items without it (what
training makes the model forget), every N optimizer steps and after the last one.

Each evaluation is greedy (no sampling seed to consume), batched as `tell eval` batches, limited to `--eval-limit`
items per set, and leaves the training trajectory as it was: the model goes back to training mode and every random
number generator (torch, CUDA, Python, NumPy) to the state it had, so a run with evaluations trains the same adapter
as one without (tested). Results go into train_log.jsonl as rows with an `eval` key (beside the loss rows) and to
every tracker given (`eval/SET/METRIC`); `RunDir.eval_log` reads them back.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any

from transformers import TrainerCallback

from tell.data.anchor import Anchor
from tell.errors import TellError
from tell.io import append


@dataclass
class LiveSet:
    name: str
    role: str
    kind: str
    items: list            # the records scored
    ids: list[list[int]]   # their prompt ids (anchor, shots and template applied once, up front)
    max_new_tokens: int


def eval_config(cfg: Any) -> Any:
    """The `tell eval` settings the evaluations run with: greedy, the train config's limit and batch size."""
    from tell.eval.config import EvalConfig

    return EvalConfig(model=cfg.model, task_data=list(cfg.eval_data), general_data=list(cfg.eval_general_data),
                      data_dir=cfg.eval_data_dir, limit=cfg.eval_limit, greedy=True, batch_size=cfg.eval_batch_size,
                      max_new_tokens=cfg.eval_max_new_tokens, metric=cfg.eval_metric, progress=False)


def load_sets(cfg: Any, model: Any, tokenizer: Any, anchor: Anchor | None) -> list[LiveSet]:
    """The eval sets, resolved and rendered as `tell eval` does (`eval.run.all_sets`, `set_prompts`: the anchor on
    task sets, generation cut to the model's context) before training starts, so a bad set is refused first."""
    from tell.eval.run import all_sets, set_prompts

    ecfg = eval_config(cfg)
    live = []
    for es in all_sets(ecfg):
        if not es.records:
            raise TellError("the eval set holds no item", file=str(es.path), field="eval_data")
        p = set_prompts(es, ecfg, model, tokenizer, anchor)
        live.append(LiveSet(es.name, es.role, es.kind, p.items, p.ids, p.max_new_tokens))
    return live


def _rng_state() -> tuple:
    import numpy as np
    import torch

    return (torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            random.getstate(), np.random.get_state())


def _set_rng_state(state: tuple) -> None:
    import numpy as np
    import torch

    cpu, cuda, py, npy = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    random.setstate(py)
    np.random.set_state(npy)


def evaluate_now(model: Any, tokenizer: Any, sets: list[LiveSet], cfg: Any) -> dict:
    """{set: {role, kind, items, metrics}} of the model as it is now; training mode and RNG states restored."""
    from tell.eval.generate import generate_all
    from tell.eval.run import EvalSet, prediction_row, set_metrics

    ecfg = eval_config(cfg)
    was_training, state = model.training, _rng_state()
    model.eval()
    out = {}
    try:
        for s in sets:
            texts: dict[int, str] = {}
            generate_all(model, tokenizer, s.ids, batch_size=ecfg.batch_size, seed=0,
                         on_batch=lambda idx, outs: texts.update(zip(idx, outs)),
                         max_new_tokens=s.max_new_tokens, greedy=True, temperature=ecfg.temperature,
                         top_k=ecfg.top_k, top_p=ecfg.top_p, repetition_penalty=ecfg.repetition_penalty)
            es = EvalSet(s.name, None, s.items, s.kind, s.role, None)
            rows = [prediction_row(es, rec, texts[j], "") for j, rec in enumerate(s.items)]
            out[s.name] = {"role": s.role, "kind": s.kind, "items": len(rows),
                           "metrics": set_metrics(s.kind, rows, ecfg)}
    finally:
        model.train(was_training)
        _set_rng_state(state)
    return out


class LiveEval(TrainerCallback):
    """Runs `evaluate_now` every `every` optimizer steps and after the last step (main process only); writes an
    `eval` row into train_log.jsonl and logs `eval/SET/METRIC` to the trackers through the trainer."""

    def __init__(self, sets: list[LiveSet], tokenizer: Any, cfg: Any, log_path):
        self.sets, self.tokenizer, self.cfg, self.log_path = sets, tokenizer, cfg, log_path
        self.trainer = None  # set once the trainer exists (its `log` reaches every tracker)
        self.done: set[int] = set()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step in self.done or not (step % self.cfg.eval_steps == 0 or step >= state.max_steps):
            return
        self.done.add(step)
        if state.is_world_process_zero:
            self.record(step, state.epoch, model, control)

    def record(self, step: int, epoch: float | None, model: Any, control: Any = None) -> dict:
        import json

        t0 = time.perf_counter()
        results = evaluate_now(model, self.tokenizer, self.sets, self.cfg)
        row = {"step": step, "epoch": round(epoch or 0, 6), "eval": results,
               "eval_seconds": round(time.perf_counter() - t0, 3)}
        append(self.log_path, json.dumps(row) + "\n")
        if self.trainer is not None:
            # Trainer.log clears control.should_log (its CallbackHandler.on_log does): this step's loss row, due
            # after on_step_end, would be skipped and its loss folded into the next one. Kept as it was.
            should_log = control.should_log if control is not None else None
            self.trainer.log(tracker_scalars(results))
            if control is not None:
                control.should_log = self.trainer.control.should_log = should_log
        return row


def tracker_scalars(results: dict) -> dict[str, float]:
    """{"eval_SET/METRIC": value}: the trackers' callbacks (HF's `rewrite_logs`) turn the `eval_` prefix into their
    `eval/` section, so the tag reads eval/SET/METRIC. SET is a file's stem (its path when two stems collide)."""
    stems = [Path(name).stem for name in results]
    short = {name: stem if stems.count(stem) == 1 else name for name, stem in zip(results, stems)}
    return {f"eval_{short[name]}/{metric}": m["value"] for name, r in results.items()
            for metric, m in r["metrics"].items() if isinstance(m, dict) and m.get("value") is not None}
