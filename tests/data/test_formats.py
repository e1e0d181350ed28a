"""Real data in (issue 13): per-input formats and column mappings, LLaMA-Factory's dataset_info.json, tool use,
multi-turn history, KTO labels, media, ignored keys, and files as users' tools save them. The data files are
written here in the shapes LLaMA-Factory, ms-swift and axolotl use (no peer files in the repository)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import yaml

from tell.artifacts import MixtureDir
from tell.cli import main
from tell.data.loading import load_records
from tell.data.records import Record
from tell.errors import TellError

from conftest import alpaca_rows, write_jsonl

TOOLS = [{"name": "get_weather", "description": "weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]

GLAIVE = {"conversations": [
    {"from": "human", "value": "what is the weather in paris"},
    {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": "paris"}})},
    {"from": "observation", "value": json.dumps({"temp": 21})},
    {"from": "gpt", "value": "it is 21 degrees in paris"}], "tools": json.dumps(TOOLS)}

GLAIVE_CALL = {"conversations": GLAIVE["conversations"][:2], "tools": json.dumps(TOOLS)}  # the answer is a call


def _general(tmp_path: Path, n: int = 200) -> Path:
    return write_jsonl(tmp_path / "general.jsonl", alpaca_rows(n, "general", seed=2))


def _prepare(tmp_path, tok, *args, out="mix", general=True) -> dict:
    argv = ["prepare", *args, "--tokenizer", str(tok), "--seed", "1", "--out", str(tmp_path / out), "--no-progress"]
    if general:
        argv += ["--general", str(_general(tmp_path)), "--ratio", "1"]
    elif "--general-tokens" not in args:
        argv += ["--ratio", "0"]
    assert main(argv) == 0
    return json.loads((tmp_path / out / "manifest.json").read_text())


def _records(tmp_path, out="mix", source="task"):
    return [r for _, r in MixtureDir(tmp_path / out).records() if r.source == source]


def _dataset_info(tmp_path: Path) -> Path:
    """A LLaMA-Factory data folder: dataset_info.json and the files it names."""
    d = tmp_path / "data"
    write_jsonl(d / "my_task.jsonl", [{"q": f"judge {i}", "ctx": f"context {i}", "a": f"verdict {i}",
                                       "sys": "be strict", "hist": [[f"earlier {i}", f"reply {i}"]]}
                                      for i in range(6)])
    (d / "glaive_toolcall_demo.json").write_text(json.dumps([GLAIVE, GLAIVE_CALL], indent=2))
    write_jsonl(d / "kto_demo.jsonl", [{"messages": [{"role": "user", "content": f"ask {i}"},
                                                     {"role": "assistant", "content": f"reply {i}"}],
                                        "label": i % 2 == 0} for i in range(6)])
    info = {
        "my_task": {"file_name": "my_task.jsonl", "columns": {"prompt": "q", "query": "ctx", "response": "a",
                                                               "system": "sys", "history": "hist"}},
        "glaive_toolcall_demo": {"file_name": "glaive_toolcall_demo.json", "formatting": "sharegpt",
                                 "columns": {"messages": "conversations", "tools": "tools"}},
        "kto_demo": {"file_name": "kto_demo.jsonl", "formatting": "sharegpt",
                     "columns": {"messages": "messages", "kto_tag": "label"},
                     "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                              "assistant_tag": "assistant"}},
        "dpo_demo": {"file_name": "my_task.jsonl", "ranking": True, "columns": {"prompt": "q", "chosen": "a",
                                                                                "rejected": "a"}},
    }
    (d / "dataset_info.json").write_text(json.dumps(info, indent=2))
    return d / "dataset_info.json"


def test_columns_flag_maps_one_input_and_another_keeps_its_format(tmp_path, hf_tokenizer_dir):
    # HaluEval's keys for the task; a ShareGPT general file beside it (each input read in its own format).
    halu = write_jsonl(tmp_path / "halu.jsonl", [{"ID": i, "user_query": f"judge the answer {i}",
                                                  "chatgpt_response": f"answer {i}"} for i in range(5)])
    chats = write_jsonl(tmp_path / "chats.jsonl", [{"conversations": [{"from": "human", "value": f"question {i}"},
                                                                      {"from": "gpt", "value": f"answer {i}"}]}
                                                   for i in range(50)])
    m = _prepare(tmp_path, hf_tokenizer_dir, "--task", str(halu), "--columns",
                 "prompt=user_query,response=chatgpt_response", "--general", str(chats), "--format", "sharegpt",
                 general=False)
    assert sorted(r.prompt for r in _records(tmp_path)) == [f"judge the answer {i}" for i in range(5)]
    task_in, = m["inputs"]["task"]
    assert task_in["format"] == "prompt_response"
    assert task_in["columns"] == {"prompt": "user_query", "response": "chatgpt_response"}
    assert task_in["ignored_keys"] == {"ID": 5}  # counted, not silently dropped
    assert m["config"]["task"] == {"path": str(halu), "columns": {"prompt": "user_query",
                                                                  "response": "chatgpt_response"}}


def test_columns_before_any_input_apply_to_all_and_errors_name_the_files_key(tmp_path, hf_tokenizer_dir):
    f = write_jsonl(tmp_path / "t.jsonl", [{"q": "a question", "a": "an answer"}, {"q": "another question"}])
    with pytest.raises(TellError, match=r"t.jsonl:2: field 'a': missing"):
        load_records(str(f), source="task", columns={"prompt": "q", "response": "a"}, progress=False)
    assert main(["prepare", "--columns", "prompt=q,response=a", "--task", str(f), "--tokenizer",
                 str(hf_tokenizer_dir), "--ratio", "0", "--out", str(tmp_path / "m")]) == 2
    with pytest.raises(SystemExit):  # a malformed --columns is argparse's usage error
        main(["prepare", "--task", str(f), "--columns", "prompt"])


def test_yaml_inputs_are_mappings_checked_by_key(tmp_path, hf_tokenizer_dir):
    task = write_jsonl(tmp_path / "task.jsonl", [{"dialog": [{"role": "user", "content": f"hi {i}"},
                                                             {"role": "assistant", "content": f"yo {i}"}]}
                                                 for i in range(4)])
    cfg = {"task": {"path": str(task), "format": "messages", "columns": {"messages": "dialog"}},
           "general": [str(_general(tmp_path))], "tokenizer": str(hf_tokenizer_dir), "ratio": 1,
           "out": str(tmp_path / "mix"), "progress": False}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["prepare", "--config", str(tmp_path / "p.yaml")]) == 0
    assert sorted(r.response for r in _records(tmp_path)) == [f"yo {i}" for i in range(4)]
    cfg["task"] = {"path": str(task), "colums": {"messages": "dialog"}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(TellError, match=r"bad.yaml: field 'task': unknown key 'colums' of an input"):
        main(["prepare", "--config", str(tmp_path / "bad.yaml"), "--debug"])
    cfg["task"] = {"path": str(task), "columns": {"answer_text": "dialog"}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(TellError, match=r"field 'task': unknown field 'answer_text'"):
        main(["prepare", "--config", str(tmp_path / "bad.yaml"), "--debug"])


def test_dataset_info_entries_are_read_as_llama_factory_reads_them(tmp_path, hf_tokenizer_dir):
    info = _dataset_info(tmp_path)
    m = _prepare(tmp_path, hf_tokenizer_dir, "--dataset-info", str(info), "--task", "my_task", "--general",
                 "glaive_toolcall_demo", "--general", "kto_demo", "--general-tokens", "100000", "--allow-repeat",
                 general=False)
    task = _records(tmp_path)
    t0 = next(r for r in task if r.prompt.endswith("judge 0\n\ncontext 0"))
    assert (t0.system, t0.response) == ("be strict", "verdict 0")
    assert t0.history == [{"role": "user", "content": "earlier 0"}, {"role": "assistant", "content": "reply 0"}]
    t_in, glaive_in, kto_in = m["inputs"]["task"][0], *m["inputs"]["general"]
    assert t_in["dataset"] == "my_task" and t_in["format"] == "alpaca" and t_in["ignored_keys"] == {}
    assert glaive_in["format"] == "sharegpt" and glaive_in["records"] == 2
    assert kto_in["records"] == 3 and kto_in["dropped"] == {"kto_undesirable": 3}  # label: false left out
    assert m["dropped"]["general"]["kto_undesirable"] == 3
    with pytest.raises(TellError, match=r"dataset_info.json: field 'dpo_demo': preference data"):
        load_records("dpo_demo", source="task", dataset_info=str(info), progress=False)
    with pytest.raises(TellError, match=r"no entry 'nope'"):
        load_records({"dataset": "nope"}, source="task", dataset_info=str(info), progress=False)


def test_tool_calling_turns_and_tools_are_kept_and_carried_in_the_mixture(tmp_path, hf_tokenizer_dir):
    f = tmp_path / "glaive.json"
    f.write_text(json.dumps([GLAIVE, GLAIVE_CALL]))
    final, call = load_records(str(f), source="task", progress=False).records
    assert final.tools == TOOLS and call.tools == TOOLS
    assert (final.prompt_role, final.response_role, final.response) == ("tool", "assistant", "it is 21 degrees in paris")
    assert [t["role"] for t in final.history] == ["user", "tool_call"]
    assert (call.prompt, call.response_role) == ("what is the weather in paris", "tool_call")
    _prepare(tmp_path, hf_tokenizer_dir, "--task", str(f))
    back = sorted(_records(tmp_path), key=lambda r: r.response_role)
    assert [(r.tools, r.prompt_role, r.response_role, r.history) for r in back] == \
        [(x.tools, x.prompt_role, x.response_role, x.history) for x in (final, call)]


def test_openai_tool_calls_ms_swift_roles_and_parallel_results(tmp_path):
    rows = [{"messages": [  # OpenAI: assistant tool_calls (arguments as JSON text), then two tool results
        {"role": "user", "content": "weather in paris and rome"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "paris"}'}},
            {"id": "2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "rome"}'}}]},
        {"role": "tool", "tool_call_id": "1", "content": "21"}, {"role": "tool", "tool_call_id": "2", "content": "25"},
        {"role": "assistant", "content": "21 and 25"}], "tools": TOOLS},
        {"messages": [  # ms-swift: tool_call / tool_response roles
            {"role": "user", "content": "weather in oslo"}, {"role": "tool_call", "content": '{"name": "get_weather", '
                                                                                          '"arguments": {"city": "oslo"}}'},
            {"role": "tool_response", "content": "3"}, {"role": "assistant", "content": "3 degrees"}]}]
    loaded = load_records(str(write_jsonl(tmp_path / "t.jsonl", rows)), source="task", progress=False)
    openai, swift = loaded.records
    assert openai.prompt == "21\n25" and openai.history[1]["role"] == "tool_call"
    assert json.loads(openai.history[1]["content"])[1]["arguments"] == '{"city": "rome"}'
    assert swift.prompt_role == "tool" and swift.history[1]["role"] == "tool_call"
    assert loaded.ignored == {"messages[].tool_call_id": 1}


def test_tools_through_a_chat_template_and_the_plain_template(tmp_path, hf_tokenizer_dir):
    from transformers import AutoTokenizer

    from tell import prompting

    f = tmp_path / "glaive.json"
    f.write_text(json.dumps([GLAIVE]))
    rec = load_records(str(f), source="task", progress=False).records[0]
    tok = AutoTokenizer.from_pretrained(hf_tokenizer_dir)
    # The plain template (no chat template): tools in the system text, calls and results in their tags.
    text = prompting.prompt_text(tok, rec)
    assert text.startswith('Tools you can call (JSON):\n[{"name": "get_weather"')
    assert '### Response:\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "paris"}}\n</tool_call>' in text
    assert text.endswith('### Instruction:\n<tool_response>\n{"temp": 21}\n</tool_response>\n\n### Response:\n')
    call = Record(prompt="weather?", response='{"name": "get_weather"}', response_role="tool_call")
    assert prompting._plain_answer(call) == '<tool_call>\n{"name": "get_weather"}\n</tool_call>'  # the trained answer
    # A chat template that knows tools gets them, and the call as tool_calls, natively.
    tok.chat_template = (
        "{% if tools %}[TOOLS]{{ tools | tojson }}[/TOOLS]{% endif %}"
        "{% for m in messages %}<{{ m.role }}>"
        "{% if m.tool_calls %}{% for c in m.tool_calls %}[CALL]{{ c.function.name }} {{ c.function.arguments | tojson }}"
        "{% endfor %}{% else %}{{ m.content }}{% endif %}</s>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
    text = prompting.prompt_text(tok, rec)
    assert text.startswith('[TOOLS][{"name": "get_weather"')
    assert '<assistant>[CALL]get_weather {"city": "paris"}</s><tool>{"temp": 21}</s><assistant>' in text
    p, a = prompting.encode(tok, rec)
    assert p and a  # the answer follows the prompt the template rendered


def test_content_parts_history_pairs_images_and_ignored_keys(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "two"}]},
                      {"role": "assistant", "content": "ok", "weight": 1}], "id": 7},
        # ms-swift: query/response with history pairs
        {"query": "and now?", "response": "done", "history": [["first", "one"], ["second", "two"]], "system": "s"},
    ]
    recs = load_records(str(write_jsonl(tmp_path / "a.jsonl", rows[:1])), source="t", progress=False)
    assert recs.records[0].prompt == "part one\ntwo"
    assert recs.ignored == {"id": 1, "messages[].weight": 1}
    swift = load_records(str(write_jsonl(tmp_path / "b.jsonl", rows[1:])), source="t", progress=False).records[0]
    assert [t["content"] for t in swift.history] == ["first", "one", "second", "two"] and swift.system == "s"
    # Images: a clear error naming the key; with --skip-invalid the row is dropped and counted.
    media = [{"messages": [{"role": "user", "content": "<image>what is this"}, {"role": "assistant", "content": "a cat"}],
              "images": ["cat.png"]},
             {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}},
                                                        {"type": "text", "text": "and this"}]},
                           {"role": "assistant", "content": "a dog"}]},
             {"messages": [{"role": "user", "content": "plain"}, {"role": "assistant", "content": "text"}],
              "images": []}]
    f = write_jsonl(tmp_path / "mm.jsonl", media)
    with pytest.raises(TellError, match=r"mm.jsonl:1: field 'images': holds 1 image item\(s\); tell trains text-only"):
        load_records(str(f), source="t", progress=False)
    with pytest.raises(TellError, match=r"mm2.jsonl:1: field 'messages\[0\].content\[0\]': is a 'image_url' part"):
        load_records(str(write_jsonl(tmp_path / "mm2.jsonl", media[1:2])), source="t", progress=False)
    skipped = load_records(str(f), source="t", skip_invalid=True, progress=False)
    assert len(skipped.records) == 1 and skipped.dropped == {"multimodal": 2} and not skipped.ignored


def test_ignored_keys_and_kto_rows_are_counted_and_warned(tmp_path, hf_tokenizer_dir, capsys):
    rows = [{"instruction": f"do task {i}", "input": "", "output": f"done {i}", "category": "x", "label": i != 0}
            for i in range(5)]
    m = _prepare(tmp_path, hf_tokenizer_dir, "--task", str(write_jsonl(tmp_path / "t.jsonl", rows)))
    t, = m["inputs"]["task"]
    assert t["ignored_keys"] == {"category": 4} and t["dropped"] == {"kto_undesirable": 1} and t["records"] == 4
    assert m["inputs"]["general"][0]["ignored_keys"] == {}
    err = capsys.readouterr().err
    assert "keys not read by format 'alpaca': category (4 rows)" in err and "1 rows with label: false" in err


def test_bom_crlf_pretty_json_and_record_numbers(tmp_path):
    rows = [{"prompt": f"p{i}", "response": f"r{i}"} for i in range(3)]
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(json.dumps(r).encode() for r in rows) + b"\r\n")
    (tmp_path / "pretty.json").write_text(json.dumps(rows[0], indent=2), encoding="utf-8-sig")
    (tmp_path / "array.json").write_text(json.dumps(rows, indent=4).replace("\n", "\r\n"), encoding="utf-8-sig")
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfprompt,response\r\np0,r0\r\np1,r1\r\n")
    for name, n in (("bom.jsonl", 3), ("pretty.json", 1), ("array.json", 3), ("bom.csv", 2)):
        recs = load_records(str(tmp_path / name), source="t", progress=False).records
        assert [r.prompt for r in recs] == [f"p{i}" for i in range(n)], name
    assert [r.row for r in load_records(str(tmp_path / "array.json"), source="t", progress=False).records] == [1, 2, 3]
    (tmp_path / "bad_array.json").write_text(json.dumps(rows[:1] + [{"prompt": "p", "response": ""}], indent=2))
    with pytest.raises(TellError, match=r"bad_array.json: record 2: field 'response': is empty"):
        load_records(str(tmp_path / "bad_array.json"), source="t", progress=False)
    (tmp_path / "broken.json").write_text('{\n  "prompt": "p",\n  "response": "r"\n  "x": 1\n}')
    with pytest.raises(TellError, match=r"broken.json:4: invalid JSON \(Expecting ',' delimiter at line 4"):
        load_records(str(tmp_path / "broken.json"), source="t", progress=False)


def test_folders_globs_and_compressed_shards_with_checksums(tmp_path, hf_tokenizer_dir):
    import zstandard

    shards = tmp_path / "shards"
    shards.mkdir()
    lines = [json.dumps({"prompt": f"shard question {i}", "response": f"answer {i}"}) for i in range(9)]
    (shards / "part-0.jsonl").write_text("\n".join(lines[:3]) + "\n")
    with gzip.open(shards / "part-1.jsonl.gz", "wt") as f:
        f.write("\n".join(lines[3:6]) + "\n")
    (shards / "part-2.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(("\n".join(lines[6:]) + "\n").encode()))
    (shards / "README.md").write_text("not data")
    (shards / "dataset_info.json").write_text("{}")
    folder = load_records(str(shards), source="t", progress=False)
    assert [r.prompt for r in folder.records] == [f"shard question {i}" for i in range(9)]
    assert folder.files == 3 and folder.records[4].origin.endswith("part-1.jsonl.gz") and folder.records[4].row == 2
    globbed = load_records(str(shards / "part-*.jsonl*"), source="t", progress=False)
    assert globbed.sha256 == folder.sha256 and len(globbed.records) == 9
    m = _prepare(tmp_path, hf_tokenizer_dir, "--task", str(shards))
    assert m["inputs"]["task"][0]["files"] == 3 and m["inputs"]["task"][0]["sha256"] == folder.sha256
    with gzip.open(shards / "part-1.jsonl.gz", "wt") as f:  # any shard's change changes the input's checksum
        f.write("\n".join(lines[3:6]) + "\n" + '{"prompt": "x", "response": \n')
    assert load_records(str(shards), source="t", skip_invalid=True, progress=False).sha256 != folder.sha256
    with pytest.raises(TellError, match=r"part-1.jsonl.gz:4: invalid JSON"):
        load_records(str(shards), source="t", progress=False)
    with pytest.raises(TellError, match="no files match the pattern"):
        load_records(str(tmp_path / "nothing-*.jsonl"), source="t", progress=False)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(TellError, match="empty_dir: is a folder; expected a data file"):
        load_records(str(tmp_path / "empty_dir"), source="t", progress=False)


def test_a_datasets_save_to_disk_folder(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"question": f"q{i}", "answer": f"a{i}"} for i in range(3)]).save_to_disk(
        str(tmp_path / "saved"))
    loaded = load_records(str(tmp_path / "saved"), source="t", progress=False)
    assert [r.response for r in loaded.records] == ["a0", "a1", "a2"] and loaded.records[0].row == 1
    assert len(loaded.sha256) == 64


def test_llamafactory_v1_reasoning_and_tool_call_parts_are_read_as_llamafactory_does():
    """(issue 40, also) LLaMA-Factory's own reasoning / tool-use demo rows: reasoning before the answer as a
    thinking block, a tool_call part as the tool-call turn, the tool's text as its result; what a tool-call turn
    also says is counted, never silently lost; a tool_call part that is not JSON is refused by field."""
    from tell.data.formats import RowInvalid, parse_row

    call = '{"name": "multiply", "arguments": {"a": 6, "b": 8}}'
    row = {"messages": [
        {"role": "system", "content": [{"type": "text", "value": "be brief"}]},
        {"role": "user", "content": [{"type": "text", "value": "what is 6*8?"}]},
        {"role": "assistant", "content": [{"type": "reasoning", "value": "I should call multiply."},
                                          {"type": "tool_call", "value": call}]},
        {"role": "tool", "content": [{"type": "text", "value": "48"}]},
        {"role": "assistant", "content": [{"type": "reasoning", "value": "The tool said 48."},
                                          {"type": "text", "value": "6*8 = 48."}]}],
        "tools": '[{"name": "multiply", "description": "x", "parameters": {}}]'}
    rec, ignored = parse_row("messages", row)
    assert rec.response == "<think>\nThe tool said 48.\n</think>\n\n6*8 = 48." and rec.prompt == "48"
    assert rec.system == "be brief" and rec.history == [
        {"role": "user", "content": "what is 6*8?"},
        {"role": "tool_call", "content": '[{"name": "multiply", "arguments": {"a": 6, "b": 8}}]'}]
    assert ignored == {"messages[].content[] text or reasoning beside a tool_call part"}
    bad = json.loads(json.dumps(row))
    bad["messages"][2]["content"][1]["value"] = "multiply(6, 8)"
    with pytest.raises(RowInvalid, match="must be the call as JSON") as e:
        parse_row("messages", bad)
    assert e.value.field == "messages[2].content[1]"
