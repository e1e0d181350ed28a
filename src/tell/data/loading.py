"""Reading task and general data from local files (JSONL, JSON, Parquet, CSV/TSV; `.gz`/`.zst` compressed;
a folder or glob of shards; a `datasets.save_to_disk` folder) or a Hugging Face Hub id.

Rows are validated and normalised to `Record`s. A bad row stops the load with one line naming the file,
`line N` (JSONL, CSV) or `record N` (JSON arrays, Parquet, Hub; 1-based), the field and what was expected,
unless `skip_invalid` is set: then it is dropped and counted by reason. Files load as users' tools save them:
a byte-order mark, Windows line endings, a pretty-printed JSON object or array, JSON lines named `.json`.
An input's column mapping is applied before its format is detected (`tell.data.sources`); the keys a
format does not read are counted per input and reported, and KTO `label: false` rows are left out and counted.
"""

from __future__ import annotations

import csv
import glob
import gzip
import hashlib
import io
import json
import os
import sys

import orjson
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tqdm.auto import tqdm

from tell.data.formats import FORMATS, RowExcluded, RowInvalid, detect_format, parse_row
from tell.data.records import Record
from tell.data.sources import Source, as_source
from tell.io import CHECKING_DECODER, DuplicateKey, duplicate_key
from tell.errors import TellError
from tell.io import not_a_file, sha256_file

FILE_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
                 ".csv": "csv", ".tsv": "tsv"}
COMPRESSIONS = (".gz", ".zst")
GLOB_CHARS = "*?["
# Files a data folder may hold beside its shards (LLaMA-Factory's and `datasets`' descriptions), never data.
NOT_DATA = {"dataset_info.json", "state.json", "dataset_dict.json"}
BOM = b"\xef\xbb\xbf"


class _BadRow:
    def __init__(self, reason: str, message: str):
        self.reason, self.message = reason, message


@dataclass
class Loaded:
    """The records of one input, with what was dropped (reason -> count), the rows read, the keys the format
    ignored (key -> rows), and the input's identity (sha256 of its file, or over its sorted files)."""

    spec: str
    format: str
    records: list[Record]
    rows: int
    dropped: Counter = field(default_factory=Counter)
    ignored: Counter = field(default_factory=Counter)
    files: int = 1
    sha256: str | None = None
    fingerprint: str | None = None  # a Hub data set's `datasets` fingerprint
    source: Source | None = None
    skipped_files: list[str] = field(default_factory=list)  # a folder's files that are no data file (not read)


def is_local(spec: str) -> bool:
    return (os.path.lexists(spec) or _kind(Path(spec)) is not None or any(c in spec for c in GLOB_CHARS))


def _kind(path: Path) -> tuple[str, str | None] | None:
    """(file type, compression suffix or None) from the name (`a.jsonl.gz` -> ("jsonl", ".gz"))."""
    name, comp = path.name.lower(), None
    for c in COMPRESSIONS:
        if name.endswith(c):
            name, comp = name[:-len(c)], c
    kind = FILE_SUFFIXES.get(Path(name).suffix)
    return None if kind is None else (kind, comp)


def _expected() -> str:
    return f"{sorted(FILE_SUFFIXES)}, optionally compressed ({', '.join(COMPRESSIONS)})"


