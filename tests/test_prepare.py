"""`tell prepare` end to end, through the library and the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SHARED, alpaca_rows, write_jsonl
from tell.cli import main
from tell.prepare import PrepareConfig
from tell.prepare import prepare
from tell.data.records import record_from_json, render_text
from tell.data.tokens import load_counter
from tell.errors import TellError

ANCHOR = "judge answer json task"


def cfg(files, tok, out, **kw):
    base = dict(task=str(files["task"]), general=[str(files["general1"]), str(files["general2"])],
                tokenizer=str(tok), task_tokens=300, ratio=10.0, anchor=ANCHOR, seed=42, out=str(out),
                progress=False)
    base.update(kw)
    return PrepareConfig(**base)


def read_mixture(out: Path):
    return [json.loads(line) for line in (out / "mixture.jsonl").read_text().splitlines()]


def test_mixture_budgets_anchor_and_manifest(data_files, hf_tokenizer_dir, tmp_path):
    out = tmp_path / "mix"
    m = prepare(cfg(data_files, hf_tokenizer_dir, out))
    rows = read_mixture(out)
    task = [r for r in rows if r["source"] == "task"]
    general = [r for r in rows if r["source"] == "general"]
    b = m["budget"]
    assert (b["task_examples"], b["general_examples"]) == (len(task), len(general))
    # The budget counts the task's own tokens; the anchor's are recorded beside them (each row's `tokens`
    # counts its text as trained, anchor included).
    assert b["task_tokens"] + b["anchor_tokens"] == sum(r["tokens"] for r in task) and abs(b["task_tokens"] - 300) < 30
    assert b["anchor_tokens"] > 0 and not b["anchor_in_budget"]
    assert m["mixture"]["tokens"] == sum(r["tokens"] for r in rows)
    assert abs(b["general_tokens"] - 10 * b["task_tokens"]) < 30
    assert b["ratio_achieved"] == pytest.approx(b["general_tokens"] / b["task_tokens"])
    # Anchor: every task example once, no general example; tokens are counted with the anchor in.
    counter = load_counter(str(hf_tokenizer_dir))
    assert all(r["prompt"].startswith(ANCHOR + "\n") and r["prompt"].count(ANCHOR) == 1 and r["anchored"]
               for r in task)
    assert not any(ANCHOR in r["prompt"] or r["anchored"] for r in general)
    assert all(counter.count([render_text(record_from_json(r))])[0] == r["tokens"] for r in rows[:50])
    # Both general sources are pooled; ids point back to the file and row.
    origins = {r["origin"] for r in general}
    assert origins == {str(data_files["general1"]), str(data_files["general2"])}
    assert all(r["id"] == f"{r['source']}:{r['origin']}:{r['row']}" for r in rows)
    # Manifest: inputs with hashes, anchor and placement, tokenizer, versions, output hash and spread.
    import hashlib
    assert m["mixture"]["sha256"] == hashlib.sha256((out / "mixture.jsonl").read_bytes()).hexdigest()
    assert m["anchor"]["text"] == ANCHOR and m["anchor"]["placement"] == "prefix"
    assert len(m["inputs"]["general"]) == 2 and all(len(i["sha256"]) == 64 for i in m["inputs"]["general"])
    assert m["tokenizer"]["kind"] == "huggingface" and "transformers" in m["packages"]
    assert m["mixture"]["task_spread"]["count"] == len(task)
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["mixture"] == m["mixture"] and "_seconds" not in on_disk


def test_anchored_and_unanchored_mixtures_train_the_same_task_examples(data_files, hf_tokenizer_dir, tmp_path):
    """At one budget and seed, tell (anchor) and sft (no anchor) choose the same task examples; with
    anchor_in_budget (tell 0.1's rule) the anchored mixture holds fewer of them."""
    def task_ids(out, **kw):
        prepare(cfg(data_files, hf_tokenizer_dir, out, ratio=0.0, general=[], **kw))
        return [r["id"] for r in read_mixture(out) if r["source"] == "task"]

    anchored, plain = task_ids(tmp_path / "a"), task_ids(tmp_path / "b", anchor=None, no_anchor=True)
    old_rule = task_ids(tmp_path / "c", anchor_in_budget=True)
    assert sorted(anchored) == sorted(plain) and len(plain) >= 5
    assert len(old_rule) < len(plain)
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert m["budget"]["anchor_in_budget"] and m["budget"]["anchor_tokens"] == 0


def test_same_seed_is_byte_identical_across_processes_and_seed_changes_order(data_files, hf_tokenizer_dir,
                                                                             tmp_path):
    args = ["--task", str(data_files["task"]), "--general", str(data_files["general1"]), "--tokenizer",
            str(hf_tokenizer_dir), "--task-tokens", "200", "--ratio", "20", "--anchor", ANCHOR, "--no-progress"]
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        subprocess.run([sys.executable, "-m", "tell.cli", "prepare", *args, "--seed", seed, "--out",
                        str(tmp_path / name)], check=True, capture_output=True)
    a, b, c = ((tmp_path / n / "mixture.jsonl").read_bytes() for n in "abc")
    assert a == b and a != c
    ma, mb = (json.loads((tmp_path / n / "manifest.json").read_text()) for n in "ab")
    assert ma["config"].pop("out") != mb["config"].pop("out") and ma == mb  # only the output folder differs
    ids = lambda blob: [json.loads(line)["id"] for line in blob.decode().splitlines()]
    assert ids(a) != ids(c)


def test_nested_general_budgets_across_ratios(data_files, hf_tokenizer_dir, tmp_path):
    mixes = {}
    for ratio in (2.0, 8.0):
        prepare(cfg(data_files, hf_tokenizer_dir, tmp_path / str(ratio), ratio=ratio))
        mixes[ratio] = read_mixture(tmp_path / str(ratio))
    small, large = ([r["id"] for r in mixes[k]] for k in (2.0, 8.0))
    assert set(small) < set(large)
    # Same task subset; the shared examples keep their relative order.
    assert [i for i in large if i in set(small)] == small


def test_ratio_zero_is_task_only_and_task_zero_is_general_only(data_files, hf_tokenizer_dir, tmp_path):
    m = prepare(cfg(data_files, hf_tokenizer_dir, tmp_path / "sft", ratio=0.0))
    assert m["budget"]["general_examples"] == 0 and {r["source"] for r in read_mixture(tmp_path / "sft")} == {"task"}
    m = prepare(cfg(data_files, hf_tokenizer_dir, tmp_path / "gen", task_tokens=0, ratio=None,
                    general_tokens=500))
    assert m["budget"]["task_examples"] == 0 and m["budget"]["ratio_achieved"] is None
    assert {r["source"] for r in read_mixture(tmp_path / "gen")} == {"general"}


def test_all_task_data_when_no_task_budget(data_files, hf_tokenizer_dir, tmp_path):
    m = prepare(cfg(data_files, hf_tokenizer_dir, tmp_path / "all", task_tokens=None, ratio=1.0))
    assert m["budget"]["task_examples"] == 60


def test_placements_travel_into_the_mixture(data_files, hf_tokenizer_dir, tmp_path):
    prepare(cfg(data_files, hf_tokenizer_dir, tmp_path / "s", anchor_placement="system", ratio=0.0))
    assert all(r["system"] == ANCHOR and ANCHOR not in r["prompt"] for r in read_mixture(tmp_path / "s"))
    prepare(cfg(data_files, hf_tokenizer_dir, tmp_path / "n", anchor=None, no_anchor=True, ratio=0.0))
    m = json.loads((tmp_path / "n" / "manifest.json").read_text())
    assert m["anchor"] is None and not any(r["anchored"] for r in read_mixture(tmp_path / "n"))


def test_duplicates_and_invalid_rows_are_counted(tmp_path, hf_tokenizer_dir):
    rows = alpaca_rows(30, "task", seed=5)
    task = write_jsonl(tmp_path / "t.jsonl", rows + rows[:4] + ['{"instruction": "x", "output": ""}', "{oops"])
    general = write_jsonl(tmp_path / "g.jsonl", alpaca_rows(200, "general", seed=6) + rows[:3])
    m = prepare(PrepareConfig(task=str(task), general=[str(general)], tokenizer=str(hf_tokenizer_dir),
                              ratio=2.0, skip_invalid=True, out=str(tmp_path / "o"), progress=False))
    assert m["dropped"]["task"] == {"duplicate": 4, "empty_field": 1, "invalid_json": 1}
    assert m["dropped"]["general"] == {"duplicate": 3}  # identical to task examples: the task copy wins
    assert m["budget"]["task_examples"] == 30


def test_pool_too_small_and_repeat(data_files, hf_tokenizer_dir, tmp_path):
    with pytest.raises(Exception, match=r"the general data hold only [\d,]+ tokens .* --allow-repeat"):
        prepare(cfg(data_files, hf_tokenizer_dir, tmp_path / "x", ratio=500.0))
    assert not (tmp_path / "x").exists()
    m = prepare(cfg(data_files, hf_tokenizer_dir, tmp_path / "r", ratio=500.0, allow_repeat=True))
    assert m["budget"]["general_repeat_factor"] > 1.5


def test_train_max_length_counts_drops_or_refuses_examples_training_would_cut(data_files, hf_tokenizer_dir,
                                                                               tmp_path, capsys):
    m = prepare(cfg(data_files, hf_tokenizer_dir, tmp_path / "keep", train_max_length=20))
    ln, rows = m["lengths"], read_mixture(tmp_path / "keep")
    for source in ("task", "general"):
        lens = [r["tokens"] for r in rows if r["source"] == source]
        assert ln[source]["longest"] == max(lens) and ln[source]["examples"] == len(lens)
        assert ln[source]["over_train_max_length"] == sum(n > 20 for n in lens) > 0  # kept, counted
    assert ln["policy"] == "keep" and ln["counted_by"] == {"kind": "huggingface", "name": str(hf_tokenizer_dir)}
    assert "without chat-template tokens" in ln["note"]
    d = prepare(cfg(data_files, hf_tokenizer_dir, tmp_path / "drop", train_max_length=20, length_policy="drop"))
    assert all(r["tokens"] <= 20 for r in read_mixture(tmp_path / "drop"))
    assert d["lengths"]["task"]["over_train_max_length"] == 0 and d["dropped"]["task"]["over_train_max_length"] > 0
    assert abs(d["budget"]["task_tokens"] - 300) < 30  # the budget is met with examples that fit
    with pytest.raises(TellError, match=r"training cuts examples over 20 \(--train-max-length"):
        prepare(cfg(data_files, hf_tokenizer_dir, tmp_path / "refuse", train_max_length=20, length_policy="refuse"))
    assert not (tmp_path / "refuse").exists()
    # Without a training length the longest examples are still reported; the summary says who counted.
    assert prepare(cfg(data_files, hf_tokenizer_dir, tmp_path / "none"))["lengths"]["task"]["over_train_max_length"] is None
    assert main(["prepare", "--task", str(data_files["task"]), "--general", str(data_files["general1"]),
                 "--tokenizer", str(hf_tokenizer_dir), "--task-tokens", "300", "--ratio", "3", "--train-max-length",
                 "20", "--out", str(tmp_path / "cli"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"counted by {hf_tokenizer_dir}, without chat-template tokens" in out
    assert "over --train-max-length 20: task" in out and "(kept; training cuts their tail)" in out


def test_contamination_guard(tmp_path, hf_tokenizer_dir, data_files):
    task_rows = [json.loads(line) for line in data_files["task"].read_text().splitlines()]
    import random
    rng = random.Random(9)
    from conftest import WORDS
    fresh = [{"prompt": " ".join(rng.choices(WORDS, k=20)), "response": "no"} for _ in range(10)]
    leaked = [{"prompt": "  " + r["instruction"].upper() + "  ", "response": r["output"]} for r in task_rows[:60]]
    evalf = write_jsonl(tmp_path / "eval.jsonl", fresh + leaked)
    m = prepare(cfg(data_files, hf_tokenizer_dir, tmp_path / "c", task_tokens=None, ratio=0.0,
                    eval_file=[str(evalf)]))
    c = m["contamination"][0]
    assert c["examples"] == 70 and c["exact_overlap"] == 60  # whitespace/case/anchor insensitive
    # A 13-gram hit without an exact prompt match: the eval prompt is a long mixture response plus noise.
    long_resp = {"prompt": "q", "response": " ".join(["river mountain garden teacher window planet music"] * 3)}
    task2 = write_jsonl(tmp_path / "t2.jsonl", [long_resp, {"prompt": "other", "response": "thing"}])
    ev2 = write_jsonl(tmp_path / "e2.jsonl", [{"prompt": "tell me: " + long_resp["response"], "response": "x"},
                                               {"prompt": "unrelated", "response": "y"}])
    m = prepare(PrepareConfig(task=str(task2), tokenizer=str(hf_tokenizer_dir), ratio=0.0, eval_file=[str(ev2)],
                              out=str(tmp_path / "c2"), progress=False))
    assert (m["contamination"][0]["exact_overlap"], m["contamination"][0]["ngram13_overlap"]) == (0, 1)
    with pytest.raises(Exception, match="--fail-on-contamination"):
        prepare(PrepareConfig(task=str(task2), tokenizer=str(hf_tokenizer_dir), ratio=0.0, eval_file=[str(ev2)],
                              fail_on_contamination=True, out=str(tmp_path / "c3"), progress=False))
    assert not (tmp_path / "c3").exists()


def test_shared_template_is_not_contamination(tmp_path, hf_tokenizer_dir):
    template = "please judge whether the response below contains hallucination and reply in json format now"
    import random
    rng = random.Random(1)
    from conftest import WORDS
    mk = lambda: {"prompt": template + " " + " ".join(rng.choices(WORDS, k=14)), "response": "yes"}
    task = write_jsonl(tmp_path / "t.jsonl", [mk() for _ in range(30)])
    ev = write_jsonl(tmp_path / "e.jsonl", [mk() for _ in range(30)])
    m = prepare(PrepareConfig(task=str(task), tokenizer=str(hf_tokenizer_dir), ratio=0.0, eval_file=[str(ev)],
                              out=str(tmp_path / "o"), progress=False))
    c = m["contamination"][0]
    assert c["ngram13_overlap"] == 0 and c["template_ngrams_ignored"] > 0


def test_sentencepiece_tokenizer(data_files, spm_model, tmp_path):
    m = prepare(cfg(data_files, spm_model, tmp_path / "sp", ratio=3.0))
    assert m["tokenizer"]["kind"] == "sentencepiece" and m["tokenizer"]["vocab_size"] == 120
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    rows = read_mixture(tmp_path / "sp")
    assert all(len(sp.encode(render_text(record_from_json(r)))) == r["tokens"] for r in rows)


@pytest.mark.skipif(not (SHARED / "data/tokenizers/llama2/tokenizer.model").exists(), reason="no shared Llama-2 tokenizer")
def test_llama2_counts_match_sentencepiece():
    counter = load_counter(str(SHARED / "data/tokenizers/llama2/tokenizer.model"))
    assert counter.describe()["vocab_size"] == 32000
    # ['▁Hello', '▁world'] and ['▁Token', '-', 'efficient', '▁le', 'verage', '▁learning']
    assert counter.count(["Hello world", "Token-efficient leverage learning"]) == [2, 6]


# ---- the CLI ---------------------------------------------------------------------------------------------

def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_flags_override_yaml_and_unknown_keys_rejected(data_files, hf_tokenizer_dir, tmp_path, capsys):
    y = tmp_path / "p.yaml"
    y.write_text(f"task: {data_files['task']}\ngeneral: [{data_files['general1']}]\ntokenizer: {hf_tokenizer_dir}\n"
                 f"task_tokens: 200\nratio: 3\nanchor: {ANCHOR}\nout: {tmp_path / 'y'}\nprogress: false\n")
    code, out, _ = run_cli(capsys, "prepare", "--config", str(y), "--ratio", "5")
    m = json.loads((tmp_path / "y" / "manifest.json").read_text())
    assert code == 0 and m["config"]["ratio"] == 5.0 and m["config"]["task_tokens"] == 200
    assert "general:task ratio" in out
    y.write_text(y.read_text() + "ratioo: 4\n")
    code, _, err = run_cli(capsys, "prepare", "--config", str(y))
    assert code == 2 and f"{y}: field 'ratioo': unknown setting" in err and err.count("\n") == 1
    y.write_text("task_tokens: lots\n")
    code, _, err = run_cli(capsys, "prepare", "--config", str(y))
    assert code == 2 and "field 'task_tokens': expected int, got str" in err


def test_cli_bad_input_exit_2_one_line_nothing_written(tmp_path, hf_tokenizer_dir, capsys):
    bad = write_jsonl(tmp_path / "bad.jsonl", ['{"prompt": "a", "response": "b"}', '{"prompt": "c", "response": 7}'])
    out = tmp_path / "o"
    code, _, err = run_cli(capsys, "prepare", "--task", str(bad), "--tokenizer", str(hf_tokenizer_dir),
                           "--ratio", "0", "--out", str(out))
    assert code == 2 and not out.exists()
    assert err == f"tell: error: {bad}:2: field 'response': expected a string, got int (format 'prompt_response'; " \
                  "--skip-invalid drops such rows)\n"
    with pytest.raises(Exception):
        main(["prepare", "--task", str(bad), "--tokenizer", str(hf_tokenizer_dir), "--ratio", "0", "--out",
              str(out), "--debug"])


@pytest.mark.parametrize("command", ["prepare", "train", "export", "eval", "data build", "sweep", "report", "demo",
                                     "probe", "anchor generate"])
def test_cli_help_has_runnable_example(command, capsys):
    with pytest.raises(SystemExit) as e:
        main(command.split() + ["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "example:" in out and f"tell {command}" in out


def _subparsers(parser):
    import argparse

    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_top_level_help_lists_exactly_the_commands_that_run():
    """`tell --help` is how a user finds the commands: its table must hold every command the parser has and
    nothing else, each with its own description, and each must lead to a handler."""
    import os
    import re

    from tell.cli import build_parser

    r = subprocess.run([sys.executable, "-m", "tell.cli", "--help"], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "250"})  # wide: one line per command
    assert r.returncode == 0
    listed = dict(re.findall(r"^ {4}(\S+) {2,}(\S.*)$", r.stdout, re.M))
    sub = _subparsers(build_parser())
    assert list(listed) == list(sub.choices)
    assert set(listed) == {"prepare", "train", "export", "eval", "data", "sweep", "report", "demo", "probe", "anchor"}
    assert listed == {a.dest: a.help.replace("%%", "%") for a in sub._choices_actions}
    for name, p in sub.choices.items():
        # A leaf command has a handler; a group (data, anchor) has one for each of its actions.
        leaves = [p] if p.get_default("func") else list(_subparsers(p).choices.values())
        assert leaves and all(callable(q.get_default("func")) for q in leaves), name


def test_quickstart_recipe_runs(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "prepare", "--config", str(REPO / "examples/quickstart/prepare.yaml"),
                           "--task", str(REPO / "examples/quickstart/task.jsonl"),
                           "--general", str(REPO / "examples/quickstart/general.jsonl"),
                           "--tokenizer", str(REPO / "examples/quickstart/tokenizer"),
                           "--out", str(tmp_path / "q"), "--no-progress")
    assert code == 0
    m = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert m["budget"]["ratio_achieved"] == pytest.approx(5, rel=0.05)


def test_shipped_example_files_hold_no_duplicate_rows():
    """prepare drops duplicates (and says so): a shipped example that holds some shows a user a smaller pool than
    the file seems to hold."""
    files = sorted((REPO / "examples").rglob("*.jsonl"))
    assert files
    for f in files:
        rows = [json.dumps(json.loads(line), sort_keys=True) for line in f.read_text(encoding="utf-8").splitlines()]
        assert rows and len(set(rows)) == len(rows), f"{f}: {len(rows) - len(set(rows))} duplicate rows"


def _help_commands(epilog: str) -> list[list[str]]:
    """The `tell ...` commands of a subcommand's --help example, continuation lines joined, comments dropped."""
    import shlex

    text = epilog.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in text.splitlines() if line.strip().startswith("tell ")]


def test_every_prepare_help_example_runs_on_the_shipped_data(tmp_path, capsys, monkeypatch):
    from tell.cli import PREPARE_EXAMPLE

    monkeypatch.chdir(REPO)  # the examples name the shipped files relative to the project
    commands = _help_commands(PREPARE_EXAMPLE)
    assert len(commands) == 2 and all(c[:2] == ["tell", "prepare"] for c in commands)
    for i, argv in enumerate(commands):
        argv = argv[1:]
        if "--out" in argv:  # into a tmp folder, not out/ of the checkout
            argv[argv.index("--out") + 1] = str(tmp_path / str(i))
        else:
            argv += ["--out", str(tmp_path / str(i))]
        code, out, err = run_cli(capsys, *argv, "--no-progress")
        assert code == 0, (argv, err)
        assert (tmp_path / str(i) / "manifest.json").is_file() and "wrote" in out
