"""`tell.config`, the binder: YAML numbers, and the same checks for configs built in code."""

from __future__ import annotations

import pytest

from tell.config import build
from tell.errors import TellError
from tell.experiments.config import SweepSpec
from tell.train.config import TrainConfig


def test_yaml_float_without_a_dot_is_accepted_and_text_still_refused(tmp_path):
    y = tmp_path / "t.yaml"
    y.write_text("learning_rate: 1e-4\nwarmup_ratio: 3e-2\n")  # YAML 1.1 reads these as text
    cfg = build(TrainConfig, yaml_path=str(y))
    assert cfg.learning_rate == 1e-4 and isinstance(cfg.learning_rate, float) and cfg.warmup_ratio == 0.03
    y.write_text("ratios: [1e1, 2]\nmodel: m\ntask: t.jsonl\ngeneral: [g.jsonl]\nanchor: a\ntask_tokens: [100]\n"
                 "eval: [e.jsonl]\n")
    assert build(SweepSpec, yaml_path=str(y)).ratios == [10.0, 2.0]
    y.write_text("learning_rate: 1e-4x\n")
    with pytest.raises(TellError, match="expected float, got str '1e-4x'"):
        build(TrainConfig, yaml_path=str(y))


def test_a_config_built_in_code_is_checked_too():
    """The sweep builds TrainConfig/EvalConfig itself: the same checks run there (dataclass __post_init__)."""
    from tell.eval.config import EvalConfig

    with pytest.raises(TellError, match="field 'learning_rate'"):
        TrainConfig(learning_rate=float("nan"))
    with pytest.raises(TellError, match="field 'limit'"):
        EvalConfig(limit=0)
    assert EvalConfig(temperature=0.0, greedy=True).temperature == 0.0  # greedy ignores the temperature


def test_help_quotes_a_default_that_is_or_holds_whitespace(capsys):
    """argparse folds a newline into a space: `--anchor-separator`'s default "\\n" read as "(default: )"."""
    import argparse
    from dataclasses import dataclass

    from tell.cli import main
    from tell.config import add_arguments, opt

    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # the help as wrapped, joined again
    assert "text between the anchor and the prompt or system text (default: '\\n')" in text

    @dataclass
    class Demo:
        sep: str = opt(" ", "a separator")
        name: str = opt("tell", "a name")
        steps: int = opt(3, "a number")

    p = argparse.ArgumentParser()
    add_arguments(p, Demo)
    text = " ".join(p.format_help().split())
    assert "a separator (default: ' ')" in text and "a name (default: tell)" in text and "(default: 3)" in text


# --- KEY=VALUE keeps its text (issue 40 item 5) -------------------------------------------------------------

def _settings(*words):
    from tell.config import build, parse_settings
    from tell.train.config import TrainConfig

    path, pairs = parse_settings(list(words))
    return build(TrainConfig, settings=pairs, overrides={"mixture": "m", "model": "x", "out": "o"})


@pytest.mark.parametrize("typed", ["lr sweep #2", "yes", "2026-12-07", "1_0", "0x10", "on", "a: b", "3"])
def test_a_text_setting_keeps_exactly_what_was_typed(typed):
    assert _settings(f"run_name={typed}").run_name == typed


@pytest.mark.parametrize("typed, expected", [("1e-4", 1e-4), ("3.0e-4", 3e-4), ("2", 2.0)])
def test_a_number_setting_reads_a_whole_number(typed, expected):
    assert _settings(f"learning_rate={typed}").learning_rate == expected


@pytest.mark.parametrize("key, typed", [("max_steps", "1_0"), ("max_steps", "0x10"), ("max_steps", "8 #steps"),
                                        ("learning_rate", "1e-4 # a comment"), ("max_steps", "1:30")])
def test_a_typed_setting_that_does_not_read_back_whole_is_refused_by_key(key, typed):
    from tell.errors import TellError

    with pytest.raises(TellError, match=key):
        _settings(f"{key}={typed}")


def test_training_arg_values_read_by_the_yaml_core_schema_only():
    """--training-arg values pass to transformers untyped by tell: null/bools/numbers only when exactly one (YAML
    1.2 core), flow lists read the same way, everything else the text as typed."""
    from tell.config import _key_value, build, read_value
    from tell.train.config import TrainConfig

    flags = [_key_value(w) for w in ("run_name=sweep #2", "seed_x=0x10", "tf32=true", "note=yes", "ratio=1e-4",
                                     "ids=[1, 0x10, '3']")]
    cfg = build(TrainConfig, overrides={"mixture": "m", "model": "x", "out": "o", "training_args": flags})
    assert cfg.training_args == {"run_name": "sweep #2", "seed_x": "0x10", "tf32": True, "note": "yes", "ratio": 1e-4,
                                 "ids": [1, "0x10", "3"]}
    assert [read_value(x) for x in ("010", ".inf", "null", "1:30", "2026-12-07")] == [10, float("inf"), None, "1:30",
                                                                                     "2026-12-07"]
