"""Reading task and general data from local files (JSONL, JSON, Parquet, CSV) or a Hugging Face Hub id.

Rows are validated and normalised to `Record`s. A bad row stops the load with one line naming the file,
line, field and what was expected, unless `skip_invalid` is set: then it is dropped and counted by reason.
"""

from __future__ import annotations

import csv
import json
import os

import orjson
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tqdm.auto import tqdm

from tell.data.formats import FORMATS, RowInvalid, detect_format, parse_row
from tell.data.records import Record
from tell.errors import TellError

FILE_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
                 ".csv": "csv", ".tsv": "tsv"}


class _BadRow:
    def __init__(self, reason: str, message: str):
        self.reason, self.message = reason, message


@dataclass
class Loaded:
    """The records of one input, with what was dropped (reason -> count) and the rows read."""

    spec: str
    format: str
    records: list[Record]
    rows: int
    dropped: Counter = field(default_factory=Counter)


def is_local(spec: str) -> bool:
    return os.path.exists(spec) or Path(spec).suffix.lower() in FILE_SUFFIXES


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, orjson.loads(line)
            except orjson.JSONDecodeError as e:
                yield lineno, _BadRow("invalid_json", f"invalid JSON ({e.msg} at column {e.colno})")


def _iter_json(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    if not head.startswith("["):
        # Many ".json" files are JSON lines in disguise (HaluEval's general_data.json is one).
        yield from _iter_jsonl(path)
        return
    try:
        with open(path, encoding="utf-8") as f:
            rows = json.load(f)
    except json.JSONDecodeError as e:
        raise TellError(f"invalid JSON ({e.msg}); expected an array of objects", file=str(path), line=e.lineno)
    yield from enumerate(rows)


def _iter_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise TellError(f"cannot read as Parquet ({e})", file=str(path)) from e
    i = 0
    for batch in pf.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            yield i, row
            i += 1


def _iter_csv(path: Path, delimiter: str) -> Iterator[tuple[int, Any]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        for row in reader:
            if None in row:  # more cells than header columns
                yield reader.line_num, _BadRow("wrong_type", "more cells than header columns")
                continue
            yield reader.line_num, row


def _iter_hub(spec: str) -> Iterator[tuple[int, Any]]:
    """`owner/name` or `owner/name:split` (default split: train), read with `datasets`."""
    name, _, split = spec.partition(":")
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a dependency
        raise TellError("reading a Hub data set needs the 'datasets' package") from e
    try:
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as e:
        raise TellError(f"cannot load Hub data set '{name}' split '{split or 'train'}': {e}") from e
    yield from enumerate(ds)


def iter_rows(spec: str) -> Iterator[tuple[int, Any]]:
    """(row number, raw row) pairs of an input; a row that cannot be parsed comes as a `_BadRow`."""
    if not is_local(spec):
        yield from _iter_hub(spec)
        return
    path = Path(spec)
    if path.is_dir():
        raise TellError(f"is a folder; expected a data file ({', '.join(sorted(FILE_SUFFIXES))})", file=spec)
    if not path.is_file():
        raise TellError("no such file", file=spec)
    kind = FILE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise TellError(f"unknown file type '{path.suffix}'; expected one of {sorted(FILE_SUFFIXES)}", file=spec)
    if path.stat().st_size == 0:
        raise TellError("the file is empty; expected at least one record", file=spec)
    try:
        if kind == "jsonl":
            yield from _iter_jsonl(path)
        elif kind == "json":
            yield from _iter_json(path)
        elif kind == "parquet":
            yield from _iter_parquet(path)
        else:
            yield from _iter_csv(path, "," if kind == "csv" else "\t")
    except UnicodeDecodeError as e:
        raise TellError(f"not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save the file as "
                        "UTF-8", file=spec) from None


def load_records(spec: str, *, source: str, fmt: str = "auto", skip_invalid: bool = False,
                 progress: bool = True, skip_hint: bool = False) -> Loaded:
    """Read, validate and normalise every row of `spec` into `Record`s tagged with `source`.
    `skip_hint`: the error names `--skip-invalid` (only for commands that take that flag)."""
    if fmt != "auto" and fmt not in FORMATS:
        raise TellError(f"unknown format '{fmt}'; expected 'auto' or one of {sorted(FORMATS)}")
    records: list[Record] = []
    dropped: Counter = Counter()
    rows = 0
    chosen = None if fmt == "auto" else fmt
    for row_no, raw in tqdm(iter_rows(spec), desc=f"read {Path(spec).name}", unit=" rows",
                            disable=None if progress else True, leave=False):
        rows += 1
        try:
            if isinstance(raw, _BadRow):
                raise RowInvalid(raw.reason, "(row)", raw.message)
            if chosen is None:
                chosen = detect_format(raw)
                if chosen is None:
                    keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
                    raise TellError(f"unknown record format (keys {keys}); expected the fields of one of "
                                    f"{sorted(FORMATS)} or --format NAME", file=spec, line=row_no)
            rec = parse_row(chosen, raw)
        except RowInvalid as e:
            if not skip_invalid:
                field_name = None if e.field == "(row)" else e.field
                hint = "; --skip-invalid drops such rows" if skip_hint else ""
                raise TellError(f"{e} (format '{chosen}'{hint})" if chosen
                                else str(e), file=spec, line=row_no, field=field_name) from None
            dropped[e.reason] += 1
            continue
        rec.source, rec.origin, rec.row = source, spec, row_no
        records.append(rec)
    if rows == 0:
        raise TellError("no records found; expected at least one", file=spec)
    if not records:
        raise TellError(f"every row was invalid ({dict(dropped)}); no records left", file=spec)
    return Loaded(spec=spec, format=chosen or fmt, records=records, rows=rows, dropped=dropped)