def input_files(spec: str, skipped: list[str] | None = None) -> list[Path]:
    """The files of a local input, in the order they are read: one file, a folder's data files, or a glob's
    matches (sorted by name). A `datasets.save_to_disk` folder is returned as itself. The other files of a folder
    (README.md, notes.txt; not hidden ones or `NOT_DATA`) are not read: their names go to `skipped`."""
    if any(c in spec for c in GLOB_CHARS) and not os.path.exists(spec):
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not files:
            raise TellError("no files match the pattern", file=spec)
    elif Path(spec).is_dir():
        path = Path(spec)
        if (path / "state.json").is_file():
            return [path]
        entries = sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.name not in NOT_DATA)
        for p in entries:  # a data file's name on something unreadable is data lost: refused, not skipped
            if _kind(p) is not None and not p.is_dir() and not p.is_file():
                raise TellError(f"{not_a_file(p)}; expected a data file (the folder's other files are read)",
                                file=str(p))
        files = [p for p in entries if p.is_file() and _kind(p) is not None]
        if skipped is not None:  # a subfolder's files are not read: named like the other files left out
            skipped += [p.name + ("/" if p.is_dir() else "") for p in entries if p not in files]
        if not files:
            raise TellError(f"is a folder; expected a data file, or a folder holding data files ({_expected()}); it "
                            "holds none", file=spec)
        return files
    elif not Path(spec).is_file():
        from tell.data.builders import not_built

        if os.path.lexists(spec):
            raise TellError(f"{not_a_file(Path(spec))}; expected a data file or a folder of them", file=spec)
        hint = not_built(spec)
        raise TellError(f"no such file; {hint}" if hint else "no such file", file=spec)
    else:
        files = [Path(spec)]
    for f in files:
        if _kind(f) is None:
            raise TellError(f"unknown file type '{f.suffix}'; expected one of {_expected()}", file=str(f))
    return files


def input_sha256(files: list[Path]) -> str:
    """sha256 of one file; for several (or a folder), sha256 over `<sha256>  <relative name>` lines of the
    sorted files, so the identity changes with any shard's content or name but not with where they lie."""
    if len(files) == 1 and files[0].is_file():
        return sha256_file(files[0])
    all_files = sorted(p for f in files for p in ([f] if f.is_file() else sorted(f.rglob("*"))) if p.is_file())
    base = Path(os.path.commonpath([str(f.parent) for f in all_files]))
    lines = "".join(f"{sha256_file(f)}  {f.relative_to(base).as_posix()}\n" for f in all_files)
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def _binary(path: Path, comp: str | None):
    if comp == ".gz":
        return gzip.open(path, "rb")
    if comp == ".zst":
        try:
            import zstandard
        except ImportError:
            raise TellError("reading .zst files needs the zstandard package (pip install zstandard)",
                            file=str(path)) from None
        return io.BufferedReader(_ZstdReader(path, zstandard))  # (a raw reader has no readline)
    return open(path, "rb")


class _ZstdReader(io.RawIOBase):
    """A .zst file's bytes, frame after frame, that raises EOFError when the file ends inside a frame:
    zstandard's own reader returns what it decoded of a cut file as if that were all of it."""

    def __init__(self, path: Path, zstandard):
        self._file, self._zstd = open(path, "rb"), zstandard.ZstdDecompressor()
        self._obj, self._fed, self._buf = self._zstd.decompressobj(), False, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            chunk = self._file.read(1 << 16)
            if not chunk:
                if self._fed and not self._obj.eof:
                    raise EOFError("the file ends inside a zstd frame")
                return 0
            out = []
            while chunk:
                if self._obj.eof:  # the next frame of a multi-frame file
                    self._obj, self._fed = self._zstd.decompressobj(), False
                out.append(self._obj.decompress(chunk))
                self._fed = True
                chunk = self._obj.unused_data if self._obj.eof else b""
            self._buf = b"".join(out)
        n = min(len(b), len(self._buf))
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


def _iter_jsonl(f) -> Iterator[tuple[int, Any]]:
    for lineno, line in enumerate(f, 1):
        if lineno == 1 and line.startswith(BOM):
            line = line[len(BOM):]
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as u:  # orjson's "surrogates not allowed" hides the cause
                yield lineno, _BadRow("not_utf8", f"not UTF-8 text (byte {line[u.start]:#04x} at byte {u.start + 1} of "
                                                  "the line); save the file as UTF-8")
                continue
            yield lineno, _BadRow("invalid_json", f"invalid JSON ({e.msg} at column {e.colno})")
            continue
        dup = duplicate_key(line) if isinstance(value, dict) else None
        yield lineno, (value if dup is None else _BadRow(
            "duplicate_key", f"key '{dup}' appears twice in one JSON object (which one is meant is unknown: "
                             "readers differ); expected each key once"))


