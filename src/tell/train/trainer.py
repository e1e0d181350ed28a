"""The few parts of training that are TELL's, on top of the HF Trainer: the loss split into task and
general tokens, token counts and throughput in the log, divergence stops, and checkpoints that say
when they are complete."""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from pathlib import Path

import torch
from transformers import ProgressCallback, Trainer, TrainerCallback

from tell.io import append, sha256_file, write_json
from tell.eval.loss import token_nll
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
        self._early: list[float] = []  # the first DIVERGENCE_WINDOW logged losses: the explosion guard's reference
        self._t_last = time.perf_counter()

    def train(self, resume_from_checkpoint: str | None = None, **kwargs):
        """HF resuming from the checkpoint of a max_steps run's last step trains one step more (its step loop
        checks for the end only after a step); here that checkpoint is loaded and nothing is trained."""
        if resume_from_checkpoint and 0 < self.args.max_steps <= _step(Path(resume_from_checkpoint)):
            from transformers.trainer_callback import TrainerState

            self._load_from_checkpoint(resume_from_checkpoint)
            self.state = TrainerState.load_from_json(str(Path(resume_from_checkpoint) / "trainer_state.json"))
            return None
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _save_checkpoint(self, model, trial) -> None:
        """HF's `_save_checkpoint` deletes older checkpoints (save_total_limit) before any `on_save` callback
        runs: a kill in between left no complete checkpoint, and --resume started over. Here HF's rotation is
        off; the new checkpoint is marked complete first, and only then are older ones deleted (`rotate`)."""
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        ckpt = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        try:
            super()._save_checkpoint(model, trial)
        except BaseException:
            if self.args.should_save and ckpt.is_dir() and not (ckpt / COMPLETE).is_file():
                shutil.rmtree(ckpt, ignore_errors=True)  # a save that failed (disk full) leaves no half checkpoint
            raise
        finally:
            self.args.save_total_limit = limit
        if self.args.world_size > 1:
            self.accelerator.wait_for_everyone()  # every process has written its part (its RNG state)
        if self.args.should_save:
            mark_complete(ckpt, self.state.global_step)
            rotate(ckpt.parent, limit)

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
        ce, keep = token_nll(model, labels, **inputs, use_cache=False)  # the LM head only where labels are
        src = source[:, 1:][keep[:, :-1]]
        total = ce.sum()
        if not torch.isfinite(total):
            raise TrainingDiverged(f"the loss became {total.item()} at step {self.state.global_step + 1}")
        n = num_items_in_batch if num_items_in_batch is not None else ce.numel()
        loss = total / n
        if self.args.average_tokens_across_devices and self.args.world_size > 1 and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over processes
        with torch.no_grad():
            task, gen = src == 1, src == 0
            self._acc += torch.stack([ce[task].sum(), task.sum(), ce[gen].sum(), gen.sum(),
                                      (source == 1).sum(), (source == 0).sum()]).double().cpu()
        return (loss, {"loss": loss}) if return_outputs else loss

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
            if not self._early and self.state.log_history:  # resumed: the reference is the run's own first losses
                self._early = [h["loss"] for h in self.state.log_history if "loss" in h][:DIVERGENCE_WINDOW]
            if len(self._early) < DIVERGENCE_WINDOW:
                self._early.append(loss)
            why = explosion(self._early, loss, self.divergence_factor)
            if why:
                raise TrainingDiverged(f"the loss exploded to {loss:.4g} at step {self.state.global_step} ({why})")
        super().log(logs, start_time)


DIVERGENCE_WINDOW = 5  # logged losses whose median the explosion guard compares with


def explosion(early: list[float], loss: float, factor: float, window: int = DIVERGENCE_WINDOW) -> str | None:
    """Why a run must stop at this logged loss, or None: once `window` losses are logged, a loss over `factor`
    times their median. The first batch alone is no reference: four examples of skills the base already has can
    log a small fraction of the next batch's loss (world seed 2 of the leverage world, calibration trial 23), and a
    guard on it stopped healthy runs at step 2. A non-finite loss stops a run at once (the caller's check); a run
    with fewer than `window` logged losses has only that check. A resumed run takes its reference from the losses
    its restored log history begins with, as the uninterrupted run would have."""
    if len(early) < window:
        return None
    ref = statistics.median(early)
    if ref > 0 and loss > factor * ref:  # a reference of 0 scales nothing (a non-finite loss still stops the run)
        return f"over {factor:g}x {ref:.4g}, the median of the first {window} logged losses"
    return None


