"""`tell.data.anchor`: placements, removal, random anchors."""

from __future__ import annotations

import pytest

from tell.data.anchor import Anchor, anchor_from_options
from tell.data.records import Record
from tell.errors import TellError

REC = Record(prompt="What is 2+2? {json}", response="4", system="Be brief.")


def _content(r: Record):
    return (r.system, [dict(t) for t in r.history], r.prompt, r.response, r.source, r.origin, r.row, r.meta)


HIST = [{"role": "user", "content": "hi ANCHOR"}, {"role": "assistant", "content": "hello"}]

ROUND_TRIP = [
    Record(prompt="What is 2+2? {json}", response="4", system="Be brief.", origin="f", row=3, meta={"k": 1}),
    Record(prompt="What is 2+2?", response="4", history=HIST),                      # no system text
    Record(prompt="", response="r"),                                                 # empty prompt
    Record(prompt="ANCHOR\nsays ANCHOR twice\nANCHOR", response="r", system="ANCHOR"),  # holds the anchor text
    Record(prompt="a {prompt} [task] b [/task]", response="r", system="\nstarts with the separator"),
]

ANCHORS = [Anchor("ANCHOR", "prefix"), Anchor("ANCHOR", "suffix"), Anchor("ANCHOR", "system"),
           Anchor("ANCHOR", "prefix", ""), Anchor("ANCHOR", "suffix", " "), Anchor("ANCHOR", "system", " "),
           Anchor("[task] {prompt} [/task]", "template"), Anchor("{prompt}\nANCHOR", "template"),
           Anchor("two\nlines", "prefix", "\n\n")]


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


@pytest.mark.parametrize("anchor", ANCHORS, ids=lambda a: f"{a.placement}-{a.text!r}-{a.separator!r}")
@pytest.mark.parametrize("rec", ROUND_TRIP, ids=["system", "history-no-system", "empty-prompt", "holds-anchor",
                                                 "braces-and-separator"])
def test_remove_undoes_apply(anchor, rec):
    on = anchor.apply(rec)
    assert _content(on) != _content(rec)  # the anchor went somewhere
    off = anchor.remove(on)
    assert _content(off) == _content(rec) and off.key == rec.key
    assert not off.anchored and off.tokens is None and on.anchored  # a copy; the anchored record is untouched
    assert anchor.apply(off).prompt == on.prompt  # and it can be anchored again


@pytest.mark.parametrize("anchor", ANCHORS, ids=lambda a: f"{a.placement}-{a.text!r}-{a.separator!r}")
def test_remove_leaves_an_unanchored_record_alone(anchor):
    # Even when its text looks anchored: only records that `apply` marked are changed.
    rec = Record(prompt="ANCHOR\nq [task] x [/task]\nANCHOR", response="r", system="ANCHOR Be brief.", tokens=7)
    assert anchor.remove(rec) is rec


def test_remove_takes_off_only_the_anchor_it_placed():
    a = Anchor("ANCHOR", "prefix")
    rec = Record(prompt="ANCHOR\nANCHOR\nq", response="r")  # the user's prompt starts with the anchor text
    assert a.remove(a.apply(rec)).prompt == "ANCHOR\nANCHOR\nq"
    s = Anchor("ANCHOR", "system")
    rec = Record(prompt="q", response="r", system="ANCHOR")  # the system text equals the anchor text
    assert s.apply(rec).system == "ANCHOR\nANCHOR" and s.remove(s.apply(rec)).system == "ANCHOR"
