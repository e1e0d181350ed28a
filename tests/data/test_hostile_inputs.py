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
    with pytest.raises(OSError):
        _prep(tmp_path, hf_tokenizer_dir, out, seed=2)
    assert MixtureDir(out).verify()["mixture"]["sha256"] == old["mixture"]["sha256"]  # the old pair, whole
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "mixture.jsonl"]


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


def test_a_repeat_factor_past_the_cap_is_refused_naming_the_pool_and_the_factor(hf_tokenizer_dir, tmp_path):
    from tell.data.mix import MAX_REPEAT

    out = tmp_path / "mix"
    with pytest.raises(TellError) as e:  # used to build copies for hours (--ratio 1e9)
        _prep(tmp_path, hf_tokenizer_dir, out, ratio=1e9, allow_repeat=True)
    msg = str(e.value)
    assert "general data (" in msg and "usable examples" in msg and f"at most {MAX_REPEAT}x" in msg, msg
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
