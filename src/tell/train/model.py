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


def packing_is_isolated(model: Any) -> tuple[bool, str]:
    """Check on the model itself that packed examples do not see each other: one forward of two examples packed
    in one row (position_ids restarting, no attention mask, as `Collator` builds them) against the second
    alone. Its logits must agree within the dtype's rounding. (whether they agree, what was measured)."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    vocab = base.config.vocab_size
    first = [(7 * i + 3) % vocab for i in range(5)]
    second = [(11 * i + 5) % vocab for i in range(4)]
    device = next(base.parameters()).device
    if device.type == "cpu" and getattr(base.config, "_attn_implementation", None) == "flash_attention_2":
        return True, "flash-attention varlen (not checked on the CPU)"
    ids = lambda xs: torch.tensor([xs], device=device)  # noqa: E731
    pos = lambda *ns: torch.cat([torch.arange(n, device=device) for n in ns])[None]  # noqa: E731
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            # use_cache=False as in training: with a KV cache transformers does not look for packed rows
            packed = model(input_ids=ids(first + second), position_ids=pos(5, 4), use_cache=False).logits[0, 5:]
            alone = model(input_ids=ids(second), position_ids=pos(4), use_cache=False).logits[0]
            packed, alone = packed.float(), alone.float()
    except Exception as e:  # model code that cannot take restarting position_ids cannot pack either
        return False, f"a packed forward failed ({type(e).__name__})"
    finally:
        model.train(was_training)
    diff = (packed - alone).abs().max().item()
    # bf16/fp16 kernels differ in rounding with the row's length; leakage moves logits by their own scale.
    tol = (1e-3 if base.dtype == torch.float32 else 5e-2) * (1.0 + alone.abs().max().item())
    return diff <= tol, f"max |packed - alone| logit difference {diff:.3g} (tolerance {tol:.3g})"


def add_lora(model: Any, *, r: int, alpha: int, dropout: float, target_modules: str,
             gradient_checkpointing: bool = False, dora: bool = False, rslora: bool = False) -> Any:
    """LoRA (or DoRA, rsLoRA) on `model`; a bitsandbytes-quantized base (QLoRA) is first made trainable the way PEFT
    prescribes (`prepare_model_for_kbit_training`: norms in float32, inputs that carry gradients)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if target_modules.strip() in ("all", "all-linear"):  # "all": LLaMA-Factory's name for it
        targets: str | list[str] = "all-linear"
    else:
        targets = [t.strip() for t in target_modules.split(",") if t.strip()]
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                        task_type="CAUSAL_LM", use_dora=dora, use_rslora=rslora)
    if getattr(model, "is_quantized", False) or getattr(model, "is_loaded_in_4bit", False) \
            or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    try:
        return get_peft_model(model, config)
    except ValueError as e:
        raise TellError(f"cannot apply LoRA: {e}", field="target_modules") from e
