"""The paper's metrics, per item where they can be, each with a 95% bootstrap confidence interval.

JSON adherence (Halu-CoT-JSON):
* strict: the whole output parses as one JSON object (`json.loads`, which allows surrounding whitespace;
  nothing is rewritten first) with exactly the keys `thought` (a string) and `hallucination` in {yes, no};
* lenient: some JSON object can be extracted from the output (inside code fences or prose) that has a
  `hallucination` key in {yes, no}; extra keys allowed.
* official (`json_official`): what the official repository's script computes: the output, after its
  rewrite (`"` -> `'`, the `thought` key's quotes restored, every `yes` -> `no`), parses as JSON at all. The
  script reads the first 1,000 test items: evaluate with `--limit 1000` for a figure comparable with the paper.
Which one to compare with the paper: `json_official` (the paper's "JSON correctness" came from that script);
`json_strict` is the one that means the output is the required object.
Label metrics (accuracy, precision, recall, F1 with "yes" as positive) are computed on the leniently parsed
outputs, never on the official rewrite (which turns every "yes" into "no"); `label_accuracy_all` counts an
unparsed output as wrong.
Translation: corpus chrF++ and BLEU (sacrebleu) after stripping the "Sure, here is the ... translation:"
lead-in from hypotheses and references; optional BLEURT-20 and COMET from user-given checkpoints.
GSM8K: exact match of the final number. AGIEval: exact match of the option letter(s) / the cloze answer.
Format (a structured-output task of your own, e.g. the demo world's): format adherence to a regex and
exact-match accuracy.
"""

from __future__ import annotations

import json
import re
from typing import Callable, Sequence

import numpy as np

# Imported by name on purpose: eval.run calls `metrics.gsm8k_number`.
from tell.data.answers import gsm8k_number, strip_lead_in
from tell.errors import TellError

LABELS = ("yes", "no")


def parse_strict(text: str) -> dict | None:
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    if (isinstance(obj, dict) and set(obj) == {"thought", "hallucination"} and isinstance(obj["thought"], str)
            and obj["hallucination"] in LABELS):
        return obj
    return None


def parse_lenient(text: str) -> dict | None:
    dec = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = dec.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("hallucination"), str) \
                and obj["hallucination"].strip().lower() in LABELS:
            return obj
    return None


def official_rewrite(text: str) -> str:
    """The official repository's rewrite before parsing (../shared/paper/official_eval.md): every `"` becomes
    `'`, `'thought': '` and `'thought': "` become `"thought": "`, and every `yes` becomes `no`."""
    text = text.replace('"', "'")
    text = text.replace("'thought': '", '"thought": "').replace("'thought': \"", '"thought": "')
    return text.replace("yes", "no")


def parses_officially(text: str) -> bool:
    """JSON correctness as the official script counts it: the rewritten output parses as JSON, whatever it
    holds (no check of keys or values)."""
    try:
        json.loads(official_rewrite(text))
    except (json.JSONDecodeError, RecursionError):
        return False
    return True


def score_json(output: str, gold: str) -> dict:
    strict, lenient = parse_strict(output), parse_lenient(output)
    pred = lenient["hallucination"].strip().lower() if lenient else None
    return {"strict": float(strict is not None), "lenient": float(lenient is not None),
            "official": float(parses_officially(output)), "pred": pred, "gold": gold, "correct": float(pred == gold)}


def score_gsm8k(output: str, answer: str) -> dict:
    pred = gsm8k_number(output)
    return {"pred": pred, "correct": float(pred is not None and answer is not None and _same_number(pred, answer))}


def _same_number(a: str, b: str) -> bool:
    try:
        return abs(float(a) - float(b)) < 1e-9
    except ValueError:
        return a == b


def score_mcq(output: str, label: str, choices: Sequence[str] = "ABCDE") -> dict:
    """The option letter(s) the output commits to: after 'answer (is)', else the first standalone option
    letter ('(B)', 'B.', a bare 'B'); only the set's own letters count."""
    text, L = output.strip(), "".join(choices)
    m = re.search(rf"(?i:answer)\s*(?:(?i:is)\s*)?[:：]?\s*\(?([{L}](?:\s*,\s*[{L}])*)\b", text) or \
        re.search(rf"(?<![A-Za-z])\(?([{L}](?:\s*,\s*[{L}])*)(?![A-Za-z])", text)
    pred = re.sub(r"[\s,]", "", m.group(1)) if m else None
    return {"pred": pred, "correct": float(pred == label)}


def score_format(output: str, regex: str, answer: str) -> dict:
    """A structured-output task of your own: `format` = the output (whitespace folded) matches `regex`
    in full; `correct` = it equals the reference answer (whitespace folded)."""
    norm = lambda t: " ".join(t.split())
    out = norm(output)
    return {"format": float(re.fullmatch(regex, out) is not None), "correct": float(out == norm(answer))}


def score_cloze(output: str, answer: str) -> dict:
    norm = lambda t: re.sub(r"\s+", "", t.strip().strip("$").rstrip("."))
    first = output.strip().splitlines()[0] if output.strip() else ""
    return {"pred": first, "correct": float(norm(first) == norm(answer))}


# ---- bootstrap --------------------------------------------------------------------------------------------

def bootstrap(n: int, stat: Callable[[np.ndarray], float], *, resamples: int = 1000, seed: int = 0,
              level: float = 0.95) -> tuple[float, float, float]:
    """(value, low, high): `stat` of all items, and the percentile interval over `resamples` resamples of
    the items with replacement."""
    full = stat(np.arange(n))
    if n == 0:
        return full, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    vals = np.array([stat(rng.integers(0, n, n)) for _ in range(resamples)], dtype=float)
    vals = vals[~np.isnan(vals)]
    if not len(vals):
        return full, float("nan"), float("nan")
    a = (1 - level) / 2
    return full, float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))


