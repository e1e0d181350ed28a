"""Builders for the paper's data sets: `tell data build NAME`.

Each builder reads the public files (from a local folder, by default `../shared/data` when it exists, or
downloaded from their public sources into a cache) and writes records in the `tell` format that `prepare`
and `eval` read, one folder per set with `train.jsonl` / `test.jsonl` and a `manifest.json`.

Every record's `meta` says how it is scored (`kind`) and whether it is a task or a general-ability set
(`role`); evaluation applies the training anchor to task sets only.

| name          | splits        | kind        | from |
|---------------|---------------|-------------|------|
| `halu-cot-json` | train, test | json        | TELL repo `test_Halu_CoT_JSON.jsonl`; HaluEval `general_data.json` |
| `is-en-news`  | en-is/, is-en/ train, test | translation | TELL repo `dev-*.jsonl`, `test-*.jsonl` |
| `gsm8k`       | train, test   | gsm8k       | openai/grade-school-math |
| `agieval`     | <sub-task>/test | mcq / cloze | ruixiangcui/AGIEval `data/v1` |
| `openbookqa`  | train, test   | mcq         | allenai/openbookqa (Hub, `main` config), or AI2's original JSONL |
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import urllib.request
from pathlib import Path
from typing import Callable

from tell.data.answers import gsm8k_number, strip_lead_in
from tell.data.records import Record
from tell.errors import TellError
from tell.io import atomic_open, duplicate_key, expect_folder, not_a_file, sha256_file, staged_output, write_json

TELL_REPO = "https://raw.githubusercontent.com/LinesHogan/Token-Efficient-Leverage-Learning/main/"
SOURCES = {
    "tell/test_Halu_CoT_JSON.jsonl": TELL_REPO + "test_Halu_CoT_JSON.jsonl",
    "tell/dev-en-is.jsonl": TELL_REPO + "dev-en-is.jsonl",
    "tell/dev-is-en.jsonl": TELL_REPO + "dev-is-en.jsonl",
    "tell/test-en-is.jsonl": TELL_REPO + "test-en-is.jsonl",
    "tell/test-is-en.jsonl": TELL_REPO + "test-is-en.jsonl",
    "halueval/general_data.jsonl": "https://raw.githubusercontent.com/RUCAIBox/HaluEval/main/data/general_data.json",
    "gsm8k/train.jsonl": "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/train.jsonl",
    "gsm8k/test.jsonl": "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/test.jsonl",
}
AGIEVAL_URL = "https://raw.githubusercontent.com/ruixiangcui/AGIEval/main/data/v1/{name}.jsonl"
AGIEVAL_EN = ("aqua-rat", "logiqa-en", "lsat-ar", "lsat-lr", "lsat-rc", "sat-en", "sat-en-without-passage",
              "sat-math", "math")
AGIEVAL_ZH = ("gaokao-biology", "gaokao-chemistry", "gaokao-chinese", "gaokao-english", "gaokao-geography",
              "gaokao-history", "gaokao-mathqa", "gaokao-mathcloze", "gaokao-physics", "jec-qa-ca", "jec-qa-kd",
              "logiqa-zh")


class Source:
    """Where the public files come from: a local folder laid out like ../shared/data, or a download cache."""

    def __init__(self, folder: Path | None, cache: Path):
        self.folder, self.cache = folder, cache
        self.used: dict[str, str] = {}

    def path(self, rel: str, url: str | None = None) -> Path:
        if self.folder is not None:
            p = self.folder / rel
            if not p.is_file():
                why = not_a_file(p)
                raise TellError("missing source file" if why == "no such file" else f"source file: {why}; expected "
                                "a file", file=str(p))
        else:
            url = url or SOURCES[rel]
            p = self.cache / rel
            if not p.is_file():
                p.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with urllib.request.urlopen(url, timeout=60) as r, atomic_open(p, "wb") as f:
                        f.write(r.read())
                except OSError as e:
                    raise TellError(f"cannot download {url} ({e}); pass --source DIR with local copies") from e
        self.used[rel] = sha256_file(p)
        return p

    def rows(self, rel: str, url: str | None = None) -> list[tuple[int, dict]]:
        """(1-based line number in the file, row) for each non-blank line of the JSONL file `rel`."""
        p = self.path(rel, url)
        out = []
        with open(p, "rb") as f:
            for i, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise TellError(f"not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start} of the line); "
                                    "expected the source as published (UTF-8 JSON lines)", file=str(p),
                                    line=i) from None
                if line.strip():
                    try:
                        out.append((i, json.loads(line)))
                    except json.JSONDecodeError as e:
                        raise TellError(f"invalid JSON ({e.msg})", file=str(p), line=i) from None
                    if (twice := duplicate_key(line)) is not None:  # json keeps the last silently: a wrong item
                        raise TellError(f"key '{twice}' appears twice in one object; expected each key once",
                                        file=str(p), line=i, field=twice)
        return out


def need(row, key: str, rel: str, line: int, expected: type = str):
    """Field `key` of the source row on (1-based) line `line` of `rel`, checked to be an `expected`; a
    TellError naming the file, the line and the field when it is absent or of another type (a malformed
    source file, or a different file under the expected name)."""
    want = {str: "a string", list: "a list", dict: "an object"}.get(expected, expected.__name__)
    if not isinstance(row, dict):
        raise TellError(f"expected a JSON object with field '{key}' ({want}), got {type(row).__name__} "
                        "(line numbers are 1-based)", file=rel, line=line)
    if key not in row:
        raise TellError(f"missing from this source row; expected {want} (line numbers are 1-based; the row has "
                        f"fields {sorted(row)})", file=rel, line=line, field=key)
    if not isinstance(row[key], expected):
        raise TellError(f"expected {want}, got {type(row[key]).__name__} (line numbers are 1-based)",
                        file=rel, line=line, field=key)
    return row[key]


# ---- Halu-CoT-JSON ----------------------------------------------------------------------------------------

_HALU_TASK = re.compile(r"Consider the following task:\n'relatives' : (?P<rel>.*?)\n'user_query' : (?P<query>.*?)\n"
                        r"'chatgpt_response' : (?P<response>.*)\Z", re.S)
THOUGHT_NO = ("The response addresses the query and I find no statement in it that is unsupported or "
              "incorrect, so it contains no hallucination.")
THOUGHT_YES = "The response contains statements that are unsupported or incorrect: {spans}. These are hallucinations."
SPAN_CHARS = 200
DATASET_MANIFEST = "manifest.json"  # what a built data set folder holds besides its splits (eval checks for it)


def halu_thought(spans: list[str], label: str) -> str:
    """The documented template that turns HaluEval's `hallucination_spans` into the JSON answer's thought."""
    if label == "no":
        return THOUGHT_NO
    quoted = [f'"{" ".join(s.split())[:SPAN_CHARS]}"' for s in spans if s.strip()]
    if not quoted:
        return "The response contains statements that are unsupported or incorrect. These are hallucinations."
    return THOUGHT_YES.format(spans="; ".join(quoted))


def halu_key(query: str, response: str) -> str:
    norm = lambda t: " ".join(t.split())
    return hashlib.sha256(f"{norm(query)}\x1e{norm(response)}".encode()).hexdigest()


def build_halu(src: Source) -> dict[str, list[Record]]:
    test_rel = "tell/test_Halu_CoT_JSON.jsonl"
    test_rows = src.rows(test_rel)
    template, test, keys = None, [], set()
    for i, r in test_rows:
        prompt, response = need(r, "prompt", test_rel, i), need(r, "response", test_rel, i)
        m = _HALU_TASK.search(prompt)
        if m is None:
            raise TellError("prompt does not end with the Halu-CoT-JSON task block", file=test_rel, line=i)
        head = prompt[:m.start()]
        template = template or head
        if head != template:
            raise TellError("prompt uses a different instruction template", file=test_rel, line=i)
        keys.add(halu_key(m["query"], m["response"]))
        test.append(Record(prompt=prompt, response=response.strip(), source="task", origin=test_rel, row=i,
                           meta={"kind": "json", "role": "task", "label": response.strip()}))
    train = []
    gen_rel = "halueval/general_data.jsonl"
    for i, r in src.rows(gen_rel):
        query, response = need(r, "user_query", gen_rel, i), need(r, "chatgpt_response", gen_rel, i)
        if halu_key(query, response) in keys:
            continue  # in the test set: never train on it
        label = need(r, "hallucination", gen_rel, i).strip().lower()
        prompt = (f"{template}Consider the following task:\n'relatives' : \n'user_query' : {query}\n"
                  f"'chatgpt_response' : {response}")
        answer = json.dumps({"thought": halu_thought(r.get("hallucination_spans") or [], label),
                             "hallucination": label}, ensure_ascii=False)
        train.append(Record(prompt=prompt, response=answer, source="task", origin=gen_rel, row=i,
                            meta={"kind": "json", "role": "task", "label": label, "halueval_id": r.get("ID")}))
    return {"train": train, "test": test}


# ---- IS-EN-NEWS -------------------------------------------------------------------------------------------

def build_is_en(src: Source) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for direction in ("en-is", "is-en"):
        for split, stem in (("train", "dev"), ("test", "test")):
            rel = f"tell/{stem}-{direction}.jsonl"
            recs = []
            for i, r in src.rows(rel):
                query, response = need(r, "query", rel, i), need(r, "response", rel, i)
                instruction, sep, text = query.partition("\n\n")
                if not sep:
                    raise TellError("expected an instruction sentence, a blank line, then the text", file=rel, line=i,
                                    field="query")
                recs.append(Record(prompt=query, response=response, source="task", origin=rel, row=i,
                                   meta={"kind": "translation", "role": "task", "direction": direction,
                                         "instruction": instruction, "source_text": text.strip(),
                                         "reference": strip_lead_in(response)}))
            out[f"{direction}/{split}"] = recs
    return out


# ---- GSM8K and AGIEval ------------------------------------------------------------------------------------

def build_gsm8k(src: Source) -> dict[str, list[Record]]:
    out = {}
    for split in ("train", "test"):
        rel = f"gsm8k/{split}.jsonl"
        recs = []
        for i, r in src.rows(rel):
            question, answer = need(r, "question", rel, i), need(r, "answer", rel, i)
            recs.append(Record(prompt=question, response=answer, source="general", origin=rel, row=i,
                               meta={"kind": "gsm8k", "role": "general", "answer": gsm8k_number(answer)}))
        out[split] = recs
    return out


def _literal(v):
    import warnings

    warnings.filterwarnings("ignore", category=SyntaxWarning)  # AGIEval strings such as "3.2e" are not literals
    if isinstance(v, str) and v not in ("None", ""):
        try:
            return ast.literal_eval(v)
        except (ValueError, SyntaxError):
            return v
    return None if v in ("None", "") else v


def agieval_prompt(passage, question: str, options: list[str] | None) -> str:
    parts = [p for p in (passage, question) if p]
    if options:
        parts.append("\n".join(options))
        parts.append("Answer with the letter of the correct option.")
    return "\n\n".join(parts)


def build_agieval(src: Source, names: tuple[str, ...] = AGIEVAL_EN + AGIEVAL_ZH) -> dict[str, list[Record]]:
    out = {}
    for name in names:
        rel = f"agieval/{name}.jsonl"
        recs = []
        for i, r in src.rows(rel, AGIEVAL_URL.format(name=name)):
            question = need(r, "question", rel, i)
            passage, options, label = _literal(r.get("passage")), _literal(r.get("options")), _literal(r.get("label"))
            prompt = agieval_prompt(passage, question, options)
            if options:
                labels = label if isinstance(label, list) else [label]
                if not "".join(str(x) for x in labels if x):
                    continue  # no gold answer (one jec-qa-kd item has `label: []`): it cannot be scored
                meta = {"kind": "mcq", "role": "general", "label": "".join(labels),
                        "choices": [o[1] if len(o) > 1 and o[0] == "(" else chr(65 + j) for j, o in enumerate(options)]}
                response = "".join(labels)
            else:
                answer = str(_literal(r.get("answer")))
                meta = {"kind": "cloze", "role": "general", "answer": answer}
                response = answer
            recs.append(Record(prompt=prompt, response=response, source="general", origin=rel, row=i, meta=meta))
        out[f"{name}/test"] = recs
    return out


# ---- OpenBookQA -------------------------------------------------------------------------------------------

OPENBOOKQA_URL = "https://huggingface.co/datasets/allenai/openbookqa/resolve/main/main/{split}-00000-of-00001.parquet"


def _openbookqa_rows(src: Source, split: str) -> tuple[str, list[tuple[int, dict]]]:
    """(file, rows) of one split: `openbookqa/SPLIT.jsonl` from the local folder when it holds one (AI2's
    original layout or the Hub's), else the Hub's Parquet file (downloaded into the cache)."""
    rel = f"openbookqa/{split}.jsonl"
    if src.folder is not None and (src.folder / rel).is_file():
        return rel, src.rows(rel)
    rel = f"openbookqa/{split}.parquet"
    hub = src if src.folder is None else Source(None, src.cache)
    path = hub.path(rel, OPENBOOKQA_URL.format(split=split))
    src.used.update(hub.used)
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # a damaged or non-Parquet download
        raise TellError(f"cannot read as Parquet ({type(e).__name__}: {e}); delete it to download it again",
                        file=str(path)) from None
    return rel, list(enumerate(table.to_pylist(), 1))


def _openbookqa_item(row, rel: str, line: int) -> tuple[str, list[str], list[str], str]:
    """(question, option texts, option letters, answer letter) from AI2's layout (`question.stem`,
    `question.choices`) or the Hub's (`question_stem`, `choices.text` / `choices.label`)."""
    if isinstance(row, dict) and isinstance(row.get("question"), dict):
        q = row["question"]
        stem, choices = need(q, "stem", rel, line), need(q, "choices", rel, line, list)
        texts = [need(c, "text", rel, line) for c in choices]
        labels = [need(c, "label", rel, line) for c in choices]
    else:
        stem, choices = need(row, "question_stem", rel, line), need(row, "choices", rel, line, dict)
        texts, labels = list(need(choices, "text", rel, line, list)), list(need(choices, "label", rel, line, list))
    answer = need(row, "answerKey", rel, line).strip()
    if len(texts) != len(labels) or answer not in labels:
        raise TellError(f"expected the answer key among the option labels {labels}, got {answer!r}", file=rel,
                        line=line, field="answerKey")
    return stem, texts, labels, answer


