"""`tell eval --lm-eval TASKS`: lm-evaluation-harness tasks on the base model plus the run's adapter.

The harness runs its own `hf` model (`HFLM(pretrained=BASE, peft=ADAPTER)`), so its numbers are the ones its
users know. What `tell` adds:

- **Roles.** A task (or group, or tag) whose every task is defined in a `--lm-eval-include` folder is the user's
  own (role `task`): it gets the run's anchor on every user turn (the item and each few-shot example, as `tell eval`
  does for task sets; a `system` anchor is the harness's system instruction, which the harness joins to a task's
  description with the task's few-shot delimiter) and is rendered with the chat template training used (the
  model's, or tell's plain template written as one). Registry tasks (hellaswag, gsm8k, ...) are general-ability
  tests (role `general`): no anchor, and the harness's own rendering, so their numbers compare with published
  ones. `--lm-eval-general` / `--lm-eval-task` set the role whatever the source; `--lm-eval-chat-template` changes
  which tasks get the chat template. A task that puts each choice in the context (winogrande-style multiple
  inputs) cannot carry the anchor on its item: it is refused as a task.
- **Intervals.** Per-item metrics that the harness averages (acc, acc_norm, exact_match) get tell's 95%
  percentile bootstrap over items, like every other number in `metrics.json`; metrics the harness aggregates
  otherwise (corpus BLEU, perplexity) and groups get value +/- 1.96 x the harness's standard error, labelled.
- **Provenance.** Results go into `metrics.json` under `lm_eval` (with the harness version, the task versions,
  the anchor, few-shot count, items), the per-item records into `lm_eval_samples.jsonl`. The harness's request
  cache sits under `lm_eval_cache/`, in a folder named by a digest of what answers depend on besides the request
  (the adapter folder's content, the base model folder's files or Hub commit, dtype, role, anchor, template), so a
  killed eval resumes where it stopped and a changed adapter or model never reuses old answers.
- **Checked first.** Tasks are loaded and checked (`plan`) before a model is loaded or a file written.
- Decoding flags (`--greedy`, `--temperature`, `--max-new-tokens`, ...) apply to tell's own sets only; harness tasks
  use their own generation settings. `--shots`, `--limit`, `--batch-size` and the seeds apply to both.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tell.artifacts import EvalDir
from tell.data.anchor import Anchor
from tell.errors import TellError



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
    given = [s for field in ("lm_eval", "lm_eval_general", "lm_eval_task") for s in getattr(cfg, field)]
    if given and not out:
        raise TellError(f"no task name in {given!r}; expected lm-evaluation-harness task names", field="lm_eval")
    return out


def _under(path: Path, folders: list[Path]) -> bool:
    path = path.resolve()
    return any(path.is_relative_to(f) for f in folders)


def source_role(paths: list, folders: list[Path]) -> str:
    """The role a task's source gives it: the user's task when every file it runs is in an include folder."""
    return "task" if paths and all(p is not None and _under(Path(p), folders) for p in paths) else "general"


@dataclass
class Plan:
    """The requested harness tasks, loaded and checked before any model is: {role: top-level objects}, each name's
    role, the leaf tasks of each role, and the task manager that found them."""
    manager: Any
    roles: dict[str, str]
    objects: dict[str, list] = field(default_factory=dict)
    leaves: dict[str, list[str]] = field(default_factory=dict)


def _managers(include: list[str]):
    """Task managers to try, cheapest first: the include folders alone (fast), then with the harness's whole
    registry (some seconds: needed for registry names, and for include groups of registry tasks)."""
    _, TaskManager = _harness()
    folders = []
    for d in include:
        if not Path(d).is_dir():
            raise TellError("no such folder; expected a folder of lm-evaluation-harness task YAML files",
                            file=d, field="lm_eval_include")
        folders.append(Path(d).resolve())
    paths = [str(f) for f in folders]
    if folders:
        yield folders, TaskManager(include_path=paths, include_defaults=False)
    yield folders, TaskManager(include_path=paths or None)


def _load_all(manager, names: list[str]) -> dict[str, dict]:
    """{name: the harness's load result}; a name the manager cannot load raises (the caller decides)."""
    unknown = [n for n in names if n not in manager.task_index]
    if unknown:
        raise KeyError(unknown)
    return {n: manager.load([n]) for n in names}


def plan(wanted: dict[str, str | None], include: list[str], anchor: Anchor | None) -> Plan:
    """Find, load and check the requested tasks; anchor the user's tasks (role task). A task whose role is not given
    is the user's when every task it runs is defined in an include folder, a general-ability test otherwise.
    Everything that can be wrong with the request (an unknown name, a task file the harness cannot load, a task
    reached twice, an anchor the task cannot carry) is refused here, before a model is loaded or a file written."""
    loaded, error = None, None
    for folders, manager in _managers(include):
        try:
            loaded = _load_all(manager, list(wanted))
            break
        except KeyError as e:
            error = ("unknown", e.args[0])
        except Exception as e:  # noqa: BLE001 - the harness raises many kinds; the user's task file is at fault
            error = ("load", e)
    if loaded is None:
        kind, detail = error
        if kind == "unknown":
            raise TellError(f"unknown lm-evaluation-harness task(s) {detail}; expected a task, group or tag of the "
                            "harness (lm-eval ls tasks) or one defined in a --lm-eval-include folder", field="lm_eval")
        first = str(detail).strip().splitlines()[0] if str(detail).strip() else type(detail).__name__
        raise TellError(f"lm-evaluation-harness could not load the task(s): {type(detail).__name__}: {first}",
                        field="lm_eval")
    out = Plan(manager, {})
    seen: dict[str, str] = {}
    for name, role in wanted.items():
        tasks = loaded[name]["tasks"]
        for leaf in tasks:
            if leaf in seen:
                raise TellError(f"lm-eval task {leaf!r} is run by both {seen[leaf]!r} and {name!r}; expected each "
                                "task once", field="lm_eval")
            seen[leaf] = name
        if role is None:
            role = source_role([getattr(manager.task_index.get(leaf), "yaml_path", None)
                                or manager.task_index[name].yaml_path for leaf in tasks], folders)
        out.roles[name] = role
        use_anchor = anchor if role == "task" else None
        for leaf, task in tasks.items():
            if use_anchor is not None and getattr(task, "multiple_input", 0):
                raise TellError(f"lm-eval task {leaf!r} puts each choice in the context (multiple inputs): the "
                                "anchor cannot be placed on its item; run it with --lm-eval-general or --no-anchor",
                                field="lm_eval")
            if use_anchor is not None:
                task.doc_to_text = functools.partial(_anchored_text, task.doc_to_text, use_anchor)
        group = loaded[name].get("groups", {}).get(name)
        out.objects.setdefault(role, []).extend([group] if group is not None else list(tasks.values()))
        out.leaves.setdefault(role, []).extend(tasks)
    return out


def _anchored_text(original, anchor: Anchor, doc, doc_to_text=None):
    # Python-class tasks define doc_to_text(doc) only; configurable tasks take the few-shot template as well
    text = original(doc) if doc_to_text is None else original(doc, doc_to_text)
    # a system anchor is the harness's system instruction
    return anchor.place(text) if isinstance(text, str) else text


def _identity(name: str, model: Any = None) -> Any:
    """What a cached answer depends on beyond its request: a local folder's files (name, size, modification time:
    a re-export changes them), or a Hub id with the commit it was loaded at."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                      for p in folder.rglob("*") if p.is_file())
    return [name, getattr(getattr(model, "config", None), "_commit_hash", None)]


def _folder_sha256(folder: Path) -> str:
    from tell.io import sha256_file

    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(folder)}\0{sha256_file(p)}\0".encode())
    return h.hexdigest()


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
        values = [_number(s.get(metric)) for s in samples or [] if s.get("filter") == filt]
        if values and None not in values and abs(sum(values) / len(values) - value) < 1e-9:
            entry = mean_metric(values, seed, resamples) | {
                "ci": "bootstrap over items (tell)" if resamples else "none (--bootstrap 0)"}
        else:
            stderr = _number(result.get(f"{metric}_stderr,{filt}"))
            ci = [value - 1.96 * stderr, value + 1.96 * stderr] if stderr is not None else [None, None]
            entry = {"value": float(value), "ci95": ci,
                     "ci": "value +/- 1.96 x the harness's standard error" if stderr is not None else "none"}
        out[name] = entry
    return out


def run(cfg, todo: Plan, tokenizer, *, adapter_dir: Path | None, anchor: Anchor | None, folder: EvalDir) -> dict:
    """Run the planned tasks with the eval's tokenizer (`models.inference_tokenizer`); {"version", "samples",
    "tasks": {name: {...}}} for metrics.json; the per-item records written to lm_eval_samples.jsonl."""
    import torch

    lm_eval, _ = _harness()
    from lm_eval.models.huggingface import HFLM

    from tell.io import atomic_open
    from tell.models import resolve_dtype, resolve_model_path
    from tell.prompting import has_chat_template, plain_chat_template

    native_template = has_chat_template(tokenizer)
    if not native_template:
        tokenizer.chat_template = plain_chat_template(tokenizer)
    base = resolve_model_path(cfg.model)  # a GGUF's converted folder: HFLM loads it as any local model
    lm = HFLM(pretrained=base, peft=str(adapter_dir) if adapter_dir else None, tokenizer=tokenizer,
              device="cuda" if torch.cuda.is_available() else "cpu", dtype=resolve_dtype(cfg.dtype),
              batch_size=cfg.batch_size, trust_remote_code=cfg.trust_remote_code)
    weights = {"model": _identity(base, lm.model), "adapter": _folder_sha256(adapter_dir) if adapter_dir else None,
               "dtype": cfg.dtype}
    tasks, samples = {}, []
    for role in ("task", "general"):
        if role not in todo.objects:
            continue
        use_anchor = anchor if role == "task" else None
        chat = cfg.lm_eval_chat_template == "all" or (cfg.lm_eval_chat_template == "task" and role == "task")
        setup = weights | {"role": role, "anchor": use_anchor.to_json() if use_anchor else None, "chat": chat}
        res = lm_eval.simple_evaluate(
            model=lm, tasks=todo.objects[role], task_manager=todo.manager, num_fewshot=cfg.shots, limit=cfg.limit,
            use_cache=str(folder.lm_eval_cache / _digest(setup) / "requests"), bootstrap_iters=cfg.bootstrap,
            log_samples=True, apply_chat_template=chat, fewshot_as_multiturn=chat,
            system_instruction=use_anchor.text if use_anchor and use_anchor.placement == "system" else None,
            random_seed=cfg.sample_seed, numpy_random_seed=cfg.sample_seed, torch_random_seed=cfg.sample_seed,
            fewshot_random_seed=cfg.shot_seed)
        logged = res.get("samples", {})
        items = {name: len({s["doc_id"] for s in rows}) for name, rows in logged.items()}
        for name, children in res.get("group_subtasks", {}).items():
            if name not in items and children and all(c in items for c in children):
                items[name] = sum(items[c] for c in children)
        for name, result in res["results"].items():
            tasks[name] = {"role": role, "group": name in res.get("group_subtasks", {}),
                           "anchor": use_anchor.to_json() if use_anchor else None,
                           "chat_template": ("model's" if native_template else "tell plain") if chat else None,
                           "shots": res.get("n-shot", {}).get(name), "items": items.get(name),
                           "version": res.get("versions", {}).get(name),
                           "metrics": _metric_entries(result, logged.get(name), cfg.bootstrap_seed, cfg.bootstrap)}
        for name, rows in logged.items():
            samples += [{"task": name, "doc_id": s["doc_id"], "filter": s.get("filter"),
                         "arguments": [list(a) for a in s["arguments"]], "target": s.get("target"),
                         "response": s.get("filtered_resps"),
                         "scores": {m: s.get(m) for m in s.get("metrics", [])}} for s in rows]
    with atomic_open(folder.lm_eval_samples_path) as f:
        for s in samples:
            f.write(json.dumps(s, ensure_ascii=False, default=str) + "\n")
    return {"version": lm_eval.__version__, "samples": folder.LM_EVAL_SAMPLES, "tasks": tasks}
