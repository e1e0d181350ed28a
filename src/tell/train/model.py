"""Loading a Hugging Face causal LM and its tokenizer, and wrapping it with LoRA (PEFT)."""

from __future__ import annotations

import inspect
import sys
from typing import Any

import torch

from tell.errors import TellError


def resolve_dtype(name: str) -> torch.dtype:
    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise TellError(f"cannot load the tokenizer of '{name}' ({type(e).__name__}: {e})") from e
    if len(tok) < 10 or not tok("hello world", add_special_tokens=False)["input_ids"]:
        raise TellError(f"the tokenizer of '{name}' looks broken (vocabulary of {len(tok)})")
    if tok.pad_token_id is None:
        # Padding positions are masked out of attention and loss, so any id will do.
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
    return tok


def load_model(name: str, *, dtype: str = "auto", trust_remote_code: bool = False,
               attn_implementation: str | None = None) -> Any:
    from transformers import AutoModelForCausalLM

    if attn_implementation is None:
        # flash-attention's varlen kernel when it is installed and a GPU is there, else PyTorch's SDPA
        import importlib.util
        use_flash = torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None
        attn_implementation = "flash_attention_2" if use_flash else "sdpa"
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation)
    except Exception as e:
        raise TellError(f"cannot load the model '{name}' ({type(e).__name__}: {e}); expected a local model dir "
                        "or a Hub id of a causal LM") from e
    return model


def supports_packing(model: Any) -> bool:
    """True when the model builds its attention mask with transformers' `create_causal_mask`, which turns
    restarting `position_ids` (and no attention mask) into a block-diagonal mask, or uses flash-attention's
    varlen path. Older model code would silently attend across packed examples."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "_attn_implementation", None) == "flash_attention_2":
        return True
    module = sys.modules.get(type(base).__module__)
    try:
        return module is not None and "create_causal_mask" in inspect.getsource(module)
    except (OSError, TypeError):
        return False


def add_lora(model: Any, *, r: int, alpha: int, dropout: float, target_modules: str,
             gradient_checkpointing: bool = False) -> Any:
    from peft import LoraConfig, get_peft_model

    targets: str | list[str] = target_modules
    if target_modules != "all-linear":
        targets = [t.strip() for t in target_modules.split(",") if t.strip()]
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                        task_type="CAUSAL_LM")
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    try:
        return get_peft_model(model, config)
    except ValueError as e:
        raise TellError(f"cannot apply LoRA: {e}", field="target_modules") from e
