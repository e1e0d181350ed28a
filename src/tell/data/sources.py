"""An input and how to read it: a file, folder, glob or Hub id, its record format, a column mapping and chat tags.

An input is given as text (`--task FILE_OR_ID`) or as a mapping (YAML, or what `--format` / `--columns`
after an input flag make of it):

    {path: FILE_OR_ID, format: NAME, columns: {FIELD: KEY, ...}, tags: {role_tag: ..., ...}}
    {dataset: NAME}      an entry of a LLaMA-Factory dataset_info.json (`--dataset-info FILE`)

`columns` reads the file's KEY as the format's FIELD (field names as in `tell.data.formats`: prompt,
response, instruction, messages, system, tools, label, ...): `prompt=user_query,response=chatgpt_response`.
`tags` are LLaMA-Factory's sharegpt tags (the keys and role values of chat turns); on the command line they
go in the same list (`--columns messages=conversations,role_tag=role,content_tag=content`).

A LLaMA-Factory `dataset_info.json` entry is read as it is: `file_name` (relative to the file's folder) or
`hf_hub_url` (+ `subset`, `split`), `formatting` alpaca | sharegpt | openai, `columns` in its names (prompt,
query, response, history, messages, system, tools, images, videos, audios, kto_tag) and `tags`. Preference
data (`ranking: true`) and `num_samples` are refused by name: tell takes one answer per example and counts
budgets in tokens.

This module is a leaf (it imports no config), so that `config` can check a mapping where it enters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tell.data.formats import FIELDS, FORMATS, TAGS
from tell.errors import TellError

SOURCE_KEYS = ("path", "dataset", "format", "columns", "tags")


@dataclass
class Source:
    path: str                                  # file, folder, glob or Hub id (owner/name[:split])
    format: str = "auto"
    columns: dict[str, str] = field(default_factory=dict)  # FIELD -> the file's KEY
    tags: dict[str, str] = field(default_factory=dict)     # LLaMA-Factory sharegpt tags
    dataset: str | None = None                 # the dataset_info.json entry it was read from
    subset: str | None = None                  # a Hub data set's configuration (dataset_info's `subset`)

    def describe(self) -> dict[str, Any]:
        """How the input was read, for the manifest (only what differs from plain auto-detection)."""
        d: dict[str, Any] = {}
        for key in ("columns", "tags", "dataset", "subset"):
            if getattr(self, key):
                d[key] = getattr(self, key)
        return d


def parse_columns(text: str) -> dict[str, str]:
    """`FIELD=KEY,FIELD=KEY` (a flag's value) -> {FIELD: KEY}; checked by `check_columns`."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, eq, key = item.partition("=")
        if not eq or not name.strip() or not key.strip():
            raise TellError(f"expected FIELD=KEY pairs separated by commas (e.g. prompt=user_query), got {item!r}",
                            field="columns")
        out[name.strip()] = key.strip()
    return check_columns(out, None, "columns")


def check_columns(columns: Any, where: str | None, name: str) -> dict[str, str]:
    if not isinstance(columns, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                                for k, v in columns.items()):
        raise TellError("expected a mapping of FIELD: KEY (both text)", file=where, field=name)
    for key in columns:
        if key not in FIELDS and key not in TAGS:
            raise TellError(f"unknown field '{key}'; expected one of {sorted(FIELDS)} or a sharegpt tag "
                            f"{list(TAGS)}", file=where, field=name)
    keys = list(columns.values())
    if len(set(keys)) != len(keys):
        raise TellError("two fields read the same key", file=where, field=name)
    return dict(columns)


def check_spec(value: Any, where: str | None, name: str) -> str | dict:
    """An input as YAML (or a flag) gives it: text, or a mapping of SOURCE_KEYS. Returns it checked."""
    if isinstance(value, str):
        if not value.strip():
            raise TellError("is empty; expected a file, folder, glob or Hub id", file=where, field=name)
        return value
    if not isinstance(value, dict):
        raise TellError(f"expected a file/Hub id or a mapping {{path, format, columns}}, got {type(value).__name__}",
                        file=where, field=name)
    for key in value:
        if key not in SOURCE_KEYS:
            raise TellError(f"unknown key '{key}' of an input; expected {list(SOURCE_KEYS)}", file=where, field=name)
    if ("path" in value) == ("dataset" in value):
        raise TellError("an input mapping needs 'path' (a file, folder, glob or Hub id) or 'dataset' (a "
                        "dataset_info.json entry), not both", file=where, field=name)
    for key in ("path", "dataset", "format"):
        if key in value and (not isinstance(value[key], str) or not value[key].strip()):
            raise TellError(f"'{key}' must be non-empty text", file=where, field=name)
    if value.get("format", "auto") not in ("auto", *FORMATS):
        raise TellError(f"unknown format '{value['format']}'; expected 'auto' or one of {sorted(FORMATS)}",
                        file=where, field=name)
    out = dict(value)
    if "columns" in value:
        out["columns"] = check_columns(value["columns"], where, name)
    if "tags" in value:
        out["tags"] = check_columns(value["tags"], where, name)
        if set(out["tags"]) - set(TAGS):
            raise TellError(f"unknown tag; expected {list(TAGS)}", file=where, field=name)
    return out


def as_source(spec: str | dict | Source, *, format: str = "auto", columns: dict[str, str] | None = None,
              dataset_info: str | None = None) -> Source:
    """The `Source` of an input. `format` and `columns` are the defaults for inputs that name none; with
    `dataset_info`, an input named like one of its entries (or given as {dataset: NAME}) is that entry."""
    if isinstance(spec, Source):
        return spec
    entries = _read_info(dataset_info) if dataset_info else {}
    if isinstance(spec, str):
        if spec in entries and not Path(spec).exists():
            return from_dataset_info(dataset_info, spec)
        return _split_tags(Source(path=spec, format=format, columns=dict(columns or {})))
    spec = check_spec(spec, None, "input")
    if "path" in spec and spec["path"] in entries and not Path(spec["path"]).exists():
        spec = {"dataset": spec.pop("path"), **spec}  # --task NAME --columns ...: the entry, refined
    if "dataset" in spec:
        if not dataset_info:
            raise TellError(f"input {{dataset: {spec['dataset']}}} needs --dataset-info FILE (a LLaMA-Factory "
                            "dataset_info.json)", field="dataset_info")
        src = from_dataset_info(dataset_info, spec["dataset"])
    else:
        src = Source(path=spec["path"], format=format, columns=dict(columns or {}))
    if "format" in spec:
        src.format = spec["format"]
    src.columns = {**src.columns, **spec.get("columns", {})}
    src.tags = {**src.tags, **spec.get("tags", {})}
    return _split_tags(src)


def _split_tags(src: Source) -> Source:
    """Tags given in the column list (`--columns role_tag=role`) go with the tags."""
    for key in [k for k in src.columns if k in TAGS]:
        src.tags[key] = src.columns.pop(key)
    return src


# ---- LLaMA-Factory dataset_info.json ---------------------------------------------------------------------

_INFO_KEYS = ("file_name", "hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloudfile_name", "formatting",
              "ranking", "subset", "split", "folder", "num_samples", "revision", "columns", "tags", "load_from")
# LLaMA-Factory's column names -> tell's fields, per formatting.
_LF_COMMON = {"system": "system", "tools": "tools", "images": "images", "videos": "videos", "audios": "audios",
              "kto_tag": "label"}
_LF_COLUMNS = {"alpaca": _LF_COMMON | {"prompt": "instruction", "query": "input", "response": "output",
                                       "history": "history"},
               "sharegpt": _LF_COMMON | {"messages": "conversations"},
               "openai": _LF_COMMON | {"messages": "messages"}}
_LF_FORMAT = {"alpaca": "alpaca", "sharegpt": "sharegpt", "openai": "messages"}


def _read_info(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise TellError("no such file; expected a LLaMA-Factory dataset_info.json", file=path, field="dataset_info")
    try:
        text = p.read_text(encoding="utf-8-sig")
        info = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise TellError(f"not valid JSON ({e})", file=path) from None
    from tell.io import duplicate_key

    twice = duplicate_key(text)
    if twice is not None:  # two entries of one name, or a key twice in an entry: json keeps the last, silently
        raise TellError(f"key '{twice}' appears twice in one JSON object (which one is meant is unknown); expected "
                        "each key once", file=path, field=twice)
    if not isinstance(info, dict):
        raise TellError("expected an object of NAME: {file_name, formatting, columns, ...}", file=path)
    return info


def from_dataset_info(path: str, name: str) -> Source:
    """The `Source` of entry `name` of a LLaMA-Factory dataset_info.json, read as LLaMA-Factory reads it."""
    entry = _read_info(path).get(name)
    where = dict(file=path, field=name)
    if entry is None:
        raise TellError(f"no entry '{name}'; expected one of {sorted(_read_info(path))}", file=path,
                        field="dataset")
    if not isinstance(entry, dict):
        raise TellError("expected an object {file_name, formatting, columns, ...}", **where)
    for key in entry:
        if key not in _INFO_KEYS:
            raise TellError(f"unknown key '{key}'; expected LLaMA-Factory's {list(_INFO_KEYS)}", **where)
    if entry.get("ranking"):
        raise TellError("preference data (ranking: true, chosen/rejected answers) is not supervised data; tell "
                        "trains one answer per example", **where)
    for key in ("num_samples", "folder", "revision"):
        if entry.get(key) is not None:
            raise TellError(f"'{key}' is not read by tell (budgets are in tokens: --task-tokens, --ratio; files "
                            "are named with file_name); remove it", **where)
    formatting = entry.get("formatting", "alpaca")
    if formatting not in _LF_FORMAT:
        raise TellError(f"formatting '{formatting}'; expected one of {list(_LF_FORMAT)}", **where)
    if entry.get("file_name"):
        src = Source(path=str(Path(path).parent / entry["file_name"]))
    elif entry.get("hf_hub_url"):
        split = entry.get("split")
        src = Source(path=entry["hf_hub_url"] + (f":{split}" if split else ""), subset=entry.get("subset"))
    else:
        raise TellError("tell reads entries with file_name or hf_hub_url (download ms_hub/script/cloud files and "
                        "name them with file_name)", **where)
    src.format, src.dataset = _LF_FORMAT[formatting], name
    columns = entry.get("columns") or {}
    if not isinstance(columns, dict):
        raise TellError("'columns' must be an object of NAME: KEY", **where)
    for lf_name, key in columns.items():
        if lf_name in ("chosen", "rejected"):
            raise TellError(f"column '{lf_name}' belongs to preference data; tell trains one answer per example",
                            **where)
        if lf_name not in _LF_COLUMNS[formatting]:
            raise TellError(f"unknown column '{lf_name}' for formatting '{formatting}'; expected one of "
                            f"{sorted(_LF_COLUMNS[formatting])}", **where)
        if key:  # null: LLaMA-Factory's "not read"
            src.columns[_LF_COLUMNS[formatting][lf_name]] = key
    # The identity mappings LLaMA-Factory assumes need no renaming.
    src.columns = {f: k for f, k in src.columns.items() if f != k}
    tags = entry.get("tags") or {}
    if not isinstance(tags, dict) or set(tags) - set(TAGS):
        raise TellError(f"'tags' must be an object with keys among {list(TAGS)}", **where)
    if formatting == "openai":  # LLaMA-Factory's OpenAI layout: role/content keys, user/assistant/tool roles
        tags = {"role_tag": "role", "content_tag": "content", "observation_tag": "tool"} | tags
    src.tags = {k: v for k, v in tags.items() if v}
    return src
