"""The few parts of training that are TELL's, on top of the HF Trainer: the loss split into task and
general tokens, token counts and throughput in the log, divergence stops, and checkpoints that say
when they are complete."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback

from tell.io import write_json
from tell.train.batching import IGNORE
from tell.train.schedule import make_scheduler, warmup_steps

COMPLETE = "tell_complete.json"


class TrainingDiverged(RuntimeError):
    pass


class TellTrainer(Trainer):
    """Trainer with a loss normalised over the answer tokens of the whole optimizer step (all micro-batches
    and processes), so packing, micro-batch size and accumulation do not change it."""

    loss_is_scaled_for_ga = True

    def __init__(self, *args, divergence_factor: float = 10.0, tokens_seen: tuple[int, int] = (0, 0),
                 warmup_ratio: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.warmup_ratio = warmup_ratio
        self.model_accepts_loss_kwargs = True  # makes the Trainer count answer tokens per optimizer step
        self.divergence_factor = divergence_factor
        # task loss sum, task answer tokens, general loss sum, general answer tokens, task tokens, general tokens
        self._acc = torch.zeros(6, dtype=torch.float64)
        self._seen = list(tokens_seen)
        self._first_loss: float | None = None
        self._t_last = time.perf_counter()

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """tell's schedule (`tell.train.schedule`): warm-up starts above zero, so no optimizer step runs at
        learning rate 0 (HF's first warm-up step does, and a one-step run would change nothing)."""
        if self.lr_scheduler is None:
            kind = getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type)
            self.lr_scheduler = make_scheduler(optimizer or self.optimizer, kind,
                                               warmup_steps(num_training_steps, self.warmup_ratio), num_training_steps)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels, source = inputs.pop("labels"), inputs.pop("token_source")
        outputs = model(**inputs, use_cache=False)
        logits = outputs.logits[:, :-1, :].float()
        target, src = labels[:, 1:], source[:, 1:]
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=IGNORE,
                             reduction="none").view_as(target)
        valid = target != IGNORE
        total = ce.sum()
        if not torch.isfinite(total):
            raise TrainingDiverged(f"the loss became {total.item()} at step {self.state.global_step + 1}")
        n = num_items_in_batch if num_items_in_batch is not None else valid.sum()
        loss = total / n
        if self.args.average_tokens_across_devices and self.args.world_size > 1 and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over processes
        with torch.no_grad():
            task, gen = valid & (src == 1), valid & (src == 0)
            self._acc += torch.stack([ce[task].sum(), task.sum(), ce[gen].sum(), gen.sum(),
                                      (source == 1).sum(), (source == 0).sum()]).double().cpu()
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if "loss" in logs:
            acc = self._acc.to(self.args.device)
            if self.args.world_size > 1:
                acc = self.accelerator.reduce(acc, reduction="sum")
            acc = acc.cpu().tolist()
            self._acc.zero_()
            now = time.perf_counter()
            self._seen[0] += int(acc[4])
            self._seen[1] += int(acc[5])
            logs["loss_task"] = acc[0] / acc[1] if acc[1] else None
            logs["loss_general"] = acc[2] / acc[3] if acc[3] else None
            logs["tokens_task"], logs["tokens_general"] = self._seen
            logs["tokens_per_s"] = round((acc[4] + acc[5]) / max(now - self._t_last, 1e-9), 1)
            self._t_last = now
            loss = logs["loss"]
            if not math.isfinite(loss):
                raise TrainingDiverged(f"the loss became {loss} at step {self.state.global_step}")
            if self._first_loss is None:
                self._first_loss = loss
            elif loss > self.divergence_factor * self._first_loss:
                raise TrainingDiverged(f"the loss exploded to {loss:.4g} at step {self.state.global_step} "
                                       f"(over {self.divergence_factor:g}x the first logged loss "
                                       f"{self._first_loss:.4g})")
        super().log(logs, start_time)


class JsonlLog(TrainerCallback):
    """One JSON line per logging step in `train_log.jsonl` (main process only)."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs and "loss" in logs:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": round(state.epoch or 0, 6), **logs}) + "\n")


class MarkComplete(TrainerCallback):
    """Writes `tell_complete.json` into a checkpoint once the Trainer has finished writing it; a folder
    without it (the process died while saving) is never resumed from."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                write_json(ckpt / COMPLETE, {"step": state.global_step})


def last_complete_checkpoint(folder: Path) -> Path | None:
    done = [p for p in folder.glob("checkpoint-*") if (p / COMPLETE).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)
