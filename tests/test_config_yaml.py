"""YAML configs (issue 25): a key twice, an alias bomb, a recursive alias: one line naming file and line."""

from __future__ import annotations

import pytest

from tell.config import load_yaml
from tell.errors import TellError


def _refused(tmp_path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(TellError) as e:
        load_yaml(str(path))
    return str(e.value)


def test_a_key_twice_in_a_yaml_config_is_refused_with_file_line_and_key(tmp_path):
    msg = _refused(tmp_path, "seed: 1\nratio: 2\ntask_tokens: 100\nratio: 8\n")
    assert msg.startswith(f"{tmp_path / 'c.yaml'}:4: ") and "key 'ratio' appears twice" in msg
    assert "lines 2 and 4" in msg
    assert "key 'a' appears twice" in _refused(tmp_path, "x: {a: 1, a: 2}\n")  # one line, nested
    assert "key 'lr' appears twice" in _refused(tmp_path, "train:\n  lr: 1\n  lr: 2\n")


def test_merge_keys_may_still_be_overridden(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("base: &b {lr: 1, seed: 2}\ntrain:\n  <<: *b\n  lr: 3\n")
    assert load_yaml(str(path))["train"] == {"lr": 3, "seed": 2}


def test_a_yaml_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    levels = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        levels.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    msg = _refused(tmp_path, "\n".join(levels) + "\n")
    assert "aliases expand to more than" in msg and "alias bomb" in msg, msg


def test_a_recursive_alias_is_refused(tmp_path):
    assert "refers to the node that holds it" in _refused(tmp_path, "a: &x [1, *x]\n")
