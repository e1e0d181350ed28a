"""Hostile inputs and failures of `tell prepare` and the readers (issue 25): every outcome is the old result, a
new one, or one line with exit 2; never a silent half."""

from __future__ import annotations

import contextlib
import errno
import json
from pathlib import Path

import pytest

from tell.artifacts import MixtureDir
from tell.cli import main
from tell.errors import TellError
from tell.prepare import PrepareConfig, prepare

from conftest import alpaca_rows, write_jsonl


def _prep(d: Path, tok: Path, out: Path, **kw) -> dict:
    task = d / "task.jsonl"
    if not task.exists():
        write_jsonl(task, alpaca_rows(30, "task", seed=1))
        write_jsonl(d / "general.jsonl", alpaca_rows(120, "general", seed=2))
    base = dict(task=str(task), general=[str(d / "general.jsonl")], tokenizer=str(tok), ratio=1.0, out=str(out),
                progress=False)
    return prepare(PrepareConfig(**(base | kw)))


def test_a_prepare_that_fails_on_a_full_disk_keeps_the_old_mixture_and_its_manifest(hf_tokenizer_dir, tmp_path,
                                                                                       monkeypatch):
    import tell.prepare as P

    out = tmp_path / "mix"
    old = _prep(tmp_path, hf_tokenizer_dir, out, seed=1)
    real = P.atomic_open

    @contextlib.contextmanager
    def full_disk(path, mode="w"):
        with real(path, mode) as f:
            class Full:
                def write(self, data):
                    raise OSError(errno.ENOSPC, "No space left on device")
            yield Full()
            f.write(b"")

    monkeypatch.setattr(P, "atomic_open", full_disk)
    with pytest.raises(TellError, match="cannot write .No space left on device"):  # one line, not a traceback
        _prep(tmp_path, hf_tokenizer_dir, out, seed=2)
    assert MixtureDir(out).verify()["mixture"]["sha256"] == old["mixture"]["sha256"]  # the old pair, whole
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "mixture.jsonl"]


def test_a_failed_prepare_leaves_the_folder_as_it_found_it(hf_tokenizer_dir, tmp_path, monkeypatch):
    """A prepare that fails while writing (the disk fills at its manifest) removes its FILE.next files, and a
    folder made for it: no empty mixture folder, no stray mixture.jsonl.next beside the old pair."""
    import tell.prepare as P

    def no_manifest(path, doc, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    out = tmp_path / "new" / "mix"
    with monkeypatch.context() as m:
        m.setattr(P, "write_json", no_manifest)
        with pytest.raises(OSError, match="No space left"):
            _prep(tmp_path, hf_tokenizer_dir, out, emit=["messages", "prompt-completion"])
    assert not (tmp_path / "new").exists()  # both folders made for it are gone
    old = _prep(tmp_path, hf_tokenizer_dir, out, seed=1, emit=["messages"])
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    with monkeypatch.context() as m:
        m.setattr(P, "write_json", no_manifest)
        with pytest.raises(OSError, match="No space left"):
            _prep(tmp_path, hf_tokenizer_dir, out, seed=2, emit=["messages", "prompt-completion"])
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == files
    assert MixtureDir(out).verify()["mixture"]["sha256"] == old["mixture"]["sha256"]


def test_a_prepare_stopped_after_its_manifest_leaves_the_new_pair(hf_tokenizer_dir, tmp_path, monkeypatch):
    import tell.prepare as P

    out = tmp_path / "mix"
    old = _prep(tmp_path, hf_tokenizer_dir, out, seed=1)

    def killed(mix):
        raise KeyboardInterrupt

    monkeypatch.setattr(P, "_move_in", killed)
    with pytest.raises(KeyboardInterrupt):
        _prep(tmp_path, hf_tokenizer_dir, out, seed=3)
    new = json.loads((out / "manifest.json").read_text())
    assert new["mixture"]["sha256"] != old["mixture"]["sha256"]
    # verify() never sees a manifest naming a mixture the folder lacks: the waiting one is moved in
    assert MixtureDir(out).verify()["mixture"]["sha256"] == new["mixture"]["sha256"]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "mixture.jsonl"]


