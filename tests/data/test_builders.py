"""`tell.data.builders`: the paper's data sets built from small local copies, refusals, the train/test overlap."""

from __future__ import annotations

import json

import pytest

from tell.cli import main
from tell.data.builders import build, halu_key

from conftest import SHARED, fake_source, write_jsonl


def _obqa_ai2(i: int) -> dict:
    return {"id": f"q{i}", "question": {"stem": f"Which is a planet {i}?", "choices": [
        {"text": t, "label": lab} for t, lab in zip(("a river", "a planet", "a cloud", "a candle"), "ABCD")]},
        "answerKey": "B"}


def test_builders_on_small_copies(tmp_path):
    src = fake_source(tmp_path / "src")
    m = build("halu-cot-json", tmp_path / "data", source=str(src))
    assert m["splits"] == {"train": 8, "test": 4}
    train = [json.loads(x) for x in (tmp_path / "data/halu-cot-json/train.jsonl").read_text().splitlines()]
    assert all(json.loads(r["response"])["hallucination"] == r["meta"]["label"] for r in train)
    yes = next(r for r in train if r["meta"]["label"] == "yes")
    assert '"answer' in json.loads(yes["response"])["thought"] and yes["prompt"].startswith("Role and Goal: judge.")
    m = build("is-en-news", tmp_path / "data", source=str(src))
    rec = json.loads((tmp_path / "data/is-en-news/en-is/test.jsonl").read_text().splitlines()[0])
    assert rec["meta"]["instruction"] == "Translate this into Icelandic." and rec["meta"]["source_text"] == "text 0"
    assert rec["meta"]["reference"] == "out 0"
    build("gsm8k", tmp_path / "data", source=str(src))
    assert json.loads((tmp_path / "data/gsm8k/test.jsonl").read_text())["meta"]["answer"] == "4"