def _json_rows(path: Path, comp: str | None) -> tuple[str, Iterator[tuple[int, Any]]]:
    """A `.json` file: an array of objects, one (pretty-printed) object, or JSON lines in disguise (HaluEval's
    general_data.json is one)."""
    with _binary(path, comp) as f:
        data = f.read()
    text = data.decode("utf-8-sig")
    head = text.lstrip()
    if head.startswith(("[", "{")):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            # "Extra data" after a complete first value, or a broken first line: JSON lines, checked line by line
            if head.startswith("[") or (e.msg != "Extra data" and e.lineno > 1):
                raise TellError(f"invalid JSON ({e.msg} at line {e.lineno} column {e.colno}); expected an array "
                                "of objects, one object, or one object per line", file=str(path), line=e.lineno) from None
        else:
            _refuse_duplicate_keys(text, path)
            return "record", (enumerate(value, 1) if isinstance(value, list) else iter([(1, value)]))
    return "line", _iter_jsonl(io.BytesIO(data.removeprefix(BOM)))


def _refuse_duplicate_keys(text: str, path: Path) -> None:
    """A JSON file whose objects hold a key twice is refused with the line of the record that does (an array's
    records are decoded one by one to find it; only when there is one)."""
    key = duplicate_key(text)
    if key is None:
        return
    start = len(text) - len(text.lstrip())
    line, record = text.count("\n", 0, start) + 1, None
    if text[start] == "[":
        pos, record = start + 1, 0
        while True:
            while text[pos].isspace() or text[pos] == ",":
                pos += 1
            record += 1
            try:
                _, end = CHECKING_DECODER.raw_decode(text, pos)
            except DuplicateKey:
                line = text.count("\n", 0, pos) + 1
                break
            pos = end
    raise TellError(f"key '{key}' appears twice in one JSON object (which one is meant is unknown: readers "
                    "differ); expected each key once", file=str(path), line=line, record=record)


def _iter_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise TellError(f"cannot read as Parquet ({e})", file=str(path)) from e
    twice = _twice_named(pf.schema_arrow)
    if twice:  # to_pylist would keep one of the columns of the name, silently
        raise TellError(f"two columns are named '{twice}' (which one is meant is unknown); expected each column "
                        "name once", file=str(path), field=twice)
    i = 0
    for batch in pf.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            i += 1
            yield i, row


def _twice_named(schema, prefix: str = "") -> str | None:
    """The first column (or field of a struct column, as `column.field`) whose name appears twice at its level of
    an Arrow schema, or None."""
    import pyarrow as pa

    names = [f.name for f in schema]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        return prefix + twice
    for f in schema:
        t = f.type
        while pa.types.is_list(t) or pa.types.is_large_list(t):
            t = t.value_type
        if pa.types.is_struct(t) and (inner := _twice_named(list(t), f"{prefix}{f.name}.")):
            return inner
    return None


def _iter_csv(f, delimiter: str, path: Path | None = None) -> Iterator[tuple[int, Any]]:
    text = io.TextIOWrapper(f, encoding="utf-8-sig", newline="")
    reader = csv.DictReader(text, delimiter=delimiter)
    names = reader.fieldnames or []
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # DictReader would keep the last column of the name, silently
        at = [i + 1 for i, n in enumerate(names) if n == twice[0]]
        raise TellError(f"columns {at} are both named '{twice[0]}' (which one is meant is unknown); expected each "
                        "column name once", file=str(path) if path else None, line=1, field=twice[0])
    for row in reader:
        if None in row:  # more cells than header columns
            yield reader.line_num, _BadRow("wrong_type", "more cells than header columns")
            continue
        yield reader.line_num, row


def _iter_hub(spec: str, subset: str | None, info: dict) -> Iterator[tuple[int, Any]]:
    """`owner/name` or `owner/name:split` (default split: train), read with `datasets`."""
    name, _, split = spec.partition(":")
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a dependency
        raise TellError("reading a Hub data set needs the 'datasets' package") from e
    try:
        args = (name, subset) if subset else (name,)
        ds = datasets.load_dataset(*args, split=split or "train")
    except Exception as e:
        raise TellError(f"cannot load Hub data set '{name}' split '{split or 'train'}': {e}") from e
    info["fingerprint"] = getattr(ds, "_fingerprint", None)
    yield from enumerate(ds, 1)


