"""What training adds to a loaded model (`tell.models` loads it): LoRA (PEFT), and whether packing is safe."""

from __future__ import annotations

import inspect
import sys
from typing import Any

from tell.errors import TellError


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
