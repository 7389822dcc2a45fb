"""The L-BFGS loop: one evaluation per iteration, events to a callback, no printing.

L-BFGS as in the paper's base code (paper.md §2): learning rate 1, a long history, no
line search, one evaluation of the objective and its gradient per iteration. The
optimised image lives in the network's input space and is never clamped inside the
loop (clamping would break L-BFGS's curvature model).
"""

from __future__ import annotations

import math
import time
from collections import deque
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
    image: Tensor | None = None  # the picture this iteration evaluated (network space)


@dataclass
class OptimizeResult:
    image: Tensor  # (1, 3, H, W) network space, detached
    iterations: int
    initial: dict[str, float]
    final: dict[str, float]  # the losses of the returned picture
    best_iteration: int  # iterations taken before the returned picture (0: the start)
    seconds: float
    stopped: str | None = None  # why it stopped early, if it did
    interrupted: bool = False  # stopped by Ctrl-C
    history: list[float] = field(default_factory=list)


Callback = Callable[[StepEvent], None]


def _floats(terms: dict[str, Tensor], total: Tensor) -> dict[str, float]:
    out = {k: float(v.detach()) for k, v in terms.items()}
    out["total"] = float(total.detach())
    return out


class LBFGS:
    """Limited-memory BFGS with a fixed step: no line search, one gradient per step.

    The usual two-loop recursion over the last ``history`` curvature pairs, scaled by
    sᵀy / yᵀy of the newest pair. The very first step has no curvature to go on; it is
    a gradient step whose largest component moves ``first_step`` (in the units of x).
    PyTorch's L-BFGS scales that first step by 1 / Σ|g| instead, which on an image of
    a million values and a large loss makes it so small that the curvature pairs it
    yields are rounding noise, and the optimiser then crawls for hundreds of iterations.
    """

    def __init__(self, history: int, learning_rate: float, first_step: float) -> None:
        self.history = history
        self.learning_rate = learning_rate
        self.first_step = first_step
        self.pairs: deque[tuple[Tensor, Tensor, Tensor]] = deque(maxlen=history)  # s, y, 1/yᵀs
        self.prev_x: Tensor | None = None
        self.prev_g: Tensor | None = None

    def step(self, x: Tensor, g: Tensor) -> Tensor:
        """The next point from the current point ``x`` and the gradient ``g`` there."""
        flat_x, flat_g = x.reshape(-1), g.reshape(-1)
        if self.prev_x is not None and self.prev_g is not None:
            s = flat_x - self.prev_x
            y = flat_g - self.prev_g
            ys = torch.dot(y, s)
            if float(ys) > 1e-10:  # keep only pairs that satisfy the curvature condition
                self.pairs.append((s, y, 1.0 / ys))
        q = -flat_g
        alphas = []
        for s, y, rho in reversed(self.pairs):
            a = rho * torch.dot(s, q)
            q = q - a * y
            alphas.append(a)
        if self.pairs:
            s, y, _ = self.pairs[-1]
            q = q * (torch.dot(s, y) / torch.dot(y, y))
        else:
            q = q * (self.first_step / flat_g.abs().max().clamp_min(1e-20))
        for (s, y, rho), a in zip(self.pairs, reversed(alphas), strict=True):
            b = rho * torch.dot(y, q)
            q = q + (a - b) * s
        self.prev_x, self.prev_g = flat_x.clone(), flat_g.clone()
        return (flat_x + self.learning_rate * q).view_as(x)


def run_lbfgs(
    objective: Objective,
    x0: Tensor,
    *,
    iterations: int,
    history: int = 100,
    learning_rate: float = 1.0,
    first_step: float = 1.0,
    callback: Callback | None = None,
    level: int = 1,
    levels: int = 1,
) -> OptimizeResult:
    """Minimise ``objective`` over the image, starting from ``x0`` (network space).

    ``first_step`` is the largest change of any value in the first iteration, in the
    units of x.
    """
    optimizer = LBFGS(history, learning_rate, first_step)
    x = x0.detach().clone()
    start = time.perf_counter()
    initial: dict[str, float] = {}
    losses: list[float] = []
    stopped = None
    # Without a line search a step can overshoot for an iteration or two before L-BFGS
    # recovers; the picture returned is the best one evaluated, never a transient spike.
    best = x.clone()
    best_values: dict[str, float] = {}
    best_iteration = 0
    done = 0
    interrupted = False
    try:
        for i in range(1, iterations + 1):
            x.requires_grad_(True)
            terms = objective.terms(x)
            loss = objective.total(terms)
            (grad,) = torch.autograd.grad(loss, x)
            x = x.detach()
            values = _floats(terms, loss)
            total = values["total"]
            if not math.isfinite(total):
                stopped = f"the loss became {total} at iteration {i}; kept the best finite picture"
                break
            if not initial:
                initial = dict(values)
            if not best_values or total < best_values["total"]:
                best.copy_(x)
                best_values, best_iteration = values, i - 1
            losses.append(total)
            evaluated = x
            x = optimizer.step(x, grad)
            done = i
            if callback is not None:
                terms_only = {k: v for k, v in values.items() if k != "total"}
                elapsed = time.perf_counter() - start
                callback(
                    StepEvent(i, iterations, total, terms_only, elapsed, level, levels, evaluated)
                )
    except KeyboardInterrupt:  # Ctrl-C: stop here and hand back the best picture so far
        interrupted = True
        stopped = f"interrupted after {done} iterations"
    if stopped is None:  # the picture after the last step has not been evaluated yet
        with torch.no_grad():
            terms = objective.terms(x)
            final = _floats(terms, objective.total(terms))
        if math.isfinite(final["total"]) and (
            not best_values or final["total"] < best_values["total"]
        ):
            best, best_values, best_iteration = x, final, done
    if not best_values:  # no finite evaluation at all: keep the starting picture
        with torch.no_grad():
            terms = objective.terms(best)
            best_values = _floats(terms, objective.total(terms))
    if not initial:
        initial = dict(best_values)
    return OptimizeResult(
        image=best.detach(),
        iterations=done,
        initial=initial,
        final=best_values,
        best_iteration=best_iteration,
        seconds=time.perf_counter() - start,
        stopped=stopped,
        interrupted=interrupted,
        history=losses,
    )
