"""The demo world's base-model tokenizer: checked for real (not with `assert`, which `python -O` drops)."""

from __future__ import annotations

import pytest

from tell.errors import TellError
from tell.synthetic.pretrain import build_tokenizer, check_tokenizer
from tell.synthetic.world import World, WorldConfig


def test_world_tokenizer_passes_its_check():
    tok = build_tokenizer(World(WorldConfig(n_items=8)))
    assert tok("reverse ka lo", add_special_tokens=False)["input_ids"]


def test_check_tokenizer_refuses_a_wrong_vocabulary_or_an_empty_encoding():
    tok = build_tokenizer(World(WorldConfig(n_items=8)))
    with pytest.raises(TellError, match=rf"{len(tok)} tokens \(expected {len(tok) + 1}\).*check the installed"):
        check_tokenizer(tok, len(tok) + 1)
    with pytest.raises(TellError, match=r"'' encodes to \[\]"):
        check_tokenizer(tok, len(tok), sample="")
