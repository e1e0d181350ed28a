"""Metric kinds: one table pairs each kind's per-item scorer, its aggregate (with 95% CIs), its default
generation length, k-shot count and role, as lm-evaluation-harness pairs a metric with its aggregation.

A set's role decides whether it gets the run's anchor: `task` sets do, `general` (general-ability) sets do
not. Without `meta.role` in the data, the paper's split applies: JSON and translation are task sets,
GSM8K and AGIEval general ability.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from tell.data.answers import gsm8k_number
from tell.data.records import Record
from tell.errors import TellError
from tell.eval import metrics as M

ROLES = ("task", "general")


def _score_json(output: str, rec: Record) -> dict:
    return M.score_json(output, rec.meta.get("label", rec.response.strip()))


def _score_gsm8k(output: str, rec: Record) -> dict:
    return M.score_gsm8k(output, rec.meta.get("answer") or gsm8k_number(rec.response))


def _score_mcq(output: str, rec: Record) -> dict:
    return M.score_mcq(output, rec.meta.get("label", rec.response.strip()), rec.meta.get("choices") or "ABCDE")


def _score_cloze(output: str, rec: Record) -> dict:
    return M.score_cloze(output, rec.meta.get("answer", rec.response))


def _score_format(output: str, rec: Record) -> dict:
    if "format_regex" not in rec.meta:
        raise TellError("format items need meta.format_regex", file=rec.origin, line=rec.row)
    return M.score_format(output, rec.meta["format_regex"], rec.meta.get("answer", rec.response))


def _agg_json(rows: list[dict], seed: int, resamples: int, **_: Any) -> dict:
    return M.json_metrics([r["scores"] for r in rows], seed, resamples)


def _agg_translation(rows: list[dict], seed: int, resamples: int, bleurt: str | None = None,
                     comet: str | None = None) -> dict:
    return M.translation_metrics([r["output"] for r in rows], [r["reference"] for r in rows], seed, resamples,
                                 bleurt=bleurt, comet=comet, sources=[r.get("source_text", "") for r in rows])


def _agg_accuracy(rows: list[dict], seed: int, resamples: int, **_: Any) -> dict:
    return {"accuracy": M.mean_metric([r["scores"]["correct"] for r in rows], seed, resamples)}


def _agg_format(rows: list[dict], seed: int, resamples: int, **_: Any) -> dict:
    return {"format_adherence": M.mean_metric([r["scores"]["format"] for r in rows], seed, resamples),
            **_agg_accuracy(rows, seed, resamples)}


@dataclass(frozen=True)
class MetricKind:
    name: str
    score: Callable[[str, Record], dict] | None   # per item: output, record -> scores (None: corpus-level only)
    aggregate: Callable[..., dict]                 # rows, seed, resamples[, bleurt, comet] -> {metric: {value, ci95}}
    max_new_tokens: int                            # default generation length (eval raises it to the
                                                   # set's longest reference x 1.25 + 16: run.default_max_new_tokens)
    role: str                                      # default role when the data do not say
    shots: int = 0                                 # default k-shot examples (from the set's train split)
    item_metrics: tuple[tuple[str, str], ...] = ()  # (metric, per-item score key) for metrics that are item means
    higher_is_better: bool = True                  # the direction of every metric of the kind (lm-eval pairs each
                                                   # metric with one); the report orients verdicts by it
    metrics: tuple[str, ...] = ()                  # every metric name `aggregate` can return (a sweep checks its
                                                   # controls' metrics against them before training)


KINDS: dict[str, MetricKind] = {k.name: k for k in (
    MetricKind("json", _score_json, _agg_json, 512, "task",
               item_metrics=(("json_strict", "strict"), ("json_lenient", "lenient"), ("json_official", "official"),
                             ("label_accuracy_all", "correct")),
               metrics=("json_strict", "json_lenient", "json_official", "label_accuracy_all", "label_accuracy",
                        "label_precision", "label_recall", "label_f1")),
    MetricKind("translation", None, _agg_translation, 1024, "task", shots=2,
               metrics=("chrf++", "bleu", "bleurt", "comet")),
    MetricKind("gsm8k", _score_gsm8k, _agg_accuracy, 384, "general", item_metrics=(("accuracy", "correct"),), metrics=("accuracy",)),
    MetricKind("mcq", _score_mcq, _agg_accuracy, 32, "general", item_metrics=(("accuracy", "correct"),), metrics=("accuracy",)),
    MetricKind("cloze", _score_cloze, _agg_accuracy, 64, "general", item_metrics=(("accuracy", "correct"),), metrics=("accuracy",)),
    MetricKind("format", _score_format, _agg_format, 64, "task",
               item_metrics=(("format_adherence", "format"), ("accuracy", "correct")),
               metrics=("format_adherence", "accuracy")),
)}
KIND_NAMES = tuple(KINDS)
# every metric name an eval set of any kind can report (sweep controls name one of these, or a loss)
METRIC_NAMES = tuple(dict.fromkeys(m for k in KINDS.values() for m in k.metrics))
# Metric names read as lower-is-better where no kind says (rows of older sweeps, lm-eval's perplexities)
LOWER_IS_BETTER_NAMES = ("loss", "perplexity")


def kind(name: str, where: str | None = None) -> MetricKind:
    if name not in KINDS:
        raise TellError(f"unknown metric kind '{name}'; expected one of {list(KIND_NAMES)}", file=where,
                        field="meta.kind")
    return KINDS[name]


def check_items(kind_name: str, recs: list[Record]) -> None:
    """Refuse, before anything is generated, item fields a scorer could not use."""
    for rec in recs:
        choices = rec.meta.get("choices")
        if kind_name == "mcq" and choices is not None and not (
                isinstance(choices, (str, list)) and choices
                and all(isinstance(c, str) and len(c) == 1 and c.isalpha() for c in choices)):
            raise TellError(f"expected the option letters, e.g. \"ABCD\" or [\"A\", \"B\"], got {choices!r}",
                            file=rec.origin, line=rec.row, field="meta.choices")
        if kind_name == "format" and not isinstance(rec.meta.get("format_regex"), str):
            raise TellError("format items need meta.format_regex (a regular expression)", file=rec.origin,
                            line=rec.row, field="meta.format_regex")


def item_scores(kind_name: str, metric: str, row: dict) -> float | None:
    """The per-item value whose mean is `metric` (for paired comparisons), or None for corpus metrics."""
    for m, key in KINDS[kind_name].item_metrics:
        if m == metric:
            return float(row["scores"][key])
    return None
