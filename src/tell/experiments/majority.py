"""A label accuracy read beside its test slice's majority-class rate: what answering the commonest label to every
item scores, which a label metric must beat to show anything (`SweepData.majority_rate`, the report's points and
findings)."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

LABEL_METRICS = ("label_accuracy", "label_accuracy_all")  # label accuracies, read beside the majority-class rate


def majority(folder: Path, set_name: str) -> dict | None:
    """{rate, label, items} from the gold labels the first cell's predictions of the set recorded, or None."""
    for p in sorted(folder.glob("cells/*/eval/predictions.jsonl")):
        golds: Counter = Counter()
        for line in p.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                row = json.loads(line)
                gold = (row.get("scores") or {}).get("gold")
                if row.get("set") == set_name and isinstance(gold, str):
                    golds[gold] += 1
        if golds:
            label, n = golds.most_common(1)[0]
            return {"rate": n / sum(golds.values()), "label": label, "items": sum(golds.values())}
    return None


def beside_majority(data: Any, set_name: str, metric: str, a: Any, b: Any) -> dict:
    """For a label accuracy: the majority-class rate and whether each arm (a Point) beats it, its interval's low
    end above the rate; nothing for other metrics."""
    maj = data.majority_rate(set_name) if metric in LABEL_METRICS else None
    if maj is None:
        return {}
    beats = lambda p: p.lo is not None and p.lo > maj["rate"]  # noqa: E731
    return {"majority": maj, "a_beats_majority": beats(a), "b_beats_majority": beats(b)}
