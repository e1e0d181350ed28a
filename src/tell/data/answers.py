"""Answer normalisers: small pure functions that turn a free-text answer into the form it is scored in.

A normaliser is applied the same way to the gold answer (when a builder writes a data set) and to the
model's output (when a metric scores it), so both sides are compared on equal terms. Users:
`tell.data.builders` (references and gold numbers in a record's `meta`) and `tell.eval.metrics` (scoring).
They live here, not in the builders, because scoring must not depend on the module that downloads files.
"""

from __future__ import annotations

import re

_LEAD = re.compile(r"^\s*Sure, here is the \w+ translation:\s*", re.I)


def strip_lead_in(text: str) -> str:
    """Remove the fixed "Sure, here is the ... translation:" lead-in (references and hypotheses alike)."""
    return _LEAD.sub("", text, count=1).strip()


def gsm8k_number(text: str) -> str | None:
    """The final number: after '####' when present, else the last number in the text; commas removed."""
    tail = text.split("####")[-1] if "####" in text else text
    nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", tail)
    if not nums:
        return None
    n = nums[-1 if "####" not in text else 0].replace(",", "")
    return n[:-2] if n.endswith(".0") else n.rstrip(".")
