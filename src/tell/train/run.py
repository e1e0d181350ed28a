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

import contextlib
import datetime
import json
import os
import shutil
import sys
import time
from pathlib import Path

from tell import provenance
from tell.artifacts import MixtureDir, RunDir, mark_adapter, read_json
from tell.config import is_secret_name, refuse_secrets, to_dict  # noqa: F401 (is_secret_name: public here)
from tell.data.anchor import Anchor
from tell.prompting import use_template
from tell.train.config import TrainConfig, trackers
from tell.errors import TellError, template_errors
from tell.io import FOLDER_LOCK, atomic_open, folder_lock, remove_stale_tmp, write_json
from tell.models import (check_vocab, gguf_provenance, library_progress, load_model, load_tokenizer, quantization_config, resolve_dtype,
                         resolve_model_path)
from tell.train.batching import Collator, ListDataset, length_warning, sorted_within_steps, tokenize_mixture
from tell.train.model import add_lora, packing_is_isolated, supports_packing
from tell.train.health import MIN_STEPS, assess
from tell.train.live_eval import LiveEval, load_sets
from tell.train.schedule import optimizer_steps, warmup_steps
from tell.train.trainer import (JsonlLog, ProgressLines, TellTrainer, TrainingDiverged, checkpoints,
                                last_complete_checkpoint, resume_point)

# Settings that may differ between a run and its resumption without changing what is computed.
_RESUME_FREE = ("resume", "progress", "report_to", "run_name")
# Settings that name a file or folder: `./mix/` and `mix` are the same setting.
_PATHS = ("mixture", "model", "out")


def _same_setting(key: str, old, new) -> bool:
    if old == new:
        return True
    if key not in _PATHS or not isinstance(old, str) or not isinstance(new, str):
        return False
    if os.path.normpath(old) == os.path.normpath(new):
        return True
    try:  # the same folder spelt another way (absolute, through a link)
        return os.path.samefile(old, new)
    except OSError:
        return False


# TrainConfig field -> the TrainingArguments field it is copied to, as it is. Everything else TrainingArguments
# gets is derived below (accumulation, checkpointing, precision, ...) or passed through `training_args`.
TO_TRAINING_ARGS = {
    "micro_batch_size": "per_device_train_batch_size", "epochs": "num_train_epochs",
    "learning_rate": "learning_rate", "weight_decay": "weight_decay", "lr_scheduler": "lr_scheduler_type",
    "max_grad_norm": "max_grad_norm", "logging_steps": "logging_steps", "seed": "seed",
}




def _check(cfg: TrainConfig) -> None:
    for name in ("mixture", "model", "out"):
        if not getattr(cfg, name):
            raise TellError(f"no --{name} given", field=name)
    # the values themselves (learning rate > 0, epochs > 0, warmup share, ...) are checked by TrainConfig
    quantization_config(cfg.quantization, cfg.dtype)  # QLoRA where it cannot run: refused before anything is read
    if bool(cfg.eval_data or cfg.eval_general_data) != bool(cfg.eval_steps):
        raise TellError("evaluation during training needs both --eval-data (or --eval-general-data) and --eval-steps",
                        field="eval_steps")
    if cfg.eval_steps and (sharding := _sharded(cfg.training_args)):
        raise TellError(f"--eval-steps generates on the main process alone, which a model sharded across processes "
                        f"({sharding}) cannot do: the other processes hold the rest of its weights; evaluate after "
                        "training with `tell eval`, or shard less (DDP, ZeRO-1/2)", field="eval_steps")


