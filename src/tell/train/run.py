"""`train`: a TELL mixture + a base model -> a run folder with a LoRA adapter.

Run folder:
  config.json            resolved config, seeds, model and mixture identity, package versions, date
  mixture_manifest.json  copy of the mixture's manifest (anchor, budgets, spread)
  train_log.jsonl        one line per logging step: loss, task/general loss, lr, tokens seen, tokens/s
  checkpoints/           checkpoint-N folders; `tell_complete.json` marks the complete ones
  adapter/               the final LoRA adapter (safetensors) + tokenizer files
  metrics.json           final figures (written last: its presence means the run finished)
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import time
from pathlib import Path

from tell import provenance
from tell.config import TrainConfig, to_dict
from tell.data.prepare import MIXTURE, read_manifest
from tell.errors import TellError
from tell.io import sha256_file, write_json
from tell.train.batching import Collator, ListDataset, tokenize_mixture
from tell.train.model import add_lora, load_model, load_tokenizer, resolve_dtype, supports_packing
from tell.train.trainer import JsonlLog, MarkComplete, TellTrainer, TrainingDiverged, last_complete_checkpoint

# Settings that may differ between a run and its resumption without changing what is computed.
_RESUME_FREE = ("resume", "progress")


def _check(cfg: TrainConfig) -> None:
    for name in ("mixture", "model", "out"):
        if not getattr(cfg, name):
            raise TellError(f"no --{name} given", field=name)
    if cfg.batch_size < 1 or cfg.micro_batch_size < 1 or cfg.max_length < 2:
        raise TellError("batch_size, micro_batch_size must be >= 1 and max_length >= 2")


def _start_or_resume(cfg: TrainConfig, run: Path, resolved: dict) -> Path | None:
    """Refuse to overwrite a run; on --resume check the config matches and find the checkpoint."""
    saved_path = run / "config.json"
    if not saved_path.is_file():
        if cfg.resume:
            raise TellError("nothing to resume: no config.json", file=str(run))
        if run.exists() and any(run.iterdir()):
            raise TellError("the run folder is not empty; choose a new --out", file=str(run))
        return None
    if not cfg.resume:
        raise TellError("the run folder already holds a run; pass --resume to continue it or choose a new --out",
                        file=str(run))
    if (run / "metrics.json").is_file():
        raise TellError("the run already finished (metrics.json exists); nothing to resume", file=str(run))
    saved = json.loads(saved_path.read_text())["config"]
    diff = sorted(k for k in resolved if k not in _RESUME_FREE and saved.get(k) != resolved[k])
    if diff:
        raise TellError(f"--resume with settings that differ from the run's: {diff}; resume with the same "
                        "settings or start a new run", file=str(saved_path))
    return last_complete_checkpoint(run / "checkpoints")


def _trim_log(log: Path, step: int) -> tuple[int, int]:
    """Drop log lines past the checkpoint we resume from (that work is redone); return tokens seen then."""
    if not log.is_file():
        return 0, 0
    kept = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    kept = [r for r in kept if r["step"] <= step]
    from tell.io import atomic_open
    with atomic_open(log) as f:
        for r in kept:
            f.write(json.dumps(r) + "\n")
    return (kept[-1]["tokens_task"], kept[-1]["tokens_general"]) if kept else (0, 0)


def _save_adapter(model, tokenizer, dest: Path) -> None:
    """Write the adapter into a temp folder beside `dest`, then swap it in."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    old = dest.with_name(dest.name + ".old")
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def train(cfg: TrainConfig) -> dict:
    from transformers import TrainingArguments, set_seed

    _check(cfg)
    mixture_manifest = read_manifest(cfg.mixture)
    run = Path(cfg.out)
    resolved = to_dict(cfg)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = cfg.micro_batch_size * world
    if cfg.batch_size % per_step:
        raise TellError(f"batch_size {cfg.batch_size} is not a multiple of micro_batch_size x processes = "
                        f"{cfg.micro_batch_size} x {world}", field="batch_size")
    accum = cfg.batch_size // per_step
    import torch

    dtype = resolve_dtype(cfg.dtype)
    on_gpu = torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=str(run / "checkpoints"), per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=accum, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1, learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
        max_grad_norm=cfg.max_grad_norm, optim="adamw_torch", logging_steps=cfg.logging_steps,
        save_strategy="steps" if cfg.save_steps > 0 else "no", save_steps=max(cfg.save_steps, 1),
        save_total_limit=max(cfg.save_total_limit, 1), seed=cfg.seed, data_seed=cfg.seed,
        train_sampling_strategy="sequential",  # the mixture's order is the method: no second shuffle
        remove_unused_columns=False, report_to="none", disable_tqdm=not cfg.progress,
        bf16=on_gpu and dtype == torch.bfloat16, fp16=on_gpu and dtype == torch.float16,
        ddp_find_unused_parameters=False, dataloader_num_workers=0,
        use_cpu=not on_gpu)  # accelerate sets up gloo for several CPU processes only when told it runs on CPU
    if args.world_size != world:
        # Each process would otherwise train alone on the whole mixture, silently.
        raise TellError(f"WORLD_SIZE is {world} but the trainer sees {args.world_size} process(es); launch with "
                        "`accelerate launch` or `torchrun`")
    # The main process checks and claims the run folder first; the others then only read it.
    with args.main_process_first(desc="run folder"):
        if args.process_index == 0:
            ckpt = _start_or_resume(cfg, run, resolved)
        else:
            ckpt = last_complete_checkpoint(run / "checkpoints") if cfg.resume else None

    set_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
    data = tokenize_mixture(Path(cfg.mixture) / MIXTURE, tokenizer, max_length=cfg.max_length,
                            length_policy=cfg.length_policy, train_on_prompt=cfg.train_on_prompt,
                            progress=cfg.progress)
    model = load_model(cfg.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                       attn_implementation=cfg.attn_implementation)
    model = add_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                     target_modules=cfg.target_modules, gradient_checkpointing=cfg.gradient_checkpointing)
    can_pack = supports_packing(model)
    if cfg.packing == "on" and not can_pack:
        raise TellError(f"packing is not supported by this model's attention code ({type(model.get_base_model()).__name__}); "
                        "use --packing off", field="packing")
    packed = cfg.packing == "on" or (cfg.packing == "auto" and can_pack)
    trainable, total = model.get_nb_trainable_parameters()

    tokens_seen = (0, 0)
    if args.process_index == 0:
        if not (run / "config.json").is_file():
            run.mkdir(parents=True, exist_ok=True)
            write_json(run / "config.json", {
                "config": resolved,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "seeds": {"training": cfg.seed, "mixture": mixture_manifest.get("seeds")},
                "mixture_sha256": sha256_file(Path(cfg.mixture) / MIXTURE),
                "packages": provenance.package_versions(), "packing": packed,
                "gradient_accumulation_steps": accum, "processes": world,
                "trainable_parameters": trainable, "total_parameters": total})
            write_json(run / "mixture_manifest.json", mixture_manifest)
        if ckpt is not None:
            tokens_seen = _trim_log(run / "train_log.jsonl", int(ckpt.name.split("-")[-1]))
        else:
            (run / "train_log.jsonl").unlink(missing_ok=True)
    trainer = TellTrainer(model=model, args=args, train_dataset=ListDataset(data.examples),
                          data_collator=Collator(pad_id=tokenizer.pad_token_id, packed=packed,
                                                 row_length=cfg.max_length),
                          callbacks=[JsonlLog(run / "train_log.jsonl"), MarkComplete()],
                          divergence_factor=cfg.divergence_factor, tokens_seen=tokens_seen)
    if not cfg.progress:  # our train_log.jsonl has every logged figure; no dict per step on stdout
        from transformers import PrinterCallback
        trainer.remove_callback(PrinterCallback)
    t0 = time.perf_counter()
    try:
        out = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    except TrainingDiverged as e:
        last = last_complete_checkpoint(run / "checkpoints")
        keep = f"the last good checkpoint is {last} (resume with --resume after changing nothing, or start " \
               "again with a lower --learning-rate)" if last else "no checkpoint was saved before it"
        raise TellError(f"training stopped: {e}; {keep}", file=str(run)) from e
    seconds = time.perf_counter() - t0

    if not trainer.is_world_process_zero():
        return {}
    _save_adapter(model, tokenizer, run / "adapter")
    log_path = run / "train_log.jsonl"
    log = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()] if log_path.is_file() else []
    last = log[-1] if log else {}
    metrics = {
        "steps": trainer.state.global_step, "epochs": cfg.epochs, "examples": len(data.examples),
        "length_policy": dict(data.counts), "train_loss": out.training_loss,
        "final_loss": last.get("loss"), "final_loss_task": last.get("loss_task"),
        "final_loss_general": last.get("loss_general"),
        "tokens_task": last.get("tokens_task"), "tokens_general": last.get("tokens_general"),
        "seconds": round(seconds, 3), "resumed_from": ckpt.name if ckpt else None, "packing": packed,
        "optimizer_steps_per_epoch": -(-len(data.examples) // cfg.batch_size),
    }
    write_json(run / "metrics.json", metrics)
    return metrics
