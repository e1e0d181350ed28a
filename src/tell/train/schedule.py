"""Learning-rate schedules whose every step runs at a positive learning rate.

Why: HF's linear warm-up gives step 0 the factor 0/W, so a run with a single optimizer step (15 task
examples at batch 16: the paper's smallest SFT baseline) changes nothing, and every short run loses its
first step. Here the factor of 0-based step i (of `total` steps, `warmup` of them warm-up) is:

    phase              steps                    factor
    warm-up            0 <= i < warmup          (i + 1) / (warmup + 1)          1/(W+1) ... W/(W+1)
    peak               i = warmup               1.0
    decay  linear      warmup <= i < total      (total - i) / (total - warmup)  1.0 ... 1/(total-warmup)
           cosine      warmup <= i < total      (1 + cos(pi * p)) / 2,  p = (i - warmup) / (total - warmup)
           constant_with_warmup                 1.0
    past the end       i >= total               linear/cosine 0.0, constant 1.0 (never used for an update:
                                                LambdaLR evaluates it after the last step)

Every one of the `total` steps has a factor > 0, the first step included, and the peak 1.0 is run at
step `warmup`. The decay reaches zero one step after the run ends, so the last step runs at a small
positive rate (linear: 1/(total - warmup) of the peak).

Warm-up length (`warmup_steps`): W = min(ceil(ratio * total), total - 1), and 0 when ratio is 0. The cap
total - 1 means the peak is always run at least once: ratio 1.0 is "every step before the last is warm-up",
a straight ramp 1/total, 2/total, ..., 1.0 ending at the peak, and ratio 0.99 gives the same or one step
less. With total = 1 any ratio gives W = 0: the single step runs at the full learning rate. `lr_lambda`
applies the same cap to a `warmup` given directly, so warmup >= total also means "ramp up to the last step".
"""

from __future__ import annotations

import math
from typing import Callable

KINDS = ("linear", "cosine", "constant_with_warmup")


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """min(ceil(ratio * total), total - 1) warm-up steps; 0 when the ratio is 0 (see the module docstring)."""
    if int(total_steps) != total_steps or total_steps < 1:
        raise ValueError(f"total_steps must be a whole number >= 1, got {total_steps!r}")
    if not 0.0 <= warmup_ratio <= 1.0:
        raise ValueError(f"warmup_ratio must be between 0 and 1, got {warmup_ratio!r}")
    # The 1e-9 keeps float noise (0.07 * 100 = 7.000000000000001) from adding a whole step.
    return min(math.ceil(warmup_ratio * total_steps - 1e-9), int(total_steps) - 1)


def lr_lambda(kind: str, warmup: int, total: int) -> Callable[[int], float]:
    """The multiplier of the peak learning rate for 0-based optimizer step i (a LambdaLR `lr_lambda`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown schedule {kind!r}; expected one of {', '.join(KINDS)}")
    if int(total) != total or total < 1 or int(warmup) != warmup or warmup < 0:
        raise ValueError(f"need total >= 1 and warmup >= 0 (whole numbers), got total={total!r}, warmup={warmup!r}")
    total = int(total)
    warmup = min(int(warmup), total - 1)  # the peak is run at least once (same rule as warmup_steps)
    decay = total - warmup                # >= 1 steps from the peak to the end, the peak included

    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / (warmup + 1)
        if kind == "constant_with_warmup":
            return 1.0
        if i >= total:
            return 0.0
        p = (i - warmup) / decay          # 0 at the peak, (decay - 1) / decay < 1 at the last step
        return 1.0 - p if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * p))

    return factor


def make_scheduler(optimizer, kind: str, warmup: int, total: int):
    """A torch LambdaLR on `optimizer` with the schedule above (pass it to the HF Trainer as `optimizers`)."""
    from torch.optim.lr_scheduler import LambdaLR

    return LambdaLR(optimizer, lr_lambda(kind, warmup, total))


def optimizer_steps(examples: int, batch_size: int, epochs: float = 1.0) -> int:
    """Optimizer steps of `epochs` passes over `examples` at `batch_size` (a last partial batch is a step).
    The one place this is computed: training's metrics, the sweep's plan and sft-matched use it."""
    return math.ceil(examples * epochs / batch_size)