def _sharded(training_args: dict) -> str | None:
    """"FSDP" or "DeepSpeed ZeRO-3" when the run shards the model's weights across processes (asked for by
    `--training-arg fsdp=... / deepspeed=CONFIG` or by `accelerate launch`'s config, which it passes on in the
    environment), else None: FSDP's NO_SHARD strategy is data parallelism, the whole weights on every process.
    A DeepSpeed config that cannot be read is left to TrainingArguments to refuse."""
    on = lambda name: os.environ.get(name, "false").lower() in ("1", "true")  # noqa: E731
    if fsdp := training_args.get("fsdp"):  # TrainingArguments' option string: "no_shard" keeps whole weights
        if "no_shard" not in str(fsdp).lower().split():
            return "FSDP"
    elif on("ACCELERATE_USE_FSDP"):  # FSDP2 always shards; FSDP1 unless its strategy is NO_SHARD (name or 3)
        strategy = os.environ.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD").upper()
        if os.environ.get("FSDP_VERSION", "1") == "2" or strategy not in ("NO_SHARD", "3"):
            return "FSDP"
    stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") if on("ACCELERATE_USE_DEEPSPEED") else None
    ds = training_args.get("deepspeed") or (os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
                                            if on("ACCELERATE_USE_DEEPSPEED") else None)
    if isinstance(ds, (str, os.PathLike)) and Path(ds).is_file():
        with contextlib.suppress(ValueError, OSError):
            ds = json.loads(Path(ds).read_text(encoding="utf-8"))
    if isinstance(ds, dict):
        stage = (ds.get("zero_optimization") or {}).get("stage", stage)
    return "DeepSpeed ZeRO-3" if str(stage) == "3" else None


def _check_not_empty(mix: MixtureDir, manifest: dict) -> None:
    """A mixture of 0 examples (prepared before tell refused to write one) is refused, saying why it is empty."""
    if not manifest["mixture"].get("examples"):
        budget = manifest.get("budget") or {}
        raise TellError(f"the mixture holds no example (budgets: task {budget.get('task_tokens_requested')}, general "
                        f"{budget.get('general_tokens_requested')} tokens; dropped per reason: "
                        f"{manifest.get('dropped') or {}}); prepare it again with budgets its examples can meet",
                        file=str(mix.path))


def _check_answers_end(tokenizer, model: str) -> None:
    """A tokenizer with no EOS token and no chat template that closes a turn with a special token gives answers
    that never end: trained on them, the model learns never to stop. Refused by name."""
    from tell.prompting import stop_ids

    if not stop_ids(tokenizer):
        raise TellError(f"the tokenizer of {model} has no EOS token (eos_token is unset) and no chat template that "
                        "closes an answer with a special token: trained answers would never end, and generation "
                        "would never stop; set eos_token in its tokenizer_config.json", field="model")


def _accumulation(cfg: TrainConfig) -> tuple[int, int]:
    """(processes, gradient accumulation steps) so that batch_size = micro batch x accumulation x processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = cfg.micro_batch_size * world
    if cfg.batch_size % per_step:
        raise TellError(f"batch_size {cfg.batch_size} is not a multiple of micro_batch_size x processes = "
                        f"{cfg.micro_batch_size} x {world}", field="batch_size")
    return world, cfg.batch_size // per_step


def _trackers(value: str) -> list[str]:
    """--report-to's trackers, each refused in one line when its package is missing (transformers would fail
    mid-setup); [] for none."""
    import importlib.util

    names = trackers(value)
    for name in names:
        needs = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",)}[name]
        if not any(importlib.util.find_spec(m) for m in needs):
            raise TellError(f"--report-to {name} needs the {needs[0]} package (pip install {needs[0]})",
                            field="report_to")
    return names or ["none"]


# TrainingArguments settings of HF's own evaluation loop (an eval loss on an eval_dataset tell never passes)
_HF_EVAL = ("eval_strategy", "evaluation_strategy", "do_eval", "eval_steps", "eval_delay", "eval_on_start",
            "load_best_model_at_end", "metric_for_best_model", "greater_is_better", "prediction_loss_only")


def training_arguments(cfg: TrainConfig, run: RunDir, accum: int):
    """TrainingArguments from the config: the mapped fields, tell's own choices, then the pass-through."""
    import torch
    from transformers import TrainingArguments

    dtype, on_gpu = resolve_dtype(cfg.dtype), torch.cuda.is_available()
    own = {
        "output_dir": str(run.checkpoints), "gradient_accumulation_steps": accum,
        "max_steps": cfg.max_steps or -1,
        # the schedule is tell's own (TellTrainer.create_scheduler, from cfg.warmup_ratio): none of HF's here
        "warmup_steps": 0,
        "optim": "adamw_torch", "save_strategy": "steps" if cfg.save_steps > 0 else "no",
        "save_steps": max(cfg.save_steps, 1), "save_total_limit": max(cfg.save_total_limit, 1),
        "data_seed": cfg.seed,
        "train_sampling_strategy": "sequential",  # the mixture's order is the method: no second shuffle
        "remove_unused_columns": False, "disable_tqdm": not cfg.progress,
        "report_to": _trackers(cfg.report_to), "run_name": cfg.run_name or run.path.name,
        "bf16": on_gpu and dtype == torch.bfloat16, "fp16": on_gpu and dtype == torch.float16,
        "ddp_find_unused_parameters": False, "dataloader_num_workers": 0,
        "use_cpu": not on_gpu,  # accelerate sets up gloo for several CPU processes only when told it runs on CPU
    }
    mapped = {hf: getattr(cfg, ours) for ours, hf in TO_TRAINING_ARGS.items()}
    refuse_secrets(cfg.training_args)  # checked when the config is made too; code may have changed it since
    hf_eval = sorted(set(cfg.training_args) & set(_HF_EVAL))
    if hf_eval:
        raise TellError(f"{hf_eval}: the Trainer's own evaluation needs an eval dataset tell does not give it; evaluate "
                        "with tell's metrics instead: --eval-data SET (--eval-general-data SET) --eval-steps N",
                        field="training_args")
    clash = sorted(set(cfg.training_args) & (set(own) | set(mapped)))
    if clash:
        raise TellError(f"{clash} are set by tell itself; use its own settings instead", field="training_args")
    known = {f for f in TrainingArguments.__dataclass_fields__}
    unknown = sorted(set(cfg.training_args) - known)
    if unknown:
        raise TellError(f"unknown TrainingArguments setting(s) {unknown}", field="training_args")
    try:
        return TrainingArguments(**own, **mapped, **cfg.training_args)
    except (TypeError, ValueError) as e:
        raise TellError(f"TrainingArguments refused the settings: {e}", field="training_args") from e


