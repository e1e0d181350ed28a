"""`tell train` guards (issue 25): one writer per run folder, secrets never written, the adapter's checksums."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tell.cli import main


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_train_on_a_locked_run_folder_is_refused_and_writes_nothing(toy_mixture, tiny_model, tmp_path,
                                                                                capsys):
    run, started, go = tmp_path / "run", tmp_path / "started", tmp_path / "go"
    # The first `tell train` stops after it claimed the folder, before it writes config.json (loading the model):
    # the moment at which a second run used to find the folder empty and train into it as well.
    first = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        import tell.train.run as R
        real = R._lora_model
        def paused(cfg):
            Path({str(started)!r}).touch()
            while not Path({str(go)!r}).exists():
                time.sleep(0.1)
            return real(cfg)
        R._lora_model = paused
        from tell.cli import main
        sys.exit(main(["train", "--mixture", {str(toy_mixture)!r}, "--model", {str(tiny_model)!r},
                       "--out", {str(run)!r}, "--no-progress", "--max-steps", "2", "--save-steps", "0"]))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"),
                                                        os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", first], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.time() + 180
        while not started.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline
            time.sleep(0.2)
        before = _snapshot(run) if run.exists() else {}
        code = main(["train", "--mixture", str(toy_mixture), "--model", str(tiny_model), "--out", str(run),
                     "--no-progress", "--max-steps", "2", "--save-steps", "0"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "another process" in err and err.count("\n") == 1, err
        assert (_snapshot(run) if run.exists() else {}) == before  # the refused run wrote nothing
    finally:
        go.touch()
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]  # one run's log, not two mixed
    assert not (run / ".tell.lock").exists()  # released at the end


def test_a_secret_given_as_a_training_arg_is_refused_and_written_nowhere(toy_mixture, tiny_model, tmp_path, capsys):
    run = tmp_path / "run"
    for key in ("hub_token", "api_key"):
        code = main(["train", "--mixture", str(toy_mixture), "--model", str(tiny_model), "--out", str(run),
                     "--no-progress", "--max-steps", "1", "--save-steps", "1", "--training-arg", f"{key}=hf_SeCrEt123"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert key in err and "secret" in err and "HF_TOKEN" in err and err.count("\n") == 1, err
        assert "hf_SeCrEt123" not in err  # the value is never echoed
        assert not run.exists() or not any(b"hf_SeCrEt123" in p.read_bytes() for p in run.rglob("*") if p.is_file())


def test_names_of_secrets_are_whole_words():
    from tell.train.run import is_secret_name

    assert all(map(is_secret_name, ["hub_token", "token", "HF_TOKEN", "api_key", "apikey", "password", "my-secret"]))
    assert not any(map(is_secret_name, ["average_tokens_across_devices", "include_num_input_tokens_seen",
                                        "max_new_tokens", "tokenizer", "keep_torch_compile"]))


def _tokenizer_without_eos(out: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from conftest import WORDS

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "<pad>"] + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", pad_token="<pad>"
                            ).save_pretrained(out)
    return out


def test_a_model_whose_tokenizer_has_no_eos_is_refused_by_name(toy_mixture, tmp_path, capsys):
    from conftest import make_tiny_llama

    model = make_tiny_llama(_tokenizer_without_eos(tmp_path / "tok"), tmp_path / "no_eos")
    run = tmp_path / "run"
    capsys.readouterr()
    code = main(["train", "--mixture", str(toy_mixture), "--model", str(model), "--out", str(run), "--no-progress",
                 "--max-steps", "1", "--save-steps", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "has no EOS token" in err and str(model) in err and err.count("\n") == 1, err
    assert not run.exists()


def test_a_chat_template_that_raises_is_one_line_naming_the_template(toy_mixture, hf_tokenizer_dir, tmp_path, capsys):
    from conftest import make_tiny_llama

    template = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system turns') }}"
                "{% endif %}{{ m['role'] + ' ' + m['content'] + ' </s> ' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ 'assistant ' }}{% endif %}{{ undefined_call() }}")
    model = make_tiny_llama(hf_tokenizer_dir, tmp_path / "bad_template", chat_template=template)
    run = tmp_path / "run"
    capsys.readouterr()
    code = main(["train", "--mixture", str(toy_mixture), "--model", str(model), "--out", str(run), "--no-progress",
                 "--max-steps", "1", "--save-steps", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "the chat template of" in err and "failed" in err and err.count("\n") == 1, err


def test_a_mixture_with_no_examples_is_refused_as_empty(toy_mixture, tiny_model, tmp_path, capsys):
    """(issue 40 round 3, item 10) said so in one line, before a model is loaded or a run folder written."""
    import shutil

    from conftest import cut_mixture, reseal_mixture, train_argv
    from tell.cli import main

    mix = tmp_path / "mix"
    shutil.copytree(toy_mixture, mix)
    cut_mixture(mix, 0)
    reseal_mixture(mix)
    assert main(train_argv(mix, tiny_model, tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the mixture holds no example" in err[0] and str(mix) in err[0], err
    assert not (tmp_path / "run").exists()