def build_openbookqa(src: Source) -> dict[str, list[Record]]:
    """OpenBookQA (the `main` set: 4,957 train, 500 test questions), four options, scored as mcq."""
    out = {}
    for split in ("train", "test"):
        rel, rows = _openbookqa_rows(src, split)
        recs = []
        for i, r in rows:
            stem, texts, labels, answer = _openbookqa_item(r, rel, i)
            prompt = agieval_prompt(None, stem, [f"({lab}) {t}" for lab, t in zip(labels, texts)])
            recs.append(Record(prompt=prompt, response=answer, source="general", origin=rel, row=i,
                               meta={"kind": "mcq", "role": "general", "label": answer, "choices": labels}))
        out[split] = recs
    return out


BUILDERS: dict[str, Callable[[Source], dict[str, list[Record]]]] = {
    "halu-cot-json": build_halu, "is-en-news": build_is_en, "gsm8k": build_gsm8k, "agieval": build_agieval,
    "openbookqa": build_openbookqa}


def not_built(path: str | Path) -> str | None:
    """What to do when `path`, which is not here, names a split of data set NAME in a folder DIR where NAME is
    not built (DIR/NAME/train.jsonl, DIR/is-en-news/en-is/test.jsonl): "the data set NAME is not built here: run
    `tell data build NAME --out DIR` first"; else None."""
    for folder in list(Path(path).parents)[:2]:
        if folder.name in BUILDERS:
            if (folder / DATASET_MANIFEST).is_file():
                return None  # built, and the split is not one it has
            return (f"the data set {folder.name} is not built here: run `tell data build {folder.name} --out "
                    f"{folder.parent.as_posix()}` first")
    return None


