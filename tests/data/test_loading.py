"""Input formats, file types and validation."""

from __future__ import annotations

import json

import pytest

from tell.data.loading import load_records
from tell.errors import TellError

from conftest import write_jsonl


@pytest.mark.parametrize("row, prompt, response, system", [
    ({"instruction": "Add", "input": "2 and 3", "output": "5"}, "Add\n\n2 and 3", "5", ""),
    ({"instruction": "Add", "input": "", "output": "5", "system": "Be brief."}, "Add", "5", "Be brief."),
    ({"prompt": "p", "response": "r"}, "p", "r", ""),
    ({"prompt": "p", "completion": "c"}, "p", "c", ""),
    ({"query": "q", "response": "r"}, "q", "r", ""),
    ({"question": "q", "answer": "a"}, "q", "a", ""),
    ({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "u"},
                   {"role": "assistant", "content": "a"}]}, "u", "a", "S"),
    ({"conversations": [{"from": "human", "value": "u"}, {"from": "gpt", "value": "a"}]}, "u", "a", ""),
])
def test_formats_normalise(tmp_path, row, prompt, response, system):
    f = write_jsonl(tmp_path / "d.jsonl", [row])
    loaded = load_records(str(f), source="task", progress=False)
    rec = loaded.records[0]
    assert (rec.prompt, rec.response, rec.system) == (prompt, response, system)
    assert (rec.source, rec.origin, rec.row) == ("task", str(f), 1)


def test_multi_turn_chat_keeps_history(tmp_path):
    turns = [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
             {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}]
    rec = load_records(str(write_jsonl(tmp_path / "c.jsonl", [{"messages": turns}])), source="task",
                       progress=False).records[0]
    assert rec.prompt == "u2" and rec.response == "a2"
    assert rec.history == [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"}]


def test_json_csv_parquet_and_json_lines_named_json(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": f"p{i}", "response": f"r{i}"} for i in range(3)]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "b.json").write_text("\n".join(json.dumps(r) for r in rows))  # JSON lines named .json
    (tmp_path / "c.csv").write_text("prompt,response\n" + "\n".join(f"p{i},r{i}" for i in range(3)) + "\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for name in ("a.json", "b.json", "c.csv", "d.parquet"):
        recs = load_records(str(tmp_path / name), source="general", progress=False).records
        assert [(r.prompt, r.response) for r in recs] == [(f"p{i}", f"r{i}") for i in range(3)], name
    # CSV rows are numbered by line (the header is line 1)
    assert [r.row for r in load_records(str(tmp_path / "c.csv"), source="t", progress=False).records] == [2, 3, 4]


@pytest.mark.parametrize("line, fragment", [
    ('{"prompt": "p", "response": ', "invalid JSON"),
    ('{"prompt": "p", "response": ""}', "field 'response': is empty"),
    ('{"prompt": "p", "response": null}', "field 'response': is null"),
    ('{"prompt": 3, "response": "r"}', "field 'prompt': expected a string, got int"),
    ('{"prompt": "p"}', "field 'response': missing"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, line, fragment):
    f = write_jsonl(tmp_path / "bad.jsonl", ['{"prompt": "ok", "response": "fine"}', line])
    with pytest.raises(TellError) as e:
        load_records(str(f), source="task", progress=False)
    msg = str(e.value)
    assert msg.startswith(f"{f}:2: ") and fragment in msg and "\n" not in msg


def test_missing_field_once_format_is_known(tmp_path):
    f = write_jsonl(tmp_path / "m.jsonl", ['{"query": "q", "response": "r"}', '{"query": "q2", "answer": "x"}'])
    with pytest.raises(TellError, match=r"m.jsonl:2: field 'response': missing"):
        load_records(str(f), source="task", progress=False)


def test_skip_invalid_counts_per_reason(tmp_path):
    f = write_jsonl(tmp_path / "s.jsonl", [
        '{"prompt": "a", "response": "b"}', "{broken", '{"prompt": "c", "response": ""}',
        '{"prompt": "d"}', '{"prompt": 5, "response": "e"}', '{"prompt": "f", "response": "g"}'])
    loaded = load_records(str(f), source="task", skip_invalid=True, progress=False)
    assert [r.prompt for r in loaded.records] == ["a", "f"]
    assert dict(loaded.dropped) == {"invalid_json": 1, "empty_field": 1, "missing_field": 1, "wrong_type": 1}
    assert loaded.rows == 6


def test_empty_missing_and_unknown_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(TellError, match="empty.jsonl: the file is empty"):
        load_records(str(tmp_path / "empty.jsonl"), source="task", progress=False)
    with pytest.raises(TellError, match="no such file"):
        load_records(str(tmp_path / "nope.jsonl"), source="task", progress=False)
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(TellError, match="unknown file type"):
        load_records(str(tmp_path / "x.txt"), source="task", progress=False)
    with pytest.raises(TellError, match="unknown format 'yaml'"):
        load_records(str(tmp_path / "x.txt"), source="task", fmt="yaml", progress=False)


def test_named_format_overrides_detection(tmp_path):
    # A row with both alpaca and prompt/response keys: detection prefers alpaca; --format picks the other.
    f = write_jsonl(tmp_path / "both.jsonl", [{"instruction": "i", "output": "o", "prompt": "p", "response": "r"}])
    assert load_records(str(f), source="t", progress=False).records[0].prompt == "i"
    assert load_records(str(f), source="t", fmt="prompt_response", progress=False).records[0].prompt == "p"


def test_chat_must_end_with_assistant(tmp_path):
    f = write_jsonl(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": "u"}]}])
    with pytest.raises(TellError, match="field 'messages': expected turns ending with a user turn then an assistant"):
        load_records(str(f), source="task", progress=False)


def test_hub_ids_go_through_datasets(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return [{"question": "q", "answer": "a"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    recs = load_records("openai/gsm8k:test", source="general", progress=False).records
    assert calls == [("openai/gsm8k", "test")] and recs[0].response == "a" and recs[0].row == 1  # 1-based records
    load_records("tatsu-lab/alpaca", source="general", fmt="question_answer", progress=False)
    assert calls[-1] == ("tatsu-lab/alpaca", "train")


def test_unknown_format_on_first_row(tmp_path):
    f = write_jsonl(tmp_path / "u.jsonl", [{"text": "x"}])
    with pytest.raises(TellError, match=r"u.jsonl:1: unknown record format \(keys \['text'\]\)"):
        load_records(str(f), source="task", progress=False)