def test_a_failed_prepare_keeps_the_pending_pair_of_an_earlier_one(hf_tokenizer_dir, tmp_path, monkeypatch):
    """A prepare stopped between its manifest and its move leaves mixture.jsonl.next as the mixture the manifest
    names; a later prepare that fails must move that pair in, never delete it as its own leftover."""
    import tell.prepare as P

    out = tmp_path / "mix"
    _prep(tmp_path, hf_tokenizer_dir, out, seed=1)

    def killed(mix):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(P, "_move_in", killed)
        with pytest.raises(KeyboardInterrupt):
            _prep(tmp_path, hf_tokenizer_dir, out, seed=3)
    pending = json.loads((out / "manifest.json").read_text())["mixture"]["sha256"]
    assert (out / "mixture.jsonl.next").is_file()  # the pair waits for its next reader

    def no_manifest(path, doc, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with monkeypatch.context() as m:
        m.setattr(P, "write_json", no_manifest)
        with pytest.raises(OSError, match="No space left"):
            _prep(tmp_path, hf_tokenizer_dir, out, seed=2)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "mixture.jsonl"]
    assert MixtureDir(out).verify()["mixture"]["sha256"] == pending


def test_emitted_files_change_with_their_manifest_never_before_it(hf_tokenizer_dir, tmp_path, monkeypatch):
    """--emit files are other trainers' copies of the mixture: a prepare that fails before its manifest leaves
    the old copies (matching the old manifest); one stopped after it has them moved in by the next reader; an
    emit the new manifest does not record is removed."""
    import hashlib

    import tell.prepare as P

    out = tmp_path / "mix"
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    old = _prep(tmp_path, hf_tokenizer_dir, out, seed=1, emit=["messages"])
    emitted = out / old["emitted"]["messages"]["file"]
    assert sha(emitted) == old["emitted"]["messages"]["sha256"]

    def no_manifest(path, doc, *a, **k):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:  # the disk fills when the manifest is written
        m.setattr(P, "write_json", no_manifest)
        with pytest.raises(OSError):
            _prep(tmp_path, hf_tokenizer_dir, out, seed=2, emit=["messages"])
    assert MixtureDir(out).verify()["mixture"]["sha256"] == old["mixture"]["sha256"]
    assert sha(emitted) == old["emitted"]["messages"]["sha256"]  # the old pair's copy, unchanged

    def killed(mix):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # stopped after the manifest, before anything moved in
        m.setattr(P, "_move_in", killed)
        m.setattr(P, "move_in_emits", lambda *a: None)
        with pytest.raises(KeyboardInterrupt):
            _prep(tmp_path, hf_tokenizer_dir, out, seed=3, emit=["messages"])
    new = MixtureDir(out).verify()
    assert new["emitted"]["messages"]["sha256"] != old["emitted"]["messages"]["sha256"]
    assert sha(emitted) == new["emitted"]["messages"]["sha256"]
    _prep(tmp_path, hf_tokenizer_dir, out, seed=4)  # no --emit now: the last prepare's copy belongs to nothing
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "mixture.jsonl"]


def test_a_repeat_factor_past_the_cap_is_refused_naming_the_pool_and_the_factor(hf_tokenizer_dir, tmp_path):
    from tell.data.mix import MAX_REPEAT

    out = tmp_path / "mix"
    with pytest.raises(TellError) as e:  # used to build copies for hours (--ratio 1e9)
        _prep(tmp_path, hf_tokenizer_dir, out, ratio=1e9, allow_repeat=True)
    msg = str(e.value)
    assert "general data (" in msg and "usable examples" in msg and f"at most {MAX_REPEAT:,}x" in msg, msg
    assert not out.exists()
    assert _prep(tmp_path, hf_tokenizer_dir, out, ratio=2 * 1.0, allow_repeat=False)  # a pool that suffices


def _cli_prepare(d: Path, tok: Path, out: Path, *extra: str) -> list[str]:
    return ["prepare", "--task", str(d / "task.jsonl"), "--general", str(d / "general.jsonl"), "--tokenizer", str(tok),
            "--out", str(out), "--no-progress", *extra]


def test_a_task_budget_no_whole_example_meets_is_an_error_naming_the_shortest(hf_tokenizer_dir, tmp_path, capsys):
    write_jsonl(tmp_path / "task.jsonl", alpaca_rows(20, "task", seed=1, min_words=10, max_words=12))
    write_jsonl(tmp_path / "general.jsonl", alpaca_rows(50, "general", seed=2))
    out = tmp_path / "mix"
    assert main(_cli_prepare(tmp_path, hf_tokenizer_dir, out, "--task-tokens", "3", "--ratio", "2")) == 2
    err = capsys.readouterr().err
    assert "no whole task example fits the task budget of 3 tokens" in err and "the shortest of the 20" in err, err
    assert err.count("\n") == 1 and not out.exists()