def default_source() -> Path | None:
    for cand in (Path.cwd() / ".." / "shared" / "data", Path(__file__).resolve().parents[4] / "shared" / "data"):
        if cand.is_dir():
            return cand.resolve()
    return None


def build(name: str, out: str | Path, source: str | None = None, cache: str | Path | None = None) -> dict:
    """Build data set `name` into `out/name/`; return its manifest."""
    if name not in BUILDERS:
        raise TellError(f"unknown data set '{name}'; expected one of {sorted(BUILDERS)}")
    expect_folder(Path(out) / name)  # before the sources are read
    folder = Path(source) if source else default_source()
    if folder is not None and not folder.is_dir():
        raise TellError("no such folder", file=str(folder))
    src = Source(folder, Path(cache or Path.home() / ".cache" / "tell" / "sources"))
    splits = BUILDERS[name](src)
    empty = sorted(split for split, recs in splits.items() if not recs)
    if empty:  # a built set of 0 items would evaluate to nothing and look like a result
        raise TellError(f"the {name} source gives 0 items for {empty}; expected the public files whole (is a source "
                        "file empty?)", file=str(folder) if folder else None)
    manifest = {"kind": "tell-dataset", "name": name, "splits": {split: len(recs) for split, recs in splits.items()},
                "source": str(folder) if folder else "downloaded", "source_sha256": src.used,
                "templates": {"halu_thought_no": THOUGHT_NO, "halu_thought_yes": THOUGHT_YES} if name == "halu-cot-json"
                else {}}
    # every split written in a staging folder, then moved in with the manifest last: a build that fails (a full
    # disk) keeps the last build's files, never its manifest beside some new splits
    with staged_output(Path(out) / name, last=(DATASET_MANIFEST,)) as dest:
        for split, recs in splits.items():
            with atomic_open(dest / f"{split}.jsonl") as f:
                for rec in recs:
                    f.write(json.dumps(rec.to_json(), ensure_ascii=False, sort_keys=True) + "\n")
        write_json(dest / DATASET_MANIFEST, manifest)
    return manifest
