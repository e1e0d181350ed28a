"""`export`: a run's adapter alone, or merged into the base weights (safetensors) for serving elsewhere."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tell.errors import TellError
from tell.models import load_model, load_tokenizer, resolve_adapter


def export(run: str, out: str, *, merge: bool = False, model: str | None = None,
           trust_remote_code: bool = False) -> Path:
    adapter, cfg = resolve_adapter(run)
    dest = Path(out)
    if dest.exists() and not dest.is_dir():
        raise TellError("is a file; expected a new or empty folder", file=str(dest), field="out")
    if dest.exists() and any(dest.iterdir()):
        raise TellError("the output folder is not empty; choose a new --out", file=str(dest))
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if not merge:
        shutil.copytree(adapter, tmp)
    else:
        from peft import PeftModel

        base_name = model or cfg.get("model") or json.loads((adapter / "adapter_config.json").read_text()).get(
            "base_model_name_or_path")
        if not base_name:
            raise TellError("the base model is unknown; give --model", field="model")
        base = load_model(base_name, dtype=cfg.get("dtype", "auto"),
                          trust_remote_code=trust_remote_code or cfg.get("trust_remote_code", False))
        merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
        merged.save_pretrained(tmp, safe_serialization=True)
        load_tokenizer(str(adapter)).save_pretrained(tmp)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.rmdir()
    os.replace(tmp, dest)
    return dest