def _start_or_resume(cfg: TrainConfig, run: RunDir, resolved: dict, mixture_sha: str) -> Path | None:
    """Refuse to overwrite a run; on --resume check the config and the mixture match and find the checkpoint."""
    if not run.started():
        if cfg.resume:
            raise TellError("nothing to resume: no config.json", file=str(run.path))
        if run.path.is_dir():
            remove_stale_tmp(run.path, every_file=True)  # a run killed while writing its first file
        if run.path.exists() and any(p.name != FOLDER_LOCK for p in run.path.iterdir()):
            raise TellError("the run folder is not empty; choose a new --out", file=str(run.path))
        return None
    if not cfg.resume:
        raise TellError("the run folder already holds a run; pass --resume to continue it or choose a new --out",
                        file=str(run.path))
    if run.finished():
        raise TellError("the run already finished (metrics.json exists); nothing to resume", file=str(run.path))
    saved = run.config()
    diff = sorted(k for k in resolved if k not in _RESUME_FREE and not _same_setting(k, saved.get(k), resolved[k]))
    if diff:
        raise TellError(f"--resume with settings that differ from the run's: {diff}; resume with the same "
                        "settings or start a new run", file=str(run.config_path))
    started_with = read_json(run.config_path, "a `tell train` run folder").get("mixture_sha256")
    if started_with != mixture_sha:
        raise TellError(f"--resume with another mixture: {cfg.mixture} now holds mixture.jsonl sha256 "
                        f"{mixture_sha[:12]}, the run started with {str(started_with)[:12]} (prepared again?); resume "
                        "with the mixture it started with or start a new run", file=str(run.config_path))
    return _resume_checkpoint(run)


def _resume_checkpoint(run: RunDir) -> Path | None:
    """The checkpoint --resume continues from. Never silently from step 0 when there is work to continue:
    damaged newer checkpoints are named and skipped; checkpoints of which none is usable are refused."""
    ckpt, damaged = resume_point(run.checkpoints)
    if damaged and ckpt is None:
        bad, why = damaged[0]
        raise TellError(f"{bad.name} is damaged ({why}) and no earlier complete checkpoint is intact; delete "
                        f"{' and '.join(str(b) for b, _ in damaged)} and resume to train again from step 0",
                        file=str(run.path))
    for bad, why in damaged:
        print(f"tell: warning: {bad.name} is damaged ({why}); resuming from {ckpt.name} instead (the steps after "
              "it are trained again)", file=sys.stderr)
    if ckpt is None and checkpoints(run.checkpoints):
        raise TellError(f"{run.checkpoints} holds checkpoints but none was marked complete (the process died "
                        f"while saving); delete {run.checkpoints} and resume to train again from step 0",
                        file=str(run.path))
    if ckpt is None and run.log():
        print("tell: note: no checkpoint was saved before the run stopped; training again from step 0",
              file=sys.stderr)
    return ckpt


