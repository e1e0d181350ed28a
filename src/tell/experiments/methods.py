"""The methods a sweep compares: one table with what each trains on, how it pairs with the tell cell,
and how the report draws it. The sweep plans cells from it; config, demo and report take names from it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    trains: bool        # False: the base model as it is
    per_ratio: bool     # one cell per general ratio (paired with the tell cell of that ratio)
    color: str          # in the report's plots


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("base", "the model without training (one cell per seed)", False, False, "#777777"),
    Method("sft", "task data only, no anchor, 1 epoch (the paper's SFT)", True, False, "#1f77b4"),
    Method("sft-matched", "task data only, gone over for exactly the optimizer steps of the paired tell cell "
                          "(the fair baseline the paper lacks)", True, True, "#17becf"),
    Method("general-only", "the paired tell cell's general data only (same general tokens)", True, True, "#8c564b"),
    Method("tell", "anchor + task + general, extensively shuffled", True, True, "#d62728"),
    Method("tell-no-anchor", "tell without the anchor", True, True, "#ff7f0e"),
    Method("tell-placebo", "tell with the placebo general set (placebo_general: same tokens, none of the task's "
                           "skills): more steps on instruction data without transfer", True, True, "#9467bd"),
    Method("tell-random-anchor", "tell with a random anchor of the anchor's token length (random_anchor)", True, True,
           "#e377c2"),
)}
METHOD_NAMES = tuple(METHODS)
# what a sweep runs when its spec names no methods: the ones that need no input beyond task, general and anchor
DEFAULT_METHODS = ("base", "sft", "sft-matched", "general-only", "tell", "tell-no-anchor")
