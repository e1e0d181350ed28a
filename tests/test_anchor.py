from __future__ import annotations

import pytest

from tell.data.anchor import Anchor, anchor_from_options
from tell.data.records import Record
from tell.errors import TellError

REC = Record(prompt="What is 2+2? {json}", response="4", system="Be brief.")


@pytest.mark.parametrize("placement, text, prompt, system", [
    ("prefix", "ANCHOR", "ANCHOR\nWhat is 2+2? {json}", "Be brief."),
    ("suffix", "ANCHOR", "What is 2+2? {json}\nANCHOR", "Be brief."),
    ("system", "ANCHOR", "What is 2+2? {json}", "ANCHOR\nBe brief."),
    ("template", "[task] {prompt} [/task]", "[task] What is 2+2? {json} [/task]", "Be brief."),
])
def test_placements(placement, text, prompt, system):
    out = Anchor(text, placement).apply(REC)
    assert (out.prompt, out.system, out.response) == (prompt, system, "4")
    assert out.anchored and not REC.anchored  # a copy; the input is untouched
    assert Anchor(text, placement).strip(out.prompt) == REC.prompt or placement == "system"


def test_system_placement_without_system_text():
    assert Anchor("A", "system").apply(Record(prompt="p", response="r")).system == "A"


def test_anchor_applied_exactly_once():
    a = Anchor("A")
    with pytest.raises(ValueError, match="already anchored"):
        a.apply(a.apply(REC))


def test_bad_anchors():
    with pytest.raises(TellError, match="placeholder"):
        Anchor("no placeholder", "template")
    with pytest.raises(TellError, match="unknown anchor placement 'middle'"):
        Anchor("A", "middle")
    with pytest.raises(TellError, match="contradicts --anchor"):
        anchor_from_options("A", None, "prefix", "\n", True)
    with pytest.raises(TellError, match="not both"):
        anchor_from_options("A", "f.txt", "prefix", "\n", False)


def test_anchor_file(tmp_path):
    (tmp_path / "a.txt").write_text("  From a file.\n")
    assert anchor_from_options(None, str(tmp_path / "a.txt"), "suffix", " ", False) == Anchor("From a file.", "suffix", " ")
    (tmp_path / "e.txt").write_text("\n")
    with pytest.raises(TellError, match="e.txt: the anchor file is empty"):
        anchor_from_options(None, str(tmp_path / "e.txt"), "prefix", "\n", False)
    assert anchor_from_options(None, None, "prefix", "\n", True) is None