def console_line(step: int, steps: int, logs: dict) -> str:
    """One logged step as the console shows it: `step 10/100: loss 2.345, loss_task 1.98, ...`, floats to 4
    significant digits, without the figures that are None (loss_task in a step without task tokens) or say
    nothing to a reader (total_flos). train_log.jsonl keeps every key."""
    shown = (f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items()
             if v is not None and k != "total_flos")
    return f"step {step}/{steps}: " + ", ".join(shown)


class ProgressLines(ProgressCallback):
    """transformers' progress bar, with each logged step printed above it as one `console_line` instead of
    the Python dict transformers prints (`{'loss': '7.6', 'loss_task': None, ...}`)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.write(console_line(state.global_step, state.max_steps, logs))


class JsonlLog(TrainerCallback):
    """One JSON line per logging step in `train_log.jsonl` (main process only)."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs and "loss" in logs:
            append(self.path, json.dumps({"step": state.global_step, "epoch": round(state.epoch or 0, 6), **logs}) + "\n")


def _step(ckpt: Path) -> int:
    return int(ckpt.name.split("-")[-1])


def checkpoints(folder: Path) -> list[Path]:
    """Every checkpoint-N folder, complete or not, newest (highest step) first."""
    return sorted((p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
                  key=_step, reverse=True)


def mark_complete(ckpt: Path, step: int) -> None:
    """`tell_complete.json` with the size and sha256 of every file of the checkpoint, so that a file cut short
    or changed later is found before resuming from it (`damage`)."""
    files = {p.relative_to(ckpt).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(ckpt.rglob("*")) if p.is_file() and p.name != COMPLETE}
    write_json(ckpt / COMPLETE, {"step": step, "files": files})


def damage(ckpt: Path) -> str | None:
    """Why a checkpoint marked complete cannot be resumed from (a file missing, cut short or changed since it
    was marked), or None. Markers from before files were recorded are trusted."""
    try:
        files = json.loads((ckpt / COMPLETE).read_text(encoding="utf-8")).get("files") or {}
        for name, want in files.items():
            p = ckpt / name
            if not p.is_file():
                return f"{name} is missing"
            if p.stat().st_size != want["bytes"]:
                return f"{name} has {p.stat().st_size} bytes, {want['bytes']} when it was saved"
            if sha256_file(p) != want["sha256"]:
                return f"{name} changed since it was saved"
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        return f"{COMPLETE} or a file it lists cannot be read ({type(e).__name__})"
    return None


def resume_point(folder: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest complete checkpoint whose files are intact, [(newer complete checkpoint, its damage)])."""
    damaged = []
    for ckpt in checkpoints(folder):
        if (ckpt / COMPLETE).is_file():
            why = damage(ckpt)
            if why is None:
                return ckpt, damaged
            damaged.append((ckpt, why))
    return None, damaged


def last_complete_checkpoint(folder: Path) -> Path | None:
    return resume_point(folder)[0]


def rotate(folder: Path, limit: int | None) -> None:
    """Keep the `limit` newest complete checkpoints; delete every other checkpoint folder (older complete ones,
    and unfinished ones from a save that was killed). Only ever called once the newest one is marked complete.
    A marker is deleted before its folder, so a deletion cut short never leaves a folder that looks complete."""
    if not limit or limit <= 0:
        return
    keep = [p for p in checkpoints(folder) if (p / COMPLETE).is_file()][:limit]
    for ckpt in checkpoints(folder):
        if ckpt not in keep:
            (ckpt / COMPLETE).unlink(missing_ok=True)
            shutil.rmtree(ckpt, ignore_errors=True)
