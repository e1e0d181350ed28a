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
