"""The binder of typed config groups: read from YAML and/or command-line flags (flags win).

Each command's group lives beside the command (`tell.prepare.PrepareConfig`, `tell.train.config.TrainConfig`,
`tell.eval.config.EvalConfig`, `tell.probe.config.ProbeConfig`, `tell.experiments.config.SweepSpec` and
`AnchorConfig`), so that a group may take its name tables from its own room; this module holds what they share
and imports nothing above `tell.data`.

Each group is a dataclass whose fields carry their help text in `metadata["help"]`; the CLI flags are
generated from the fields, so a field is documented once. Unknown YAML keys are rejected by name, and
values are type-checked with the file and key in the message.

Values are checked once, where they enter: a field's `opt(check=(predicate, expected))` (a range, a finite
number, a folder rather than a file) runs in `check_value` for YAML and the sweep's typed overrides, and in
every group's `__post_init__` (flags, and configs built in code such as the sweep's cells), so each bad value
gets the same one-line refusal naming the field before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Callable

import yaml

from tell.data.sources import parse_columns
from tell.errors import TellError


def opt(default: Any = None, help: str = "", *, flag: str | None = None, choices: tuple | None = None,
        metavar: str | None = None, secret: bool = False, check: tuple[Callable[[Any], bool], str] | None = None,
        parse: Callable[[Any, str | None, str], Any] | None = None, input_flag: str | None = None,
        aliases: tuple[str, ...] = ()) -> Any:
    """A config field with its help text (and optional flag name, choices, metavar). `check` is
    (predicate, what is expected): a value the predicate refuses is a one-line error naming the field
    (None always passes: it means "not given"). `parse(value, file, name)` reads a YAML value the type alone
    cannot describe (an input given as text or a mapping). `input_flag`: "input" for a flag naming an input
    (--task, --general), "refine" for one that refines the input flag just before it (--format, --columns).
    `aliases`: other names of the same setting (LLaMA-Factory's, e.g. cutoff_len for max_length), taken as YAML
    keys, KEY=VALUE settings and flags (--cutoff-len)."""
    meta = {"help": help, "flag": flag, "choices": choices, "metavar": metavar, "secret": secret, "check": check,
            "parse": parse, "input_flag": input_flag, "aliases": tuple(aliases)}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional?) for `X | None` / `Optional[X]`."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _flags(f: dataclasses.Field) -> list[str]:
    """The field's flag and its aliases' (`--cutoff-len` for max_length)."""
    return [_flag(f)] + ["--" + a.replace("_", "-") for a in f.metadata.get("aliases", ())]


def dashed_flags(argv: list[str]) -> list[str]:
    """`--lora_rank` as `--lora-rank` (the spelling of transformers' and LLaMA-Factory's CLIs): every flag's name
    with underscores, up to a `--` that ends the flags. Values (the word after a flag, KEY=VALUE) are left alone."""
    out, flags = [], True
    for a in argv:
        if a == "--":
            flags = False
        elif flags and a.startswith("--") and "_" in a.split("=", 1)[0]:
            name, eq, value = a.partition("=")
            a = name.replace("_", "-") + eq + value
        out.append(a)
    return out


def setting_name(cls: type, key: Any) -> str | None:
    """The field a YAML key or KEY=VALUE name means (dashes read as underscores, aliases as their field), or None."""
    name = str(key).replace("-", "_")
    fields = dataclasses.fields(cls)
    if any(f.name == name for f in fields):
        return name
    return next((f.name for f in fields if name in f.metadata.get("aliases", ())), None)


def unknown_setting(cls: type, key: Any, where: str | None, line: int | None = None) -> TellError:
    """A one-line refusal of an unknown setting, with the nearest known names ("did you mean")."""
    import difflib

    names = sorted({f.name for f in dataclasses.fields(cls)} |
                   {a for f in dataclasses.fields(cls) for a in f.metadata.get("aliases", ())})
    near = difflib.get_close_matches(str(key).replace("-", "_"), names, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(near)}?" if near else f"expected one of {names}"
    return TellError(f"unknown setting; {hint}", file=where, line=line, field=str(key))


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per field of `cls`. Defaults are suppressed so that only flags given are seen."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, _ = _base_type(hints[f.name])
        meta = f.metadata
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        help_text = meta.get("help", "")
        if default not in (None, [], "", False, {}):
            help_text += f" (default: {_shown_default(default)})"
        if meta.get("aliases"):
            help_text += f" (also: {', '.join(meta['aliases'])})"
        # argparse %-formats help strings: a literal "95%" must be written "95%%"
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text.replace("%", "%%")}
        if meta.get("input_flag") == "input":
            kw.update(action=_InputFlag, many=typing.get_origin(tp) is list)
        elif meta.get("input_flag") == "refine":
            kw.update(action=_RefineFlag, type=_columns_flag if tp is dict else tp)
        if meta.get("input_flag"):
            kw.update({k: meta[k] for k in ("choices", "metavar") if meta.get(k)})
            parser.add_argument(*_flags(f), **kw)
            continue
        if tp is bool:
            action = argparse.BooleanOptionalAction if default else "store_true"
            parser.add_argument(*_flags(f), action=action, **kw)
            continue
        if typing.get_origin(tp) is list:
            kw.update(action="append", type=typing.get_args(tp)[0])
        elif tp is dict:
            kw.update(action="append", type=_key_value)
        else:
            kw.update(type=tp)
        if meta.get("choices"):
            kw["choices"] = meta["choices"]
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        parser.add_argument(*_flags(f), **kw)


def _shown_default(default: Any) -> str:
    """A default as --help shows it: text that is or holds whitespace quoted (repr), since the help formatter
    folds a newline into a space and a bare '\\n' or ' ' default would read as none."""
    if isinstance(default, str) and any(c.isspace() for c in default):
        return repr(default)
    return str(default)


class _InputFlag(argparse.Action):
    """A flag naming an input (--task, --general): remembered, so that a --format / --columns right after it
    refines that input alone."""

    def __init__(self, *args: Any, many: bool = False, **kw: Any):
        super().__init__(*args, **kw)
        self.many = many

    def __call__(self, parser, ns, value, option_string=None):
        if self.many:
            setattr(ns, self.dest, list(getattr(ns, self.dest, None) or []) + [value])
            ns._tell_last_input = (self.dest, len(getattr(ns, self.dest)) - 1)
        else:
            setattr(ns, self.dest, value)
            ns._tell_last_input = (self.dest, None)


class _RefineFlag(argparse.Action):
    """--format / --columns: of the input flag just before it (the input becomes a mapping {path, format,
    columns}); before any input flag, the default of every input that names none."""

    def __call__(self, parser, ns, value, option_string=None):
        merge = lambda old: {**old, **value} if isinstance(value, dict) and isinstance(old, dict) else value  # noqa: E731
        target = getattr(ns, "_tell_last_input", None)
        if target is None:
            setattr(ns, self.dest, merge(getattr(ns, self.dest, None)))
            return
        dest, i = target
        items = getattr(ns, dest)
        spec = items if i is None else items[i]
        spec = {"path": spec} if isinstance(spec, str) else dict(spec)
        spec[self.dest] = merge(spec.get(self.dest))
        if i is None:
            setattr(ns, dest, spec)
        else:
            items[i] = spec


def _columns_flag(text: str) -> dict[str, str]:
    try:
        return parse_columns(text)
    except TellError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("field 'columns': ")) from None


class RawText(str):
    """A KEY=VALUE value as it was typed: a text field keeps it whole; any other field reads it by `read_value`."""


# YAML 1.2's core schema, strictly: only these words are read as anything but text. YAML 1.1 (PyYAML) also reads
# `1_0` as 10, `0x10` as 16, `010` as 8, `1:30` as 90, `yes`/`on` as true and dates as dates, and cuts `a #b`
# at the comment: a value typed on the command line changed without a word.
_NULL = re.compile(r"null|Null|NULL|~|")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"[-+]?[0-9]+")  # decimal only (YAML 1.2: `010` is 10)
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")


def read_value(text: str, key: str = "") -> Any:
    """A command-line value: null, a bool, an int or a float when it is exactly one (YAML 1.2 core), a YAML flow
    list or mapping when it starts with `[` or `{` (its scalars read the same way), else the text unchanged."""
    s = str(text)
    if s.lstrip().startswith(("[", "{")):
        if re.search(r"(^|\s)#", s):
            raise TellError(f"{s!r} holds a ' #', which YAML reads as a comment that cuts the value; "
                            "quote the item that holds it", field=key or None)
        try:
            node = yaml.compose(s, Loader=yaml.SafeLoader)
        except yaml.YAMLError as e:
            raise TellError(f"{s!r} is not a YAML list or mapping ({str(e).splitlines()[0]})", field=key or None) \
                from None
        return _core(node)
    return _scalar(s)


def _scalar(s: str) -> Any:
    if _NULL.fullmatch(s):
        return None
    if s in _BOOL:
        return _BOOL[s]
    if _INT.fullmatch(s):
        return int(s)
    if _FLOAT.fullmatch(s):
        return float(s.replace(".", "", 1)) if s.lower().lstrip("+-") in (".inf", ".nan") else float(s)
    return s


def _core(node: Any) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return [_core(n) for n in node.value]
    if isinstance(node, yaml.MappingNode):
        return {_core(k): _core(v) for k, v in node.value}
    # a quoted scalar is text; a plain one is read by the core schema
    return node.value if node.style in ("'", '"') else _scalar(node.value)


def _key_value(text: str) -> tuple[str, Any]:
    """KEY=VALUE from a flag or a `tell train CONFIG.yaml key=value` word; the value kept as typed (`RawText`)."""
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), RawText(value)


# A setting's name that says it holds a secret (hub_token, api_key, password, ...): never written anywhere. Whole
# words only, so task_tokens, max_new_tokens or average_tokens_across_devices are not taken for one.
_SECRET_NAME = re.compile(r"(^|[_.-])(token|secret|password|passwd|credentials?|api[_-]?key|access[_-]?key|"
                          r"private[_-]?key|secret[_-]?key)([_.-]|$)", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(str(name)))


def refuse_secrets(settings: dict) -> bool:
    """Refuse settings whose names say they hold a secret, naming the settings and never their values: tell
    writes every setting into config.json, an export's tell.json, the checkpoints' training_args.bin and a sweep's
    spec copies. A `check=` predicate of `training_args` (so `tell train` and a sweep's `train:` refuse them when
    read), and called again where TrainingArguments are built."""
    secrets = sorted(k for k in settings if is_secret_name(k)) if isinstance(settings, dict) else []
    if secrets:
        raise TellError(f"{secrets} look like secrets (a token, password or key): tell writes every setting into "
                        "config.json, an export's tell.json and the checkpoints' training_args.bin, so it takes none; "
                        "give a Hub token through the HF_TOKEN environment variable or `hf auth login` instead",
                        field="training_args")
    return True


NO_SECRETS = (refuse_secrets, "settings without secrets")


# Checks for `opt(check=...)`: (predicate, what is expected). NaN fails every comparison, so "finite" is explicit.
def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


POSITIVE = (lambda v: finite(v) and v > 0, "a finite number > 0")
NON_NEGATIVE = (lambda v: finite(v) and v >= 0, "a finite number >= 0")
SHARE = (lambda v: finite(v) and 0 <= v <= 1, "a share between 0 and 1")


def at_least(n: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: finite(v) and v >= n, f"a whole number >= {n}")


def _layer_spec(v: Any) -> bool:
    if v in ("middle", "all"):
        return True
    parts = [p.strip() for p in str(v).split(",")]
    return all(p.isdigit() and int(p) >= 1 for p in parts) and len({int(p) for p in parts}) == len(parts)


LAYERS = (_layer_spec, "middle, all, or distinct layer numbers >= 1 separated by commas (e.g. 8,16)")
# An output folder may be new or an existing folder (the command decides what it accepts there), never a file.
OUT_FOLDER = (lambda v: not Path(v).exists() or Path(v).is_dir(), "a folder, not an existing file")


def check_field(cls: type, name: str, value: Any, where: str | None = None) -> Any:
    """Run the field's `check` (if any) on a typed value; refuse it in one line naming the field."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    check = f.metadata.get("check")
    if check is None or value is None:
        return value
    predicate, expected = check
    try:
        ok = bool(predicate(value))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise TellError(f"expected {expected}, got {value!r}", file=where, field=name)
    return value


def validate(cfg: Any) -> None:
    """Every field's check; called by each config group's __post_init__, so flags, YAML, the sweep's typed
    overrides and configs built in code are all refused the same way, before anything is written."""
    for f in dataclasses.fields(cfg):
        check_field(type(cfg), f.name, getattr(cfg, f.name))


def check_value(cls: type, name: str, value: Any, where: str) -> Any:
    """A YAML (or sweep override) value, typed as the field's flag would type it, then checked."""
    return check_field(cls, name, _typed_value(cls, name, value, where), where)


def as_float(value: Any) -> Any:
    """YAML 1.1 reads `1e-4` (no dot) as text: accept a string that parses as a number for a float field."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _typed_value(cls: type, name: str, value: Any, where: str) -> Any:
    tp, optional = _base_type(typing.get_type_hints(cls)[name])
    if isinstance(value, RawText):  # typed on a command line: text stays text, anything else must read back whole
        value = str(value) if tp is str else read_value(value, name)
    if value is None:
        if optional:
            return None
        raise TellError(f"is null; expected a {getattr(tp, '__name__', tp)}", file=where, field=name)
    parse = next(f.metadata.get("parse") for f in dataclasses.fields(cls) if f.name == name)
    if parse is not None:
        return parse(value, where, name)
    if typing.get_origin(tp) is list:
        inner = typing.get_args(tp)[0]
        if not isinstance(value, list):
            value = [value]  # a single value where a list is expected
        if inner is float:
            value = [float(v) if isinstance(v, int) and not isinstance(v, bool) else as_float(v) for v in value]
        if inner is int:
            value = [int(v) if isinstance(v, float) and v.is_integer() else v for v in value]
        if not all(isinstance(v, inner) and not (inner is int and isinstance(v, bool)) for v in value):
            raise TellError(f"expected a list of {inner.__name__}", file=where, field=name)
        return value
    if tp is dict:
        if not isinstance(value, dict):
            raise TellError(f"expected a mapping, got {type(value).__name__}", file=where, field=name)
        return value
    if tp is float:
        value = as_float(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)  # YAML reads 1e6 as a float
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise TellError(f"expected {tp.__name__}, got {type(value).__name__} {value!r}", file=where, field=name)
    choices = next(f.metadata.get("choices") for f in dataclasses.fields(cls) if f.name == name)
    if choices and value not in choices:
        raise TellError(f"expected one of {list(choices)}, got {value!r}", file=where, field=name)
    return value


class _YamlRefused(Exception):
    def __init__(self, message: str, line: int | None):
        super().__init__(message)
        self.line = line


# A config's nodes once its aliases are expanded: a real one has some hundreds; a "billion laughs" file (aliases of
# aliases) expands to billions, and anything that walks it (checks, to_dict, json) runs out of memory.
MAX_YAML_NODES = 100_000


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key twice in one mapping (YAML keeps the last, silently; `<<` merges may still be
    overridden) and a document whose aliases expand past MAX_YAML_NODES nodes, or refer to themselves."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            self._expanded_size(node, {}, set())
        return node

    def _expanded_size(self, node, sizes: dict, open_: set) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_:
            raise _YamlRefused("an alias refers to the node that holds it (a recursive structure); expected plain "
                               "settings", node.start_mark.line + 1)
        open_.add(id(node))
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else \
            node.value if isinstance(node, yaml.SequenceNode) else []
        size = 1
        for child in children:
            size += self._expanded_size(child, sizes, open_)
            if size > MAX_YAML_NODES:
                raise _YamlRefused(f"its aliases expand to more than {MAX_YAML_NODES:,} values (an alias bomb?); "
                                   "expected plain settings", child.start_mark.line + 1)
        open_.discard(id(node))
        sizes[id(node)] = size
        return size

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the constructor refuses it below
                    continue
                if first is not None:
                    raise _YamlRefused(f"key '{key}' appears twice in one mapping (lines {first} and {line}; which "
                                       "one is meant is unknown); expected each key once", line)
                seen[key] = line
        return super().construct_mapping(node, deep)


def load_yaml(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        from tell.io import not_a_file

        why = not_a_file(p)
        raise TellError("no such config file" if why == "no such file" else f"{why}; expected a YAML config file",
                        file=path)
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_ConfigLoader)  # noqa: S506 (a SafeLoader)
    except _YamlRefused as e:
        raise TellError(str(e), file=path, line=e.line) from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise TellError(f"invalid YAML ({getattr(e, 'problem', e)})", file=path,
                        line=None if line is None else line + 1) from None
    except UnicodeDecodeError as e:
        raise TellError(f"not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save the file as UTF-8",
                        file=path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TellError("expected a mapping of setting: value at the top level", file=path)
    return data


def checked_settings(cls: type, items: list[tuple[Any, Any]], where: str | None) -> dict[str, Any]:
    """{field: checked value} of (key, value) pairs; a setting given under two of its names is refused."""
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, value in items:
        name = setting_name(cls, key)
        if name is None:
            raise unknown_setting(cls, key, where)
        if name in given:
            raise TellError(f"'{given[name]}' and '{key}' are one setting ({name}); give it once", file=where,
                            field=str(key))
        given[name] = str(key)
        values[name] = check_value(cls, name, value, where or "command line")
    return values


def parse_settings(words: list[str]) -> tuple[str | None, list[tuple[str, Any]]]:
    """`tell train CONFIG.yaml key=value ...` (LLaMA-Factory's command line): (the YAML file or None, the
    KEY=VALUE pairs with YAML-read values). A word that is neither is refused by name."""
    path, pairs = None, []
    for w in words:
        if "=" in w:
            try:
                pairs.append(_key_value(w))
            except argparse.ArgumentTypeError as e:
                raise TellError(str(e)) from None
        elif w.lower().endswith((".yaml", ".yml")) and path is None:
            path = w
        else:
            raise TellError(f"{w!r} is neither a CONFIG.yaml (given once) nor a KEY=VALUE setting")
    return path, pairs


def build(cls: type, *, yaml_path: str | None = None, overrides: dict[str, Any] | None = None,
          settings: list[tuple[str, Any]] | None = None):
    """Defaults <- YAML file <- KEY=VALUE settings <- overrides (flags). Unknown keys are errors ("did you mean")."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if yaml_path:
        values |= checked_settings(cls, list(load_yaml(yaml_path).items()), yaml_path)
    values |= checked_settings(cls, list(settings or []), None)
    for name, value in (overrides or {}).items():
        if name in names:
            if isinstance(value, list) and value and isinstance(value[0], tuple):  # KEY=VALUE flags
                keys = [k for k, _ in value]
                twice = sorted({k for k in keys if keys.count(k) > 1})
                if twice:  # the last would win without a word
                    raise TellError(f"{twice} given more than once; expected each KEY once", field=name)
                value = {**values.get(name, {}), **{k: read_value(v, k) if isinstance(v, RawText) else v
                                                    for k, v in value}}
            values[name] = value
    try:
        return cls(**values)
    except TellError as e:  # a group's own checks (__post_init__) name no file: it is the YAML's
        if yaml_path is None:
            raise
        raise e.located(yaml_path) from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config for a run dir or manifest, with secret fields masked."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = "***" if f.metadata.get("secret") and v else v
    return out

