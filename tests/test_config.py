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