def test_a_rebuild_that_fails_keeps_the_last_build_whole(tmp_path, monkeypatch):
    """Splits and manifest are written in a staging folder and moved in together: a rebuild from a changed source
    that fails at its manifest (a full disk) leaves the last build's splits beside their manifest, not new splits
    beside an old manifest; a folder made for a first build that fails is not left behind."""
    import errno

    from tell.data import builders
    from tell.errors import TellError

    src = fake_source(tmp_path / "src")
    real_write = builders.write_json

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(builders, "write_json", full)
    with pytest.raises(TellError, match="No space left"):
        build("is-en-news", tmp_path / "data", source=str(src))
    assert not (tmp_path / "data").exists()
    monkeypatch.setattr(builders, "write_json", real_write)
    build("is-en-news", tmp_path / "data", source=str(src))
    folder = tmp_path / "data" / "is-en-news"
    before = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert "en-is/test.jsonl" in before and "manifest.json" in before
    write_jsonl(src / "tell" / "test-en-is.jsonl", [{"query": "Translate this into Icelandic.\n\n new", "response":
                                                     "Sure, here is the Icelandic translation: \n\n ny"}])
    monkeypatch.setattr(builders, "write_json", full)
    with pytest.raises(TellError, match="No space left"):
        build("is-en-news", tmp_path / "data", source=str(src))
    assert {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_malformed_source_row_names_file_line_and_field(tmp_path, capsys):
    from tell.errors import TellError

    src = fake_source(tmp_path / "src")
    # A blank line first: the reported number is the file's line (1-based), not the row's index.
    write_jsonl(src / "gsm8k" / "test.jsonl", [{"question": "2+2?", "answer": "#### 4"}, "", {"question": "3+3?"}])
    with pytest.raises(TellError) as e:
        build("gsm8k", tmp_path / "data", source=str(src))
    assert str(e.value).startswith("gsm8k/test.jsonl:3: field 'answer': missing from this source row; "
                                   "expected a string")
    assert (e.value.file, e.value.line, e.value.field) == ("gsm8k/test.jsonl", 3, "answer")
    # The wrong type is named too, and the command says it in one line, exit code 2, nothing written.
    write_jsonl(src / "tell" / "dev-en-is.jsonl", [{"query": ["not", "text"], "response": "r"}])
    assert main(["data", "build", "is-en-news", "--source", str(src), "--out", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err == "tell: error: tell/dev-en-is.jsonl:1: field 'query': expected a string, got list " \
                  "(line numbers are 1-based)\n"
    assert not (tmp_path / "data").exists()


@pytest.mark.skipif(not (SHARED / "data" / "halueval").is_dir(), reason="no ../shared/data")
def test_halu_train_has_zero_overlap_with_the_official_test(tmp_path):
    import re

    m = build("halu-cot-json", tmp_path, source=str(SHARED / "data"))
    assert m["splits"] == {"train": 3001, "test": 1506}  # 4,507 HaluEval items = 3,001 + 1,506
    pat = re.compile(r"'user_query' : (.*?)\n'chatgpt_response' : (.*)\Z", re.S)
    keys = lambda split: {halu_key(*pat.search(json.loads(x)["prompt"]).groups())
                          for x in (tmp_path / f"halu-cot-json/{split}.jsonl").read_text().splitlines()}
    test, train = keys("test"), keys("train")
    assert len(test) == 1506 and not (test & train)


def test_openbookqa_builder_local_copy_and_hub_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tell.errors import TellError
    from tell.eval.metrics import score_mcq

    src = tmp_path / "src"
    for split in ("train", "test"):  # AI2's original JSONL layout, in a local copy
        write_jsonl(src / "openbookqa" / f"{split}.jsonl", [_obqa_ai2(i) for i in range(3)])
    m = build("openbookqa", tmp_path / "a", source=str(src))
    assert m["splits"] == {"train": 3, "test": 3} and set(m["source_sha256"]) == {"openbookqa/train.jsonl",
                                                                                  "openbookqa/test.jsonl"}
    rec = json.loads((tmp_path / "a/openbookqa/test.jsonl").read_text().splitlines()[0])
    assert rec["meta"] == {"kind": "mcq", "role": "general", "label": "B", "choices": ["A", "B", "C", "D"]}
    assert rec["prompt"].startswith("Which is a planet 0?\n\n(A) a river\n(B) a planet") and rec["response"] == "B"
    assert score_mcq("The answer is (B).", rec["meta"]["label"], rec["meta"]["choices"])["correct"] == 1.0
    # The Hub's Parquet layout (allenai/openbookqa, main): read from the download cache when the local folder has
    # no copy (a pre-filled cache: the test never downloads).
    cache = tmp_path / "cache"
    for split in ("train", "test"):
        rows = [{"id": f"h{i}", "question_stem": f"What grows {i}?", "choices": {"text": ["stone", "tree", "glass", "iron"],
                 "label": ["A", "B", "C", "D"]}, "answerKey": "B"} for i in range(2)]
        (cache / "openbookqa").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), cache / "openbookqa" / f"{split}.parquet")
    (tmp_path / "nocopy").mkdir()
    m = build("openbookqa", tmp_path / "b", source=str(tmp_path / "nocopy"), cache=str(cache))
    assert m["splits"] == {"train": 2, "test": 2} and "openbookqa/test.parquet" in m["source_sha256"]
    rec = json.loads((tmp_path / "b/openbookqa/test.jsonl").read_text().splitlines()[1])
    assert rec["prompt"].startswith("What grows 1?\n\n(A) stone\n(B) tree") and rec["meta"]["label"] == "B"
    bad = _obqa_ai2(0) | {"answerKey": "E"}
    write_jsonl(src / "openbookqa" / "test.jsonl", [bad])
    with pytest.raises(TellError, match=r"openbookqa/test.jsonl:1: field 'answerKey': expected the answer key"):
        build("openbookqa", tmp_path / "c", source=str(src))


def test_build_into_a_file_is_refused_before_the_sources_are_read(tmp_path, capsys, monkeypatch):
    import tell.data.builders as B

    def never(src):
        raise AssertionError("the sources were read for an output folder that cannot be written")

    monkeypatch.setitem(B.BUILDERS, "gsm8k", never)
    (tmp_path / "data").write_text("not a folder\n")
    assert main(["data", "build", "gsm8k", "--out", str(tmp_path / "data"), "--source", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a file (or lies under one); expected a folder" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "data").read_text() == "not a folder\n"