def test_an_empty_mixture_is_never_written_and_says_why(hf_tokenizer_dir, tmp_path, capsys):
    write_jsonl(tmp_path / "task.jsonl", alpaca_rows(20, "task", seed=1))
    write_jsonl(tmp_path / "general.jsonl", alpaca_rows(50, "general", seed=2))
    out = tmp_path / "mix"
    assert main(_cli_prepare(tmp_path, hf_tokenizer_dir, out, "--task-tokens", "0", "--general-tokens", "0")) == 2
    err = capsys.readouterr().err
    assert "the mixture would hold no example" in err and "'pool'" in err and err.count("\n") == 1, err
    assert not out.exists()


def test_train_on_an_empty_mixture_says_why_it_is_empty(toy_mixture, tiny_model, tmp_path, capsys):
    import hashlib
    import shutil

    mix = tmp_path / "mix"
    shutil.copytree(toy_mixture, mix)  # as an older tell wrote it: 0 examples, its manifest saying why
    (mix / "mixture.jsonl").write_bytes(b"")
    m = json.loads((mix / "manifest.json").read_text())
    m["mixture"] |= {"sha256": hashlib.sha256(b"").hexdigest(), "examples": 0}
    m["dropped"] = {"general": {}, "task": {"too_long": 40}}
    (mix / "manifest.json").write_text(json.dumps(m))
    assert main(["train", "--mixture", str(mix), "--model", str(tiny_model), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the mixture holds no example" in err and "'too_long': 40" in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


# --- ambiguous input: refused with file, line and key, or counted and named --------------------------------

def _load(path, **kw):
    from tell.data.loading import load_records

    return load_records(str(path), source="task", progress=False, **kw)


def test_a_json_object_with_a_duplicate_key_is_refused_with_file_line_and_key(tmp_path):
    path = tmp_path / "task.jsonl"
    path.write_text('{"prompt": "a b", "response": "c"}\n{"prompt": "first", "prompt": "second", "response": "c"}\n')
    with pytest.raises(TellError) as e:
        _load(path)
    assert f"{path}:2:" in str(e.value) and "key 'prompt' appears twice" in str(e.value), str(e.value)
    loaded = _load(path, skip_invalid=True)  # under --skip-invalid: one more invalid row, counted
    assert len(loaded.records) == 1 and loaded.dropped["duplicate_key"] == 1
    nested = tmp_path / "chat.jsonl"  # inside a chat turn too
    nested.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant",
                                                                               "content": "b"}]})[:-3]
                      + ', "role": "user"}]}\n')
    with pytest.raises(TellError, match="key 'role' appears twice"):
        _load(nested)


def test_a_json_array_file_with_a_duplicate_key_names_the_record_and_its_line(tmp_path):
    path = tmp_path / "task.json"
    path.write_text('[\n  {"prompt": "a", "response": "b"},\n'
                    '  {"prompt": "a", "response": "b",\n   "response": "c"}\n]\n')
    with pytest.raises(TellError) as e:
        _load(path)
    assert f"{path}:3: record 2:" in str(e.value) and "key 'response' appears twice" in str(e.value), str(e.value)


def test_a_csv_with_two_columns_of_one_name_is_refused(tmp_path):
    path = tmp_path / "task.csv"
    path.write_text("prompt,response,prompt\na,b,c\n")
    with pytest.raises(TellError) as e:
        _load(path)
    assert f"{path}:1:" in str(e.value) and "columns [1, 3] are both named 'prompt'" in str(e.value), str(e.value)


