"""`export`: a run's adapter alone, or merged into the base weights (safetensors) for serving elsewhere.

An export describes itself: `tell.json` holds the anchor and its placement, the prompt template, the
mixture it was trained on (sha256, budgets, inputs) and the training settings; `README.md` is a model card
saying the same in words, with how to load it. The base model's local path is made absolute (in
`adapter_config.json`, `tell.json` and the card; Hub ids are kept), so that the export loads from any
folder. A model trained on tell's plain template (the base has no chat template) gets that template as the
exported tokenizer's `chat_template`, so that serving it elsewhere renders what training saw.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from tell import provenance
from tell.artifacts import TELL_JSON, RunDir
from tell.errors import TellError
from tell.io import _umask, exclusive_lock, write_json
from tell.mdtext import code, fence, table, text
from tell.models import gguf_provenance, resolve_model_path, load_model, load_tokenizer, resolve_adapter


def export(run: str, out: str, *, merge: bool = False, model: str | None = None,
           trust_remote_code: bool = False, gguf: str | None = None) -> Path:
    """The adapter (or, with `merge`, the merged model) in `out`; with `gguf` (f16 / q8_0) the merged model as one
    GGUF file too (`model.KIND.gguf`, Llama architecture), for llama.cpp / Ollama, carrying the anchor and the
    chat template in its metadata."""
    from tell import gguf as gguf_io

    if gguf is not None and gguf not in gguf_io.GGUF_OUT:
        raise TellError(f"expected one of {list(gguf_io.GGUF_OUT)}, got {gguf!r}", field="gguf")
    merge = merge or gguf is not None
    adapter, cfg = resolve_adapter(run)
    dest = Path(out)
    if dest.exists() and not dest.is_dir():
        raise TellError("is a file; expected a new or empty folder", file=str(dest), field="out")
    if dest.exists() and any(dest.iterdir()):
        raise TellError("the output folder is not empty; choose a new --out", file=str(dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _export_lock(dest):
        # a private temp folder beside the destination (never a name of the user's, such as DIR.tmp)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would be the export's own mode once renamed
        try:
            return _export(run, dest, tmp, adapter, cfg, merge, model, trust_remote_code, gguf)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


@contextlib.contextmanager
def _export_lock(dest: Path) -> Iterator[None]:
    """One export into `dest` at a time (a kernel flock beside it, gone with its process); holding it, the
    temporary folders that killed exports of the same `dest` left behind (`.NAME.*.tmp`, a whole merged model
    after a late SIGKILL) are removed: no export is writing them."""
    def refuse() -> None:
        raise TellError("another export into this folder is running; wait for it or choose another --out",
                        file=str(dest))

    with exclusive_lock(dest.parent / f".{dest.name}.export.lock", refuse):
        for stale in dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp"):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
        yield


def _export(run: str, dest: Path, tmp: Path, adapter: Path, cfg: dict, merge: bool, model: str | None,
            trust_remote_code: bool, gguf: str | None) -> Path:
    from tell import gguf as gguf_io

    base_name = resolve_model_path(model or cfg.get("model") or json.loads((adapter / "adapter_config.json").read_text()).get(
        "base_model_name_or_path"))
    tok = load_tokenizer(str(adapter))
    plain = not getattr(tok, "chat_template", None)
    if plain:  # served elsewhere, the tokenizer's template must render what training saw
        from tell.prompting import plain_chat_template
        tok.chat_template = plain_chat_template(tok)
    if gguf is not None:  # what cannot be written as GGUF is refused before the merge
        from transformers import AutoConfig

        if not base_name:
            raise TellError("the base model is unknown; give --model", field="model")
        base_cfg = AutoConfig.from_pretrained(base_name, trust_remote_code=trust_remote_code or
                                              cfg.get("trust_remote_code", False))
        source = (gguf_provenance(base_name) or {}).get("source")
        gguf_io.check_writable(adapter, base_cfg.model_type,
                               {k: getattr(base_cfg, k, None) for k in ("rope_scaling", "rope_parameters")},
                               Path(source) if source else None)
    if not merge:
        shutil.copytree(adapter, tmp, dirs_exist_ok=True)
        _set_base(tmp / "adapter_config.json", base_name)
    else:
        from peft import PeftModel

        if not base_name:
            raise TellError("the base model is unknown; give --model", field="model")
        base = load_model(base_name, dtype=cfg.get("dtype", "auto"),
                          trust_remote_code=trust_remote_code or cfg.get("trust_remote_code", False))
        merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
        merged.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    doc = describe(run, cfg, base_name, merge=merge, template=tok.chat_template, plain=plain)
    if gguf is not None:
        doc["gguf"] = _write_gguf(tmp, gguf, tok.chat_template, doc, base_name)
    write_json(tmp / TELL_JSON, doc)
    (tmp / "README.md").write_text(model_card(doc), encoding="utf-8")
    if dest.exists():
        dest.rmdir()
    os.replace(tmp, dest)
    return dest






def _write_gguf(folder: Path, kind: str, template: str, doc: dict, base_name: str | None) -> dict:
    """model.KIND.gguf beside the merged weights: the anchor (tell.anchor.*) and tell.json's identity in its
    metadata, the chat template training rendered with as tokenizer.chat_template."""
    from tell import gguf as gguf_io
    from tell.io import sha256_file

    anchor = doc.get("anchor") or {}
    meta = {"tell.base_model": str(base_name or ""), "tell.anchor.text": anchor.get("text", ""),
            "tell.anchor.placement": anchor.get("placement", ""), "tell.anchor.separator": anchor.get("separator", ""),
            "tell.mixture.sha256": str(((doc.get("mixture") or {}).get("mixture") or {}).get("sha256", ""))}
    source = (doc.get("base_gguf") or {}).get("source")
    dest = gguf_io.write(folder, folder / f"model.{kind}.gguf", kind, chat_template=template, metadata=meta,
                         source=Path(source) if source else None)
    return {"file": dest.name, "type": kind, "sha256": sha256_file(dest), "metadata": meta}


def _set_base(path: Path, base_name: str | None) -> None:
    if base_name:
        conf = json.loads(path.read_text(encoding="utf-8"))
        conf["base_model_name_or_path"] = base_name
        write_json(path, conf)


def describe(run: str, cfg: dict, base_name: str | None, *, merge: bool, template: str, plain: bool) -> dict:
    """tell.json: what a user serving the export must know to reproduce training's inputs."""
    rd = RunDir(run)
    manifest = rd.mixture_manifest() or {}
    metrics = rd.metrics() if rd.finished() else {}
    anchor = rd.anchor()  # refused when the manifest's copy was edited since training
    mixture = {k: manifest.get(k) for k in ("mixture", "budget", "inputs", "tokenizer") if k in manifest}
    return {
        "format_version": 1, "kind": "tell-export", "merged": merge, "base_model": base_name,
        "base_gguf": gguf_provenance(base_name),  # the GGUF file the base folder was converted from, or None
        "anchor": anchor.to_json() if anchor else None,
        "template": {"kind": "plain" if plain else "chat", "chat_template": template,
                     "note": "tell's plain template (tell.prompting), written as this tokenizer's chat_template"
                             if plain else "the base model's chat template"},
        "mixture": mixture,
        "training": {"config": cfg, **{k: metrics[k] for k in ("steps", "examples", "final_loss", "final_loss_task",
                                                              "final_loss_general") if k in metrics}},
        "packages": provenance.package_versions(),
    }