def _ci(value_low_high) -> dict:
    v, lo, hi = value_low_high
    return {"value": None if v is None or np.isnan(v) else float(v),
            "ci95": [None if np.isnan(lo) else float(lo), None if np.isnan(hi) else float(hi)]}


def mean_metric(values: Sequence[float], seed: int, resamples: int = 1000) -> dict:
    arr = np.asarray(values, dtype=float)
    return _ci(bootstrap(len(arr), lambda i: float(arr[i].mean()) if len(i) else float("nan"), seed=seed,
                         resamples=resamples))


def macro_mean(groups: Sequence[Sequence[float]], seed: int, resamples: int = 1000, level: float = 0.95) -> dict:
    """The mean of the groups' means (AGIEval's average over its sub-tasks: each counts once, whatever its size),
    with a percentile interval from resampling items within each group (a stratified bootstrap)."""
    arrs = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if not arrs:
        return _ci((float("nan"), float("nan"), float("nan")))
    value = float(np.mean([a.mean() for a in arrs]))
    if not resamples:
        return _ci((value, float("nan"), float("nan")))
    rng = np.random.default_rng(seed)
    vals = [np.mean([a[rng.integers(0, len(a), len(a))].mean() for a in arrs]) for _ in range(resamples)]
    a = (1 - level) / 2
    return _ci((value, float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))))


def json_metrics(items: list[dict], seed: int, resamples: int = 1000) -> dict:
    strict = [x["strict"] for x in items]
    lenient = [x["lenient"] for x in items]
    parsed = np.array([x["pred"] is not None for x in items])
    pred_yes = np.array([x["pred"] == "yes" for x in items])
    gold_yes = np.array([x["gold"] == "yes" for x in items])
    correct = np.array([x["correct"] for x in items])

    def prf(i, which):
        p, g, ok = pred_yes[i] & parsed[i], gold_yes[i] & parsed[i], parsed[i]
        tp = float((p & g).sum())
        if which == "precision":
            return tp / p.sum() if p.sum() else float("nan")
        if which == "recall":
            return tp / g.sum() if g.sum() else float("nan")
        if which == "f1":
            denom = p.sum() + g.sum()
            return 2 * tp / denom if denom else float("nan")
        return float(correct[i][ok[i]].mean()) if ok[i].any() else float("nan")

    official = [x.get("official", float("nan")) for x in items]  # predictions saved before it existed: n/a
    out = {"json_strict": mean_metric(strict, seed, resamples), "json_lenient": mean_metric(lenient, seed, resamples),
           "json_official": mean_metric(official, seed, resamples),
           "label_accuracy_all": mean_metric(correct, seed, resamples)}
    for name in ("accuracy", "precision", "recall", "f1"):
        out[f"label_{name}"] = _ci(bootstrap(len(items), lambda i, w=name: prf(i, w), seed=seed, resamples=resamples))
    return out


def translation_metrics(hyps: list[str], refs: list[str], seed: int, resamples: int = 1000,
                        bleurt: str | None = None, comet: str | None = None, sources: list[str] | None = None) -> dict:
    from sacrebleu.metrics import BLEU, CHRF

    hyps = [strip_lead_in(h) for h in hyps]
    refs = [strip_lead_in(r) for r in refs]
    out = {}
    for name, metric in (("chrf++", CHRF(word_order=2)), ("bleu", BLEU())):
        # Per-sentence sufficient statistics, summed over each resample: exact corpus scores, fast.
        stats = np.array(metric._extract_corpus_statistics(hyps, [refs]), dtype=float)
        out[name] = _ci(bootstrap(len(hyps), lambda i, m=metric, s=stats: m._compute_score_from_stats(
            list(s[i].sum(axis=0))).score, seed=seed, resamples=resamples))
    if bleurt:
        out["bleurt"] = mean_metric(bleurt_scores(bleurt, hyps, refs), seed, resamples)
    if comet:
        out["comet"] = mean_metric(comet_scores(comet, hyps, refs, sources or [""] * len(hyps)), seed, resamples)
    return out


def bleurt_scores(checkpoint: str, hyps: list[str], refs: list[str]) -> list[float]:
    """BLEURT-20 with the official `bleurt` package (pip install git+https://github.com/google-research/bleurt)."""
    try:
        from bleurt import score as bleurt_score
    except ImportError as e:
        raise TellError("--bleurt needs the 'bleurt' package (pip install git+https://github.com/google-research/bleurt)") from e
    from pathlib import Path
    if not Path(checkpoint).is_dir():
        raise TellError("no such BLEURT checkpoint folder (download BLEURT-20 and unzip it)", file=checkpoint)
    return list(bleurt_score.BleurtScorer(checkpoint).score(references=refs, candidates=hyps))


def comet_scores(checkpoint: str, hyps: list[str], refs: list[str], sources: list[str]) -> list[float]:
    """COMET with the `unbabel-comet` package from a local checkpoint file."""
    try:
        from comet import load_from_checkpoint
    except ImportError as e:
        raise TellError("--comet needs the 'unbabel-comet' package (pip install unbabel-comet)") from e
    from pathlib import Path
    if not Path(checkpoint).is_file():
        raise TellError("no such COMET checkpoint file", file=checkpoint)
    model = load_from_checkpoint(checkpoint)
    data = [{"src": s, "mt": h, "ref": r} for s, h, r in zip(sources, hyps, refs)]
    return list(model.predict(data, batch_size=8, gpus=0).scores)