def _claim(args, cfg: TrainConfig, run: RunDir, resolved: dict, mixture_sha: str,
           hold: contextlib.ExitStack) -> Path | None:
    """The main process locks the run folder (held in `hold` until the run ends: a second `tell train` on it is
    refused before it writes anything), checks and claims it first; the others then only read it."""
    with args.main_process_first(desc="run folder"):
        if args.process_index == 0:
            hold.enter_context(folder_lock(run.path, "a `tell train` run"))
            return _start_or_resume(cfg, run, resolved, mixture_sha)
        return last_complete_checkpoint(run.checkpoints) if cfg.resume else None


def _trim_log(run: RunDir, step: int) -> tuple[int, int]:
    """Drop log lines and checkpoints past the checkpoint we resume from (that work is redone: a damaged or
    unfinished later checkpoint is never taken for the newest one again); return tokens seen then."""
    for later in checkpoints(run.checkpoints):
        if int(later.name.split("-")[-1]) > step:
            shutil.rmtree(later, ignore_errors=True)
    kept = [r for r in run.log(evals=True) if r["step"] <= step]
    with atomic_open(run.log_path) as f:
        for r in kept:
            f.write(json.dumps(r) + "\n")
    losses = [r for r in kept if "eval" not in r]
    return (losses[-1]["tokens_task"], losses[-1]["tokens_general"]) if losses else (0, 0)


def _save_adapter(model, tokenizer, dest: Path) -> dict:
    """Write the adapter into a temp folder beside `dest`, then swap it in; returns its weight files' sha256."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    sums = mark_adapter(tmp)  # eval refuses the adapter once its weight bytes differ from these
    old = dest.with_name(dest.name + ".old")
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    return sums


def _lora_model(cfg: TrainConfig) -> tuple[object, bool, str | None]:
    """(the base model with LoRA, whether examples are packed, why packing fell back to padding or None)."""
    model = load_model(cfg.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                       attn_implementation=cfg.attn_implementation, quantization=cfg.quantization)
    model = add_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                     target_modules=cfg.target_modules, gradient_checkpointing=cfg.gradient_checkpointing,
                     dora=cfg.dora, rslora=cfg.rslora)
    can_pack = supports_packing(model)
    if cfg.packing == "on" and not can_pack:
        raise TellError(f"packing is not supported by this model's attention code "
                        f"({type(model.get_base_model()).__name__}); use --packing off", field="packing")
    if cfg.packing == "off" or not can_pack:
        return model, False, None
    # The source check above trusts the model's code; this one measures that packed examples stay apart.
    isolated, measured = packing_is_isolated(model)
    if isolated:
        return model, True, None
    if cfg.packing == "on":
        raise TellError(f"packed examples attend to each other in this model ({measured}); use --packing off",
                        field="packing")
    return model, False, f"packing off: packed examples attended to each other ({measured}); padded instead"


def _order(cfg: TrainConfig, examples: list[dict], packed: bool) -> list[dict]:
    """The examples in the order the trainer reads them: padded, each step's examples grouped by length into its
    micro-batches (`sorted_within_steps`); packed rows are balanced within each micro-batch already (Collator)."""
    if cfg.sort_within_step and not packed and cfg.batch_size > cfg.micro_batch_size:
        return sorted_within_steps(examples, cfg.batch_size)
    return examples


def _write_header(run: RunDir, cfg: TrainConfig, resolved: dict, mix: MixtureDir, manifest: dict, **facts) -> None:
    """config.json (what the run is) and the mixture manifest's copy, once, when the run starts."""
    run.path.mkdir(parents=True, exist_ok=True)
    write_json(run.config_path, {
        "config": resolved,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seeds": {"training": cfg.seed, "mixture": manifest.get("seeds")},
        "mixture_sha256": manifest["mixture"]["sha256"],  # checked against mixture.jsonl (MixtureDir.verify)
        "anchor": manifest.get("anchor"),  # what training saw: an edited manifest copy is refused (RunDir.anchor)
        "packages": provenance.package_versions(), **facts})
    write_json(run.mixture_manifest_path, manifest)


