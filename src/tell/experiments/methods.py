"""The methods a sweep compares: one table with what each trains on, how it pairs with the tell cell,
and how the report draws it. The sweep plans cells from it, a cell reads its data and anchor from it, and
config, demo and report take names from it; nothing else decides by a method's name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    trains: bool        # False: the base model as it is
    per_ratio: bool     # one cell per general ratio (paired with the tell cell of that ratio)
    color: str          # in the report's plots
    task: bool = True            # trains on task data (general-only: none; its budget is 0)
    general: str | None = None   # which general data its mixture draws: None, "general" or "placebo" (spec's sets)
    anchor: str | None = None    # None, "anchor" (the spec's) or "random" (the sweep's random anchor)
    # what it takes from the tell cell it is paired with: None (its own budgets), "budgets" (the same task budget
    # and ratio), "general_tokens" (the tell cell's achieved general tokens) or "steps" (its optimizer steps)
    follows: str | None = None
    needs: tuple[str, ...] = ()  # spec fields it cannot run without

    @property
    def ratio_zero(self) -> bool:
        """Its mixture holds no general data whatever the cell's ratio (sft, sft-matched)."""
        return self.trains and self.task and self.general is None


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("base", "the model without training (one cell per seed)", False, False, "#777777", task=False),
    Method("sft", "task data only, no anchor, 1 epoch (the paper's SFT)", True, False, "#1f77b4"),
    Method("sft-matched", "task data only, gone over for exactly the optimizer steps of the paired tell cell "
                          "(the fair baseline the paper lacks)", True, True, "#17becf", follows="steps"),
    Method("general-only", "the paired tell cell's general data only (same general tokens)", True, True, "#8c564b",
           task=False, general="general", follows="general_tokens", needs=("general",)),
    Method("tell", "anchor + task + general, extensively shuffled", True, True, "#d62728", general="general",
           anchor="anchor", needs=("general", "anchor")),
    Method("tell-no-anchor", "tell without the anchor", True, True, "#ff7f0e", general="general", follows="budgets",
           needs=("general",)),
    Method("tell-placebo", "tell with the placebo general set (placebo_general: same tokens, none of the task's "
                           "skills): more steps on instruction data without transfer", True, True, "#9467bd",
           general="placebo", follows="budgets", needs=("placebo_general",)),
    Method("tell-random-anchor", "tell with a random anchor of the anchor's token length (random_anchor)", True, True,
           "#e377c2", general="general", anchor="random", follows="budgets", needs=("general", "anchor")),
)}
METHOD_NAMES = tuple(METHODS)
# what a sweep runs when its spec names no methods: the ones that need no input beyond task, general and anchor
DEFAULT_METHODS = ("base", "sft", "sft-matched", "general-only", "tell", "tell-no-anchor")
# the paired methods that share tell's budgets, in the order a sweep plans them
BUDGET_TWINS = tuple(m.name for m in METHODS.values() if m.follows == "budgets")
