"""`tell.eval.metrics`: JSON adherence (strict, lenient, official), labels, translation metrics, bootstrap intervals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tell.data.answers import gsm8k_number, strip_lead_in
from tell.eval import metrics as M

J = json.dumps


@pytest.mark.parametrize("text, strict, lenient, pred", [
    (J({"thought": "fine", "hallucination": "no"}), 1, 1, "no"),
    ("\n " + J({"thought": "t", "hallucination": "yes"}) + "\n", 1, 1, "yes"),        # JSON allows whitespace
    (J({"thought": "t", "hallucination": "no", "extra": 1}), 0, 1, "no"),            # extra key: not strict
    ("```json\n" + J({"thought": "t", "hallucination": "yes"}) + "\n```", 0, 1, "yes"),  # fenced: lenient only
    ("Sure! " + J({"thought": "t", "hallucination": "No"}), 0, 1, "no"),
    (J({"thought": "t", "hallucination": "maybe"}), 0, 0, None),
    (J({"thought": 3, "hallucination": "no"}), 0, 1, "no"),                          # thought must be a string
    (J({"hallucination": "no"}), 0, 1, "no"),
    ("{'thought': 't', 'hallucination': 'no'}", 0, 0, None),                          # Python dict, not JSON
    ("yes", 0, 0, None),
])
def test_json_adherence(text, strict, lenient, pred):
    s = M.score_json(text, "no")
    assert (s["strict"], s["lenient"], s["pred"]) == (strict, lenient, pred)
    assert s["correct"] == float(pred == "no")


def test_label_metrics_by_hand():
    # gold:  y y n n n ; pred: y n y n (unparsed)
    items = [M.score_json(J({"thought": "", "hallucination": p}), g) if p else M.score_json("garbage", g)
             for p, g in (("yes", "yes"), ("no", "yes"), ("yes", "no"), ("no", "no"), (None, "no"))]
    m = M.json_metrics(items, seed=0, resamples=200)
    assert m["json_strict"]["value"] == pytest.approx(0.8)
    assert m["label_accuracy"]["value"] == pytest.approx(2 / 4)        # on the 4 parsed
    assert m["label_accuracy_all"]["value"] == pytest.approx(2 / 5)
    assert m["label_precision"]["value"] == pytest.approx(1 / 2)       # tp 1, predicted yes 2
    assert m["label_recall"]["value"] == pytest.approx(1 / 2)          # tp 1, gold yes 2 (parsed)
    assert m["label_f1"]["value"] == pytest.approx(1 / 2)
    lo, hi = m["json_strict"]["ci95"]
    assert lo <= 0.8 <= hi and lo < hi


def test_bootstrap_interval_is_seeded_and_narrows():
    rng = np.random.default_rng(1)
    small, large = rng.random(30) < 0.4, rng.random(3000) < 0.4
    a, b = M.mean_metric(small, seed=3), M.mean_metric(small, seed=3)
    assert a == b and a["ci95"][0] < a["value"] < a["ci95"][1]
    w_small = np.diff(a["ci95"])[0]
    w_large = np.diff(M.mean_metric(large, seed=3)["ci95"])[0]
    assert w_large < w_small / 5


def test_translation_metrics_match_sacrebleu_and_strip_lead_in():
    from sacrebleu.metrics import BLEU, CHRF

    refs = ["Sure, here is the English translation: \n\n the cat sat on the mat today", "a dog ran in the park"]
    hyps = ["Sure, here is the English translation: the cat sat on a mat today", "the dog ran in a park"]
    m = M.translation_metrics(hyps, refs, seed=0, resamples=100)
    clean_h, clean_r = [strip_lead_in(h) for h in hyps], [strip_lead_in(r) for r in refs]
    assert clean_r[0] == "the cat sat on the mat today"
    assert m["chrf++"]["value"] == pytest.approx(CHRF(word_order=2).corpus_score(clean_h, [clean_r]).score)
    assert m["bleu"]["value"] == pytest.approx(BLEU().corpus_score(clean_h, [clean_r]).score)


def test_optional_metrics_fail_clearly(tmp_path):
    from tell.errors import TellError

    with pytest.raises(TellError, match="bleurt"):
        M.translation_metrics(["a"], ["a"], seed=0, resamples=10, bleurt=str(tmp_path))


@pytest.mark.parametrize("text, number", [("so 3 + 4 = 7\n#### 7", "7"), ("#### 1,234", "1234"),
                                          ("The answer is 12.", "12"), ("It costs $3.50 in all", "3.50"),
                                          ("no digits", None)])
def test_gsm8k_number(text, number):
    assert gsm8k_number(text) == number


@pytest.mark.parametrize("text, pred", [("(B) because", "B"), ("The answer is C.", "C"), ("Answer: (A)", "A"),
                                        ("I think it is A, C", "AC"), ("a dog", None), ("E", "E")])
def test_mcq_letter(text, pred):
    assert M.score_mcq(text, "A")["pred"] == pred


def test_json_official_follows_the_official_rewrite_as_described():
    """../shared/paper/official_eval.md: quotes to ', the thought key restored, yes -> no, then json.loads.
    Taken literally, that rewrite breaks every output that has a quoted string value (the restored
    `"thought": "` opens a string the rewritten `'` cannot close), so only quote-free outputs parse."""
    from tell.eval.metrics import json_metrics, official_rewrite, score_json

    good = J({"thought": "The response is right.", "hallucination": "yes"})
    assert official_rewrite(good) == "{\"thought\": \"The response is right.', 'hallucination': 'no'}"
    assert score_json(good, "yes")["official"] == 0.0 and score_json(good, "yes")["strict"] == 1.0
    assert score_json("{}", "no")["official"] == 1.0 and score_json("no JSON here", "no")["official"] == 0.0
    items = [score_json(x, "no") for x in ("{}", "[1, 2]", "nothing", good)]
    assert json_metrics(items, seed=0, resamples=50)["json_official"]["value"] == 0.5