def test_parquet_columns_of_one_name_and_tools_text_with_a_key_twice_are_refused(tmp_path):
    """Arrow keeps two columns of one name (top level, or fields of a struct column); to_pylist would keep one.
    Tools given as JSON text (LLaMA-Factory, ms-swift) holding a key twice: json.loads would keep the last."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tell.data.records import tool_calls

    flat = tmp_path / "flat.parquet"
    pq.write_table(pa.table([pa.array(["a"]), pa.array(["b"]), pa.array(["c"])], names=["prompt", "response",
                                                                                           "prompt"]), flat)
    with pytest.raises(TellError) as e:
        _load(flat)
    assert f"{flat}:" in str(e.value) and "two columns are named 'prompt'" in str(e.value), str(e.value)
    turn = pa.struct([("role", pa.string()), ("content", pa.string()), ("content", pa.string())])
    nested = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"messages": pa.array([[{"role": "user", "content": "a", "content": "b"}]],
                                                  pa.list_(turn))}), nested)
    with pytest.raises(TellError, match="two columns are named 'messages.content'"):
        _load(nested)
    path = tmp_path / "tools.jsonl"
    tools = '[{"name": "get_weather", "name": "get_time", "parameters": {}}]'
    write_jsonl(path, [{"prompt": "a b", "response": "c"}, {"prompt": "x", "response": "y", "tools": tools}])
    with pytest.raises(TellError) as e:
        _load(path)
    assert f"{path}:2:" in str(e.value) and "key 'name' appears twice" in str(e.value), str(e.value)
    assert _load(path, skip_invalid=True).dropped["duplicate_key"] == 1
    call = '{"name": "f", "arguments": {"x": 1, "x": 2}}'  # a tool-call turn: kept as its text, never half of it
    assert tool_calls('{"name": "f", "arguments": "{\\"x\\": 1, \\"x\\": 2}"}') is None  # OpenAI's text arguments
    assert tool_calls(call) is None and tool_calls('{"name": "f", "arguments": {"x": 1}}')[0]["function"][
        "arguments"] == {"x": 1}


def test_a_folder_s_files_of_other_types_are_named_in_a_warning_and_the_manifest(hf_tokenizer_dir, tmp_path, capsys):
    folder = tmp_path / "task"
    write_jsonl(folder / "part-0.jsonl", alpaca_rows(20, "task", seed=1))
    (folder / "README.md").write_text("# about\n")
    (folder / "notes.txt").write_text("prompt: x\n")
    write_jsonl(tmp_path / "general.jsonl", alpaca_rows(50, "general", seed=2))
    manifest = prepare(PrepareConfig(task=str(folder), general=[str(tmp_path / "general.jsonl")],
                                     tokenizer=str(hf_tokenizer_dir), ratio=1.0, out=str(tmp_path / "mix"),
                                     progress=False))
    assert manifest["inputs"]["task"][0]["skipped_files"] == ["README.md", "notes.txt"]
    err = capsys.readouterr().err
    assert "2 entries not read" in err and "README.md, notes.txt" in err, err


@pytest.mark.parametrize("prompt", ["\u200b\u200b", " \u200d\ufeff ", "\u2060"])
def test_a_prompt_of_only_invisible_characters_is_empty(tmp_path, prompt):
    path = write_jsonl(tmp_path / "task.jsonl", [{"prompt": "a b", "response": "c"},
                                                 {"prompt": prompt, "response": "c"}])
    with pytest.raises(TellError) as e:
        _load(path)
    assert f"{path}:2:" in str(e.value) and "only invisible characters" in str(e.value), str(e.value)
    assert _load(path, skip_invalid=True).dropped["empty_field"] == 1


@pytest.mark.parametrize("suffix", [".zst", ".gz"])
def test_a_truncated_compressed_file_is_an_error_that_says_truncated_even_with_skip_invalid(tmp_path, suffix):
    import gzip

    import zstandard

    rows = "".join(json.dumps({"prompt": f"p {i} " + "word " * 20, "response": "r"}) + "\n" for i in range(20000))
    whole = zstandard.ZstdCompressor().compress(rows.encode()) if suffix == ".zst" else gzip.compress(rows.encode())
    path = tmp_path / f"task.jsonl{suffix}"
    path.write_bytes(whole)
    assert len(_load(path).records) == 20000
    path.write_bytes(whole[:len(whole) * 2 // 3])
    with pytest.raises(TellError) as e:
        _load(path, skip_invalid=True)
    assert "truncated" in str(e.value) and str(path) in str(e.value), str(e.value)


# --- LLaMA-Factory v1 data: content parts with "value", per-message loss_weight ---------------------------------

def _v1(answer_weight=1.0, first_weight=0.0):
    part = lambda t: [{"type": "text", "value": t}]  # noqa: E731
    return {"messages": [{"role": "user", "content": part("q one"), "loss_weight": 0.0},
                         {"role": "assistant", "content": part("a one"), "loss_weight": first_weight},
                         {"role": "user", "content": part("q two"), "loss_weight": 0.0},
                         {"role": "assistant", "content": part("a two"), "loss_weight": answer_weight}]}


def test_llamafactory_v1_messages_are_read(tmp_path, capsys):
    loaded = _load(write_jsonl(tmp_path / "v1.jsonl", [_v1(), _v1(first_weight=1.0)]))
    rec = loaded.records[0]
    assert (rec.prompt, rec.response) == ("q two", "a two")
    assert rec.history == [{"role": "user", "content": "q one"}, {"role": "assistant", "content": "a one"}]
    assert not loaded.ignored and "loss_weight" not in capsys.readouterr().err  # read, not "ignored"


def test_an_answer_with_loss_weight_0_is_refused_by_name(tmp_path):
    path = write_jsonl(tmp_path / "v1.jsonl", [_v1(), _v1(answer_weight=0.0)])
    with pytest.raises(TellError) as e:
        _load(path)
    msg = str(e.value)
    assert f"{path}:2:" in msg and "messages[3].loss_weight" in msg and "0 (no loss there)" in msg, msg
    assert _load(path, skip_invalid=True).dropped["loss_weight"] == 1


def test_a_folder_that_cannot_be_written_is_one_line_exit_2(hf_tokenizer_dir, tmp_path, monkeypatch, capsys):
    import tempfile

    write_jsonl(tmp_path / "task.jsonl", alpaca_rows(20, "task", seed=1))
    write_jsonl(tmp_path / "general.jsonl", alpaca_rows(50, "general", seed=2))
    out = tmp_path / "ro" / "mix"
    (tmp_path / "ro").mkdir()
    real = tempfile.mkstemp

    def read_only(*a, dir=None, **k):  # as a read-only folder answers (tests may run as root, whom chmod won't stop)
        if str(dir).startswith(str(tmp_path / "ro")):
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    code = main(_cli_prepare(tmp_path, hf_tokenizer_dir, out, "--ratio", "1"))
    err = capsys.readouterr().err
    assert code == 2 and "cannot write (Permission denied)" in err and str(out) in err and err.count("\n") == 1, err
    assert not (out / "manifest.json").exists()


def test_max_length_says_it_checks_only_the_counted_examples(hf_tokenizer_dir, tmp_path, capsys):
    from tell.cli import build_parser

    m = _prep(tmp_path, hf_tokenizer_dir, tmp_path / "mix", max_length=64, task_tokens=40)
    assert m["lengths"]["max_length"]["tokens"] == 64
    assert "not every row" in m["lengths"]["max_length"]["checked"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["prepare", "--help"])
    assert "not on every row" in " ".join(capsys.readouterr().out.split())


def test_a_dataset_info_with_an_entry_twice_is_refused(hf_tokenizer_dir, tmp_path):
    from tell.data.sources import from_dataset_info

    write_jsonl(tmp_path / "a.jsonl", alpaca_rows(5, "a"))
    info = tmp_path / "dataset_info.json"
    info.write_text('{"mine": {"file_name": "a.jsonl"},\n "mine": {"file_name": "b.jsonl"}}\n')
    with pytest.raises(TellError, match="key 'mine' appears twice"):
        from_dataset_info(str(info), "mine")


def test_a_second_prepare_into_a_folder_being_written_is_refused(hf_tokenizer_dir, tmp_path):
    """Two prepares into one folder never interleave their .next files and manifests: the second is refused
    while the first holds the folder's lock, and the folder keeps the first's pair."""
    from tell.io import folder_lock

    out = tmp_path / "mix"
    old = _prep(tmp_path, hf_tokenizer_dir, out, seed=1)
    with folder_lock(out, "another `tell prepare`"):  # as a prepare running in another process holds it
        with pytest.raises(TellError, match="another process is writing into this folder"):
            _prep(tmp_path, hf_tokenizer_dir, out, seed=2)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "mixture.jsonl"]
    assert MixtureDir(out).verify()["mixture"]["sha256"] == old["mixture"]["sha256"]
    assert _prep(tmp_path, hf_tokenizer_dir, out, seed=2)["mixture"]["sha256"] != old["mixture"]["sha256"]