def model_card(doc: dict) -> str:
    """README.md: the tell.json facts in words, with how to load the export."""
    anchor, cfg, mix = doc.get("anchor"), doc["training"]["config"], doc["mixture"]
    base = doc.get("base_model") or "(unknown base)"
    lines = ["---", f"base_model: {json.dumps(base)}", f"library_name: {'transformers' if doc['merged'] else 'peft'}",
             "tags: [tell, lora]", "---", "",
             f"# A TELL fine-tune of {text(base)}", "",
             "Trained with `tell` (Token-Efficient Leverage Learning, arXiv 2404.00914): task examples carry an "
             "anchor prompt and are shuffled into general instruction data; LoRA, one pass in the mixture's order. "
             "`tell.json` holds everything below in machine-readable form.", "", "## Anchor", ""]
    if anchor:
        lines += [f"Task inputs were trained with this anchor, placed {code(anchor.get('placement'))} "
                  f"(separator {code(repr(anchor.get('separator', '')))}). Add it the same way to task inputs at "
                  "inference (`tell eval` does when given this run):", ""] + fence(anchor.get("text", ""))
    else:
        lines += ["Trained without an anchor."]
    t = doc["template"]
    lines += ["", "## Prompt template", "", f"{text(t['note'].capitalize())}; `tokenizer.apply_chat_template` renders "
              "prompts as training did.", "", "## Training data", ""]
    m, b = mix.get("mixture") or {}, mix.get("budget") or {}
    if m:
        lines += [f"- mixture: {m.get('examples')} examples, {m.get('tokens')} tokens, sha256 {code(m.get('sha256'))}",
                  f"- task: {b.get('task_examples')} examples, {b.get('task_tokens')} tokens; general: "
                  f"{b.get('general_examples')} examples, {b.get('general_tokens')} tokens "
                  f"(general:task ratio {b.get('ratio_achieved')})"]
        for label, inputs in (mix.get("inputs") or {}).items():
            for i in inputs:
                lines.append(f"- {text(label)} input {code(i.get('spec'))} ({text(i.get('format'))}), sha256 "
                             f"{code(i.get('sha256', 'hub'))}")
    else:
        lines += ["(the mixture's manifest is not in the run folder)"]
    keys = ("learning_rate", "epochs", "max_steps", "batch_size", "lora_r", "lora_alpha", "lora_dropout", "dora",
            "rslora", "quantization", "target_modules", "lr_scheduler", "warmup_ratio", "weight_decay", "max_length", "seed")
    lines += ["", "## Training settings", ""] + table(["setting", "value"], [[k, cfg[k]] for k in keys if k in cfg])[:-1]
    loader = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n"
              "model = AutoModelForCausalLM.from_pretrained(PATH)" if doc["merged"] else
              "from peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n"
              "model = AutoPeftModelForCausalLM.from_pretrained(PATH)  # loads the base named above")
    lines += ["", "## Use", "", "```python", loader, "tokenizer = AutoTokenizer.from_pretrained(PATH)", "```", ""]
    return "\n".join(lines)