def _iter_saved(path: Path) -> Iterator[tuple[int, Any]]:
    """A folder written by `datasets.Dataset.save_to_disk`, read with `datasets.load_from_disk`."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise TellError(f"cannot read as a `datasets` folder ({e})", file=str(path)) from None
    if isinstance(ds, datasets.DatasetDict):
        raise TellError(f"holds the splits {sorted(ds)}; name one folder: {path / sorted(ds)[0]}", file=str(path))
    yield from enumerate(ds, 1)


def _file_rows(path: Path) -> tuple[str, Iterator[tuple[int, Any]]]:
    """("line" | "record", (position, raw row) pairs) of one file."""
    if path.is_dir():
        return "record", _iter_saved(path)
    kind, comp = _kind(path)
    if path.stat().st_size == 0:
        raise TellError("the file is empty; expected at least one record", file=str(path))
    if kind == "json":
        return _json_rows(path, comp)
    if kind == "parquet":
        if comp:
            raise TellError("a compressed Parquet file; expected plain .parquet (Parquet compresses its own "
                            "columns)", file=str(path))
        return "record", _iter_parquet(path)
    return "line", _iter_text_file(path, kind, comp)


def _iter_text_file(path: Path, kind: str, comp: str | None) -> Iterator[tuple[int, Any]]:
    with _binary(path, comp) as f:
        yield from (_iter_jsonl(f) if kind == "jsonl" else _iter_csv(f, "," if kind == "csv" else "\t", path))


def iter_rows(src: Source, info: dict | None = None) -> Iterator[tuple[str, str, int, Any]]:
    """(origin, "line" | "record", 1-based position, raw row) of every row of an input, file by file; a row
    that cannot be parsed comes as a `_BadRow`. `info` receives the input's identity (files, sha256 or the
    Hub fingerprint)."""
    info = {} if info is None else info
    if not is_local(src.path):
        yield from ((src.path, "record", n, raw) for n, raw in _iter_hub(src.path, src.subset, info))
        return
    skipped: list[str] = []
    files = input_files(src.path, skipped)
    info.update(files=len(files), sha256=input_sha256(files), skipped_files=skipped)
    for path in files:
        origin = src.path if len(files) == 1 else str(path)
        try:
            unit, rows = _file_rows(path)
            for n, raw in rows:
                yield origin, unit, n, raw
        except UnicodeDecodeError as e:
            raise TellError(f"not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save the file as "
                            "UTF-8", file=str(path)) from None
        except EOFError as e:  # gzip's and _ZstdReader's cut stream: never read as a shorter input
            raise TellError(f"the compressed file is truncated ({e}); it was cut short (an interrupted download or "
                            "copy?): fetch it again", file=str(path)) from None
        except OSError as e:  # a damaged .gz / .zst (zstandard.ZstdError is not an OSError)
            raise TellError(f"cannot read ({e})", file=str(path)) from None
        except Exception as e:
            if type(e).__name__ != "ZstdError":
                raise
            raise TellError(f"cannot read as zstd ({e})", file=str(path)) from None


def _rename(row: Any, columns: dict[str, str]) -> tuple[Any, list[str]]:
    """The row with the file's keys read as the mapped fields, and the file's own keys a mapped one replaced."""
    if not columns or not isinstance(row, dict):
        return row, []
    inverse = {key: name for name, key in columns.items()}
    out = {inverse[k]: v for k, v in row.items() if k in inverse}
    shadowed = [k for k in row if k not in inverse and k in out]
    out.update((k, v) for k, v in row.items() if k not in inverse and k not in out)
    return out, shadowed


def _file_key(name: str, columns: dict[str, str]) -> str:
    """A field path of the renamed row (`conversations[2].value`) in the file's own key names."""
    cut = min([i for i in (name.find("["), name.find(".")) if i >= 0], default=len(name))
    return columns.get(name[:cut], name[:cut]) + name[cut:]


