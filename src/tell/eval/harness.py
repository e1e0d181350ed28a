"""`tell eval --lm-eval TASKS`: lm-evaluation-harness tasks on the base model plus the run's adapter.

The harness runs its own `hf` model (`HFLM(pretrained=BASE, peft=ADAPTER)`), so its numbers are the ones its
users know. What `tell` adds:

- **Roles.** A task defined in a `--lm-eval-include` folder is the user's own (role `task`): it gets the run's
  anchor on every user turn (the item and each few-shot example, as `tell eval` does for task sets; a `system`
  anchor goes to the system message) and is rendered with the chat template training used (the model's, or
  tell's plain template written as one). Registry tasks (hellaswag, gsm8k, ...) are general-ability tests (role
  `general`): no anchor, and the harness's own rendering, so their numbers compare with published ones.
  `--lm-eval-chat-template` changes which tasks get the chat template.
- **Intervals.** Per-item metrics that the harness averages (acc, acc_norm, exact_match) get tell's 95%
  percentile bootstrap over items, like every other number in `metrics.json`; metrics the harness aggregates
  otherwise (corpus BLEU, perplexity) and groups get value +/- 1.96 x the harness's standard error, labelled.
- **Provenance.** Results go into `metrics.json` under `lm_eval` (with the harness version, the task versions,
  the anchor, few-shot count, items), the per-item records into `lm_eval_samples.jsonl`. The harness's request
  cache sits under `lm_eval_cache/` in a folder named by a digest of the model, adapter checksum and settings,
  so a killed eval resumes where it stopped and another adapter never reuses its answers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from tell.data.anchor import Anchor
from tell.errors import TellError

SAMPLES = "lm_eval_samples.jsonl"
CACHE = "lm_eval_cache"


def _harness():
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise TellError("--lm-eval needs lm-evaluation-harness; install it with: pip install 'tell[lm-eval]'",
                        field="lm_eval") from None
    return lm_eval, TaskManager


def task_names(specs: list[str]) -> list[str]:
    """`--lm-eval a,b --lm-eval c` -> [a, b, c], each once, in order."""
    names = [n.strip() for s in specs for n in s.split(",") if n.strip()]
    return list(dict.fromkeys(names))


def requested(cfg) -> dict[str, str | None]:
    """{task name: role, or None where its source decides} from --lm-eval, --lm-eval-general, --lm-eval-task."""
    out: dict[str, str | None] = {}
    for field, role in (("lm_eval", None), ("lm_eval_general", "general"), ("lm_eval_task", "task")):
        for name in task_names(getattr(cfg, field)):
            if name in out:
                raise TellError(f"lm-eval task {name!r} is given twice (--lm-eval, --lm-eval-general, --lm-eval-task); "
                                "expected each task once", field=field)
            out[name] = role
    return out


def _under(path: Path, folders: list[Path]) -> bool:
    path = path.resolve()
    return any(path.is_relative_to(f) for f in folders)


def resolve_tasks(wanted: dict[str, str | None], include: list[str]) -> tuple[Any, dict[str, str]]:
    """(the harness's TaskManager, {name: role}). A task whose role is not given is the user's (role task) when
    it is defined in an include folder, a general-ability test otherwise. Names found in the include folders
    need only those folders indexed (fast); any other name needs the harness's whole registry (some seconds).
    Unknown names are refused before a model is loaded."""
    _, TaskManager = _harness()
    folders = []
    for d in include:
        if not Path(d).is_dir():
            raise TellError("no such folder; expected a folder of lm-evaluation-harness task YAML files",
                            file=d, field="lm_eval_include")
        folders.append(Path(d).resolve())
    manager = TaskManager(include_path=[str(f) for f in folders], include_defaults=False) if folders else None
    if manager is None or any(n not in manager.task_index for n in wanted):
        manager = TaskManager(include_path=[str(f) for f in folders] or None)
    unknown = [n for n in wanted if n not in manager.task_index]
    if unknown:
        raise TellError(f"unknown lm-evaluation-harness task(s) {unknown}; expected a task, group or tag of the "
                        "harness (lm-eval ls tasks) or one defined in a --lm-eval-include folder", field="lm_eval")
    roles = {}
    for n, role in wanted.items():
        path = manager.task_index[n].yaml_path
        roles[n] = role or ("task" if path is not None and _under(Path(path), folders) else "general")
    return manager, roles


def _anchored_text(original, anchor: Anchor, doc, doc_to_text=None):
    text = original(doc, doc_to_text)
    # a multiple-input task's index into its choices stays as it is; a system anchor is the system instruction
    return anchor.place(text) if isinstance(text, str) else text


def _load_anchored(manager, name: str, anchor: Anchor | None) -> list:
    """The task or group `name` as harness objects, each leaf task's user text (item and shots) anchored."""
    loaded = manager.load([name])
    for task in loaded["tasks"].values():
        if anchor is not None:
            task.doc_to_text = functools.partial(_anchored_text, task.doc_to_text, anchor)
    group = loaded.get("groups", {}).get(name)
    return [group] if group is not None else list(loaded["tasks"].values())


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return None


def _metric_entries(result: dict, samples: list[dict] | None, seed: int, resamples: int) -> dict:
    """{metric[,filter]: {value, ci95, ci}} from the harness's result row (and its per-item records)."""
    from tell.eval.metrics import mean_metric

    out = {}
    for key, value in result.items():
        if "," not in key or "_stderr," in key or _number(value) is None:
            continue
        metric, filt = key.split(",", 1)
        name = metric if filt == "none" else f"{metric},{filt}"
        per_item = [s.get(metric) for s in samples or [] if s.get("filter") == filt]
        values = [_number(v) for v in per_item]
        if values and None not in values and abs(sum(values) / len(values) - value) < 1e-9:
            entry = mean_metric(values, seed, resamples) | {"ci": "bootstrap over items (tell)"}
        else:
            stderr = _number(result.get(f"{metric}_stderr,{filt}"))
            ci = [value - 1.96 * stderr, value + 1.96 * stderr] if stderr is not None else [None, None]
            entry = {"value": float(value), "ci95": ci,
                     "ci": "value +/- 1.96 x the harness's standard error" if stderr is not None else "none"}
        out[name] = entry
    return out


def run(cfg, manager, roles: dict[str, str], *, adapter_dir: Path | None, adapter_sha256: str | None,
        anchor: Anchor | None, out: Path) -> dict:
    """Run the `--lm-eval` tasks; {"version", "tasks": {name: {...}}} for metrics.json, samples written."""
    import torch

    lm_eval, _ = _harness()
    from lm_eval.models.huggingface import HFLM

    from tell.io import atomic_open
    from tell.models import inference_tokenizer, resolve_dtype
    from tell.prompting import has_chat_template, plain_chat_template

    names = list(roles)
    tokenizer = inference_tokenizer(cfg.model, adapter_dir, cfg.trust_remote_code)
    native_template = has_chat_template(tokenizer)
    if not native_template:
        tokenizer.chat_template = plain_chat_template(tokenizer)
    lm = HFLM(pretrained=cfg.model, peft=str(adapter_dir) if adapter_dir else None, tokenizer=tokenizer,
              device="cuda" if torch.cuda.is_available() else "cpu", dtype=resolve_dtype(cfg.dtype),
              batch_size=cfg.batch_size, trust_remote_code=cfg.trust_remote_code)
    tasks, samples = {}, []
    for role in ("task", "general"):
        todo = [n for n in names if roles[n] == role]
        if not todo:
            continue
        use_anchor = anchor if role == "task" else None
        chat = cfg.lm_eval_chat_template == "all" or (cfg.lm_eval_chat_template == "task" and role == "task")
        setup = {"model": cfg.model, "adapter_sha256": adapter_sha256, "dtype": cfg.dtype, "role": role,
                 "anchor": use_anchor.to_json() if use_anchor else None, "chat": chat, "shots": cfg.shots,
                 "seed": cfg.shot_seed}
        objects = [o for n in todo for o in _load_anchored(manager, n, use_anchor)]
        res = lm_eval.simple_evaluate(
            model=lm, tasks=objects, task_manager=manager, num_fewshot=cfg.shots, limit=cfg.limit,
            use_cache=str(out / CACHE / _digest(setup) / "requests"), bootstrap_iters=cfg.bootstrap,
            log_samples=True, apply_chat_template=chat, fewshot_as_multiturn=chat,
            system_instruction=use_anchor.text if use_anchor and use_anchor.placement == "system" else None,
            random_seed=cfg.sample_seed, numpy_random_seed=cfg.sample_seed, torch_random_seed=cfg.sample_seed,
            fewshot_random_seed=cfg.shot_seed)
        for name, result in res["results"].items():
            items = res.get("samples", {}).get(name)
            tasks[name] = {"role": role, "requested": name in todo, "anchor": use_anchor.to_json() if use_anchor
                           else None, "chat_template": ("model's" if native_template else "tell plain") if chat
                           else None, "shots": res.get("n-shot", {}).get(name),
                           "items": len(items) if items is not None else result.get("sample_len"),
                           "version": res.get("versions", {}).get(name),
                           "metrics": _metric_entries(result, items, cfg.bootstrap_seed, cfg.bootstrap)}
        for name, items in res.get("samples", {}).items():
            samples += [{"task": name, "doc_id": s["doc_id"], "filter": s.get("filter"),
                         "arguments": [list(a) for a in s["arguments"]], "target": s.get("target"),
                         "response": s.get("filtered_resps"),
                         "scores": {m: s.get(m) for m in s.get("metrics", [])}} for s in items]
    with atomic_open(out / SAMPLES) as f:
        for s in samples:
            f.write(json.dumps(s, ensure_ascii=False, default=str) + "\n")
    return {"version": lm_eval.__version__, "samples": SAMPLES, "tasks": tasks}