def _fit(trainer, ckpt: Path | None, run: RunDir):
    try:
        return trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    except TrainingDiverged as e:
        last = last_complete_checkpoint(run.checkpoints)
        keep = f"the last good checkpoint is {last} (resume with --resume after changing nothing, or start " \
               "again with a lower --learning-rate)" if last else "no checkpoint was saved before it"
        raise TellError(f"training stopped: {e}; {keep}", file=str(run.path)) from e


def train_loss(log: list[dict]) -> float | None:
    """Mean loss per optimizer step over the whole run, every part of a resumed one (train_log.jsonl): a logged
    loss is the mean over the steps since the line before, so it counts once per step it covers. For a run in
    one part this is HF's `training_loss` (when the last step is logged, as with logging_steps 1)."""
    total, steps, prev = 0.0, 0, 0
    for r in log:
        total, steps, prev = total + r["loss"] * (r["step"] - prev), steps + r["step"] - prev, r["step"]
    return total / steps if steps else None


def _final_metrics(cfg: TrainConfig, run: RunDir, trainer, data, ckpt, packed: bool, seconds: float) -> dict:
    last = (run.log() or [{}])[-1]
    return {
        "steps": trainer.state.global_step, "epochs": cfg.epochs, "examples": len(data.examples),
        "length_policy": dict(data.counts), "train_loss": train_loss(run.log()),
        "final_loss": last.get("loss"), "final_loss_task": last.get("loss_task"),
        "final_loss_general": last.get("loss_general"),
        "tokens_task": last.get("tokens_task"), "tokens_general": last.get("tokens_general"),
        "seconds": round(seconds, 3), "resumed_from": ckpt.name if ckpt else None, "packing": packed,
        "optimizer_steps_per_epoch": optimizer_steps(len(data.examples), cfg.batch_size),
    }


def train(cfg: TrainConfig) -> dict:
    """Set up (config, folder, data, model) -> train -> save the adapter and metrics.json (written last). The run
    folder is locked from its first check to the end (`_claim`)."""
    with contextlib.ExitStack() as hold:
        return _train(cfg, hold)


def _train(cfg: TrainConfig, hold: contextlib.ExitStack) -> dict:
    from transformers import set_seed

    _check(cfg)
    library_progress(cfg.progress)
    cfg.model = resolve_model_path(cfg.model)  # config.json and the adapter name the base from anywhere
    base_gguf = gguf_provenance(cfg.model)  # a GGUF base: cfg.model is now its converted folder, this says which file
    mix, run, resolved = MixtureDir(cfg.mixture), RunDir(cfg.out), to_dict(cfg)
    manifest = mix.verify()
    _check_not_empty(mix, manifest)
    world, accum = _accumulation(cfg)
    args = training_arguments(cfg, run, accum)
    if args.world_size != world:
        # Each process would otherwise train alone on the whole mixture, silently.
        raise TellError(f"WORLD_SIZE is {world} but the trainer sees {args.world_size} process(es); launch with "
                        "`accelerate launch` or `torchrun`")
    ckpt = _claim(args, cfg, run, resolved, manifest["mixture"]["sha256"], hold)
    set_seed(cfg.seed)
    tokenizer = use_template(load_tokenizer(cfg.model, cfg.trust_remote_code), cfg.template)
    _check_answers_end(tokenizer, cfg.model)
    with template_errors(cfg.model):
        data = tokenize_mixture(mix, tokenizer, max_length=cfg.max_length, length_policy=cfg.length_policy,
                                train_on_prompt=cfg.train_on_prompt, progress=cfg.progress)
    warning = length_warning(data.counts, cfg.max_length)
    if warning and args.process_index == 0:
        print(warning, file=sys.stderr)
    model, packed, packing_note = _lora_model(cfg)
    check_vocab(model, tokenizer, cfg.model)
    # the sets evaluated during training, read and rendered now: a bad one is refused before anything is written
    live = LiveEval(load_sets(cfg, model, tokenizer, Anchor.from_json(manifest.get("anchor"))), tokenizer, cfg,
                    run.log_path) if cfg.eval_steps else None
    if packing_note and args.process_index == 0:
        print(f"tell: {packing_note}", file=sys.stderr)
    trainable, total = model.get_nb_trainable_parameters()
    tokens_seen = (0, 0)
    if args.process_index == 0:
        if not run.started():
            _write_header(run, cfg, resolved, mix, manifest, packing=packed, packing_note=packing_note,
                          gradient_accumulation_steps=accum, processes=world, trainable_parameters=trainable,
                          total_parameters=total, base_gguf=base_gguf)
        if ckpt is not None:
            tokens_seen = _trim_log(run, int(ckpt.name.split("-")[-1]))
        else:
            run.log_path.unlink(missing_ok=True)
    trainer = TellTrainer(model=model, args=args, train_dataset=ListDataset(_order(cfg, data.examples, packed)),
                          data_collator=Collator(pad_id=tokenizer.pad_token_id, packed=packed,
                                                 row_length=cfg.max_length),
                          callbacks=[JsonlLog(run.log_path)] + ([live] if live else []),
                          divergence_factor=cfg.divergence_factor, tokens_seen=tokens_seen,
                          warmup_ratio=cfg.warmup_ratio)
    _console_and_live(trainer, cfg, live, run, ckpt)
    t0 = time.perf_counter()
    _fit(trainer, ckpt, run)
    seconds = time.perf_counter() - t0
    if not trainer.is_world_process_zero():
        return {}
    return _finish(cfg, run, trainer, model, tokenizer, data, ckpt, packed, seconds,
                   {"packing_note": packing_note} if packing_note else {}, base_gguf)