def load_records(spec: str | dict | Source, *, source: str, fmt: str = "auto", skip_invalid: bool = False,
                 progress: bool = True, skip_hint: bool = False, columns: dict[str, str] | None = None,
                 dataset_info: str | None = None) -> Loaded:
    """Read, validate and normalise every row of `spec` into `Record`s tagged with `source`. `fmt` and
    `columns` apply when the input names none (`tell.data.sources`).
    `skip_hint`: the error names `--skip-invalid` (only for commands that take that flag)."""
    if fmt != "auto" and fmt not in FORMATS:
        raise TellError(f"unknown format '{fmt}'; expected 'auto' or one of {sorted(FORMATS)}")
    src = as_source(spec, format=fmt, columns=columns, dataset_info=dataset_info)
    if src.format != "auto" and src.format not in FORMATS:
        raise TellError(f"unknown format '{src.format}'; expected 'auto' or one of {sorted(FORMATS)}", file=src.path)
    records: list[Record] = []
    dropped: Counter = Counter()
    ignored: Counter = Counter()
    info: dict = {}
    rows = 0
    chosen = None if src.format == "auto" else src.format
    for origin, unit, pos, raw in tqdm(iter_rows(src, info), desc=f"read {Path(src.path).name}", unit=" rows",
                                       disable=None if progress else True, leave=False):
        rows += 1
        where = dict(file=origin, line=pos) if unit == "line" else dict(file=origin, record=pos)
        try:
            if isinstance(raw, _BadRow):
                raise RowInvalid(raw.reason, "(row)", raw.message)
            row, shadowed = _rename(raw, src.columns)
            if chosen is None:
                chosen = detect_format(row)
                if chosen is None:
                    keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
                    raise TellError(f"unknown record format (keys {keys}); expected the fields of one of "
                                    f"{sorted(FORMATS)}, --format NAME, or --columns FIELD=KEY to read other "
                                    "keys", **where)
            rec, unread = parse_row(chosen, row, src.tags)
        except RowExcluded as e:
            dropped[e.reason] += 1
            continue
        except RowInvalid as e:
            if not skip_invalid:
                field_name = None if e.field == "(row)" else _file_key(e.field, src.columns)
                hint = "; --skip-invalid drops such rows" if skip_hint else ""
                raise TellError(f"{e} (format '{chosen}'{hint})" if chosen
                                else str(e), field=field_name, **where) from None
            dropped[e.reason] += 1
            continue
        ignored.update({_file_key(k, src.columns) for k in unread} | set(shadowed))
        rec.source, rec.origin, rec.row = source, origin, pos
        records.append(rec)
    if rows == 0:
        raise TellError("no records found; expected at least one", file=src.path)
    if not records:
        raise TellError(f"every row was left out ({dict(dropped)}); no records left", file=src.path)
    _warn(src.path, chosen or src.format, ignored, dropped, info.get("skipped_files") or [])
    return Loaded(spec=src.path, format=chosen or src.format, records=records, rows=rows, dropped=dropped,
                  ignored=ignored, files=info.get("files", 1), sha256=info.get("sha256"),
                  fingerprint=info.get("fingerprint"), source=src, skipped_files=info.get("skipped_files") or [])


def _warn(spec: str, fmt: str, ignored: Counter, dropped: Counter, skipped: list[str] = ()) -> None:
    """Nothing is dropped silently: keys the format did not read, KTO rows left out, and a folder's files that
    are not data files, are said once per input."""
    if skipped:
        sub = " (subfolders are not read: give a glob such as 'DIR/**/*.jsonl' to read them)" \
            if any(n.endswith("/") for n in skipped) else ""
        print(f"tell: warning: {spec}: {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} not read (not a data "
              f"file: {_expected()}){sub}: {', '.join(skipped[:10])}{', ...' if len(skipped) > 10 else ''}",
              file=sys.stderr)
    if ignored:
        keys = ", ".join(f"{k} ({n} rows)" for k, n in sorted(ignored.items()))
        print(f"tell: warning: {spec}: keys not read by format '{fmt}': {keys}; map them with --columns "
              "FIELD=KEY if they hold data to train on", file=sys.stderr)
    if dropped.get("kto_undesirable"):
        print(f"tell: warning: {spec}: {dropped['kto_undesirable']} rows with label: false (KTO answers not to "
              "imitate) left out", file=sys.stderr)
