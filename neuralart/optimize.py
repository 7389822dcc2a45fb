"""The L-BFGS loop: one function evaluation per iteration, events to a callback, no printing.

L-BFGS as in the paper's base code (paper.md §2): learning rate 1, a long history, no line
search. The optimised image lives in the network's input space and is never clamped
inside the loop (clamping would break L-BFGS's curvature model).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from neuralart.losses import Objective


@dataclass(frozen=True)
class StepEvent:
    """Reported after every iteration."""

    iteration: int  # iterations completed at this level
    iterations: int  # iterations planned at this level
    loss: float  # objective at the start of this iteration
    terms: dict[str, float]  # unweighted terms at the start of this iteration
    elapsed: float  # seconds since this level started
    level: int = 1
    levels: int = 1


@dataclass
class OptimizeResult:
    image: Tensor  # (1, 3, H, W) network space, detached
    iterations: int
    initial: dict[str, float]
    final: dict[str, float]
    seconds: float
    stopped: str | None = None  # why it stopped early, if it did
    history: list[float] = field(default_factory=list)


Callback = Callable[[StepEvent], None]


def _floats(terms: dict[str, Tensor], total: Tensor) -> dict[str, float]:
    out = {k: float(v) for k, v in terms.items()}
    out["total"] = float(total)
    return out


def run_lbfgs(
    objective: Objective,
    x0: Tensor,
    *,
    iterations: int,
    history: int = 100,
    learning_rate: float = 1.0,
    callback: Callback | None = None,
    level: int = 1,
    levels: int = 1,
) -> OptimizeResult:
    """Minimise ``objective`` over the image, starting from ``x0`` (network space)."""
    x = x0.detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [x],
        lr=learning_rate,
        max_iter=1,  # one evaluation per reported iteration
        history_size=history,
        line_search_fn=None,
        tolerance_grad=0.0,
        tolerance_change=0.0,
    )
    last: dict[str, Tensor] = {}

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        terms = objective.terms(x)
        loss = objective.total(terms)
        loss.backward()
        last.clear()
        last.update({k: v.detach() for k, v in terms.items()})
        last["total"] = loss.detach()
        return loss

    start = time.perf_counter()
    initial: dict[str, float] = {}
    losses: list[float] = []
    stopped = None
    good = x.detach().clone()  # the last picture whose loss was finite
    point = torch.empty_like(good)
    done = 0
    for i in range(1, iterations + 1):
        point.copy_(x.detach())  # the picture this iteration evaluates
        optimizer.step(closure)
        values = {k: float(v) for k, v in last.items()}
        total = values.pop("total")
        if not math.isfinite(total):
            with torch.no_grad():
                x.copy_(good)
            stopped = f"the loss became {total} at iteration {i}; kept the last finite picture"
            break
        good, point = point, good
        if not initial:
            initial = {**values, "total": total}
        losses.append(total)
        done = i
        if callback is not None:
            callback(
                StepEvent(i, iterations, total, values, time.perf_counter() - start, level, levels)
            )
    with torch.no_grad():
        terms = objective.terms(x)
        final = _floats(terms, objective.total(terms))
        if not math.isfinite(final["total"]) and stopped is None:
            x.copy_(good)
            stopped = "the loss became non-finite after the last step; kept the last finite picture"
            terms = objective.terms(x)
            final = _floats(terms, objective.total(terms))
    if not initial:
        initial = dict(final)
    return OptimizeResult(
        image=x.detach(),
        iterations=done,
        initial=initial,
        final=final,
        seconds=time.perf_counter() - start,
        stopped=stopped,
        history=losses,
    )