def _console_and_live(trainer, cfg: TrainConfig, live, run: RunDir, ckpt) -> None:
    """The console callbacks for --progress / --no-progress; the evaluations during training get the trainer."""
    from transformers import PrinterCallback, ProgressCallback

    if live:
        live.trainer = trainer
        if ckpt is not None:  # evaluations up to the checkpoint are in the kept log; later ones run again
            live.done = {r["step"] for r in run.eval_log()}
    if not cfg.progress:  # our train_log.jsonl has every logged figure; no dict per step on stdout
        trainer.remove_callback(PrinterCallback)
    elif trainer.pop_callback(ProgressCallback):  # the bar, with one compact line per logged step
        trainer.add_callback(ProgressLines())


def _finish(cfg: TrainConfig, run: RunDir, trainer, model, tokenizer, data, ckpt, packed: bool, seconds: float,
            notes: dict, base_gguf: dict | None) -> dict:
    """The adapter (with its checksums) and metrics.json, written last: what makes the run finished."""
    adapter_sums = _save_adapter(model, tokenizer, run.adapter)
    metrics = _final_metrics(cfg, run, trainer, data, ckpt, packed, seconds)
    evals = run.eval_log()
    if evals:
        metrics["eval_during_training"] = {"steps": [r["step"] for r in evals], "last": evals[-1]["eval"]}
    metrics |= {"adapter_sha256": adapter_sums, **notes, "base_gguf": base_gguf,
                "health": _health(run, trainer.state.max_steps, cfg.warmup_ratio)}
    write_json(run.metrics_path, metrics)
    remove_stale_tmp(run.path, every_file=True)  # left by earlier, killed parts of the run
    return metrics


# Whether a run too short to judge says so on the console. A sweep turns it off in the processes that run its
# cells (`executors.quiet_libraries`): sft at a small budget is few steps by design, and the report says so once,
# in Run health, instead of once per cell.
FEW_STEPS_NOTICE = {"on": True}


def _health(run: RunDir, total: int, warmup_ratio: float) -> dict:
    """The run's health verdict (`tell.train.health`), with a warning for runs too short to judge."""
    verdict = assess(run.log(), warmup_steps(max(total, 1), warmup_ratio), total_steps=total)
    if verdict["verdict"] != "ok":
        print(f"tell: warning: the run is unstable: {'; '.join(verdict['reasons'])}", file=sys.stderr)
    elif verdict.get("few_steps") and FEW_STEPS_NOTICE["on"]:
        print(f"tell: warning: only {total} optimizer step(s); fewer than {MIN_STEPS} cannot show whether the "
              "run is stable, and learn little (more data, a smaller batch or --max-steps)", file=sys.stderr)
    return verdict
