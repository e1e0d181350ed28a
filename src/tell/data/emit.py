"""The mixture in other trainers' formats (`tell prepare --emit`), written beside `mixture.jsonl`, in its order.

    messages           mixture.messages.jsonl            {"messages": [...], "tools": [...]}
    prompt-completion  mixture.prompt-completion.jsonl   {"prompt": [...], "completion": [...], "tools": [...]}

`messages` is TRL's conversational language-modeling format and what LLaMA-Factory reads as `formatting:
sharegpt` with role/content tags; `prompt-completion` is TRL's conversational prompt-completion format,
whose loss TRL computes on the completion alone, as `tell train` does. Each message list is the record's
system text (with the anchor where `prepare` placed it), earlier turns, prompt and answer, as
`tell.data.records.chat_messages` makes it (tool calls as `tool_calls`, tool results with role `tool`);
`tools` appears on rows that offer tools. Other trainers shuffle by default: the order, which is the method,
is kept only where the trainer is told to keep it. So each emit comes with the trainer configs that read it in
order, under `trainers/` (`CONFIGS`), each a file the trainer runs as it is:

    messages           trainers/dataset_info.json + llamafactory_sft.yaml   llamafactory-cli train ...yaml
                       (disable_shuffling: true), trainers/axolotl.yaml     axolotl train ...yaml
                       (shuffle_merged_datasets: false, curriculum_sampling: true: a sequential sampler),
                       trainers/swift_sft.sh (--dataset_shuffle false --train_dataloader_shuffle false)
    prompt-completion  trainers/trl_sft.yaml   trl sft --config ...yaml  (train_sampling_strategy: sequential)

The configs carry `tell train`'s defaults (one epoch, LoRA r 8 / alpha 32 / dropout 0.05 on every linear layer,
lr 1e-4, batch 16 as 4 x 4, linear schedule, 3% warm-up) and name the tokenizer the mixture was counted with as
the model: set the model (and LLaMA-Factory's `template`) where that is not the model to train.

A leaf module (no config import), so that `config` can take `EMITS` from it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

import orjson

from tell.data.records import Record, chat_messages
from tell.io import atomic_open

EMITS = ("messages", "prompt-completion")
FILES = {"messages": "mixture.messages.jsonl", "prompt-completion": "mixture.prompt-completion.jsonl"}
CONFIGS = {"messages": ("trainers/dataset_info.json", "trainers/llamafactory_sft.yaml", "trainers/axolotl.yaml",
                        "trainers/swift_sft.sh"),
           "prompt-completion": ("trainers/trl_sft.yaml",)}
# tell train's defaults, as the peers spell them (tell.train.config.TrainConfig holds the same values)
TELL_DEFAULTS = {"epochs": 1.0, "lora_r": 8, "lora_alpha": 32, "lora_dropout": 0.05, "learning_rate": 1e-4,
                 "micro_batch_size": 4, "accumulation": 4, "warmup_ratio": 0.03, "max_length": 1024}


def emit_row(kind: str, rec: Record) -> dict[str, Any]:
    msgs = chat_messages(rec)
    row: dict[str, Any] = {"messages": msgs} if kind == "messages" else {"prompt": msgs[:-1], "completion": msgs[-1:]}
    if rec.tools:
        row["tools"] = rec.tools
    return row


NEXT = ".next"  # a new emit waits as FILE.next, like the mixture, until the manifest naming it is in place


# LLaMA-Factory's `template: default` is its own format, not the model's: with no `template` key it parses the
# tokenizer's chat template, the one tell trains with (and uses `empty` when the tokenizer has none)
LF_TEMPLATE_NOTE = ("# no `template:` key on purpose: LLaMA-Factory then renders with the tokenizer's own chat "
                    "template, as tell does\n# (`template: default` would be LLaMA-Factory's format instead); for a "
                    "model without one, name a template here\n")


def shell_command(words: list[str], flags: list[tuple[str, object]]) -> str:
    """One shell command over several lines, every value quoted (`shlex.quote`): a path with a space, `$(...)` or
    backticks is passed as it is and never runs when the user runs the script."""
    import shlex

    parts = [" ".join(shlex.quote(w) for w in words)] + [f"{flag} {shlex.quote(str(v))}" for flag, v in flags]
    return " \\\n    ".join(parts) + "\n"


def trainer_configs(kind: str, data: Path, model: str, max_length: int | None, seed: int) -> dict[str, str]:
    """{file under the folder: text} of the peers' configs that train on the emitted file `data` in its order."""
    import json

    import yaml

    d, length = TELL_DEFAULTS, max_length or TELL_DEFAULTS["max_length"]
    run = f"runs/{data.parent.name}"
    note = (f"# written by `tell prepare --emit {kind}`: trains on {data.name} in the mixture's order (the order is "
            "TELL's method: no shuffle anywhere)\n# model: the tokenizer the mixture was counted with; set the model "
            "to train if that is not it\n")
    dump = lambda obj: note + yaml.safe_dump(obj, sort_keys=False)  # noqa: E731
    if kind == "prompt-completion":
        return {"trainers/trl_sft.yaml": "# on a CPU, add: use_cpu: true and bf16: false (SFTConfig's bf16 default "
                "needs a GPU)\n" + dump({
            "model_name_or_path": model, "datasets": [{"path": "json", "data_files": str(data), "split": "train"}],
            "train_sampling_strategy": "sequential", "data_seed": seed, "seed": seed, "completion_only_loss": True,
            "max_length": length, "num_train_epochs": d["epochs"], "learning_rate": d["learning_rate"],
            "per_device_train_batch_size": d["micro_batch_size"], "gradient_accumulation_steps": d["accumulation"],
            "lr_scheduler_type": "linear", "warmup_steps": d["warmup_ratio"],  # transformers 5: a float < 1 is a share
            "use_peft": True,
            "lora_r": d["lora_r"], "lora_alpha": d["lora_alpha"], "lora_dropout": d["lora_dropout"],
            "lora_target_modules": "all-linear", "output_dir": run + "-trl", "report_to": "none"})}
    info = {"tell_mixture": {"file_name": str(data), "formatting": "sharegpt",
                             "columns": {"messages": "messages", "tools": "tools"},
                             "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                      "assistant_tag": "assistant", "system_tag": "system", "observation_tag": "tool"}}}
    swift = [("--model", model), ("--dataset", data), ("--train_type", "lora"), ("--dataset_shuffle", "false"),
             ("--train_dataloader_shuffle", "false"), ("--data_seed", seed), ("--seed", seed), ("--max_length", length),
             ("--num_train_epochs", f"{d['epochs']:g}"), ("--learning_rate", f"{d['learning_rate']:g}"),
             ("--per_device_train_batch_size", d["micro_batch_size"]),
             ("--gradient_accumulation_steps", d["accumulation"]), ("--lora_rank", d["lora_r"]),
             ("--lora_alpha", d["lora_alpha"]), ("--lora_dropout", d["lora_dropout"]), ("--target_modules", "all-linear"),
             ("--warmup_ratio", d["warmup_ratio"]), ("--lr_scheduler_type", "linear"), ("--split_dataset_ratio", 0),
             ("--output_dir", f"{run}-swift")]
    return {
        "trainers/dataset_info.json": json.dumps(info, indent=1) + "\n",
        "trainers/llamafactory_sft.yaml": LF_TEMPLATE_NOTE + dump({
            "model_name_or_path": model, "stage": "sft", "do_train": True, "finetuning_type": "lora",
            "lora_target": "all", "lora_rank": d["lora_r"], "lora_alpha": d["lora_alpha"],
            "lora_dropout": d["lora_dropout"], "dataset": "tell_mixture", "dataset_dir": str(data.parent / "trainers"),
            "cutoff_len": length, "disable_shuffling": True, "val_size": 0, "seed": seed,
            "num_train_epochs": d["epochs"], "learning_rate": d["learning_rate"],
            "per_device_train_batch_size": d["micro_batch_size"], "gradient_accumulation_steps": d["accumulation"],
            "lr_scheduler_type": "linear", "warmup_ratio": d["warmup_ratio"], "output_dir": run + "-llamafactory",
            "report_to": "none"}),
        "trainers/axolotl.yaml": dump({
            "base_model": model, "datasets": [{"path": str(data), "ds_type": "json", "type": "chat_template",
                                                "field_messages": "messages",
                                                "message_property_mappings": {"role": "role", "content": "content"}}],
            "shuffle_merged_datasets": False, "shuffle_before_merging_datasets": False, "curriculum_sampling": True,
            "sample_packing": False, "val_set_size": 0.0, "seed": seed, "sequence_len": length, "train_on_inputs": False,
            "adapter": "lora", "lora_r": d["lora_r"], "lora_alpha": d["lora_alpha"], "lora_dropout": d["lora_dropout"],
            "lora_target_linear": True, "num_epochs": d["epochs"], "learning_rate": d["learning_rate"],
            "micro_batch_size": d["micro_batch_size"], "gradient_accumulation_steps": d["accumulation"],
            "lr_scheduler": "linear", "warmup_ratio": d["warmup_ratio"], "output_dir": run + "-axolotl",
            "dataset_prepared_path": run + "-axolotl/prepared"}),
        "trainers/swift_sft.sh": note + "set -e\n" + shell_command(["swift", "sft"], swift),
    }


def write_emits(folder: Path, kinds: Iterable[str], mixture: list[Record], *, model: str | None = None,
                max_length: int | None = None, seed: int = 42) -> dict[str, dict]:
    """Each asked-for format and its trainer configs (`trainer_configs`), atomically, as FILE.next beside the old
    files (which stay as the old manifest records them until `move_in_emits`); returns {kind: {file, sha256,
    examples, configs: {file: sha256}}} for the manifest."""
    out = {}
    folder = Path(folder)
    for kind in (k for k in EMITS if k in set(kinds)):
        digest = hashlib.sha256()
        with atomic_open(folder / (FILES[kind] + NEXT), "wb") as f:
            for rec in mixture:
                line = orjson.dumps(emit_row(kind, rec), option=orjson.OPT_APPEND_NEWLINE)
                digest.update(line)
                f.write(line)
        configs = {}
        for name, text in trainer_configs(kind, folder.resolve() / FILES[kind], model or "MODEL", max_length,
                                          seed).items():
            (folder / name).parent.mkdir(exist_ok=True)
            with atomic_open(folder / (name + NEXT)) as f:
                f.write(text)
            configs[name] = hashlib.sha256(text.encode()).hexdigest()
        out[kind] = {"file": FILES[kind], "sha256": digest.hexdigest(), "examples": len(mixture), "configs": configs}
    return out


def move_in_emits(folder: Path, emitted: dict[str, dict]) -> None:
    """Once the manifest is written: each FILE.next it records becomes FILE (only when its sha256 is the
    recorded one), and an emit of an earlier prepare that this manifest does not record is removed (it belongs
    to no mixture now). Called again by every reader of the folder (`MixtureDir.verify`): a prepare stopped
    between its manifest and these moves is completed there."""
    import contextlib
    import os

    from tell.io import sha256_file

    folder = Path(folder)
    for kind, entry in emitted.items():
        for name, sha in {entry["file"]: entry["sha256"], **entry.get("configs", {})}.items():
            nxt = folder / (name + NEXT)
            if nxt.is_file() and sha256_file(nxt) == sha:
                with contextlib.suppress(FileNotFoundError):
                    os.replace(nxt, folder / name)
    for kind, name in FILES.items():
        if kind not in emitted:
            for stale in (name, *CONFIGS[kind]):
                for path in (folder / stale, folder / (stale + NEXT)):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
    with contextlib.suppress(OSError):
        (folder / "trainers").rmdir()  # only when no emit left a config there
