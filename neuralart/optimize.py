"""The L-BFGS loop: one evaluation per iteration, events to a callback, no printing.

L-BFGS as in the paper's base code (docs/method.md §2): learning rate 1, a long history, no
line search, one evaluation of the objective and its gradient per iteration. The
optimised image lives in the network's input space and is never clamped inside the
loop (clamping would break L-BFGS's curvature model).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor


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
    schedule: tuple[int, ...] = ()  # the iterations planned at every level, coarse to fine

    @property
    def completed(self) -> int:
        """Iterations completed over all levels so far."""
        return sum(self.schedule[: self.level - 1]) + self.iteration

    @property
    def total(self) -> int:
        """Iterations planned over all levels."""
        return sum(self.schedule) if self.schedule else self.iterations * self.levels


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
    losses: list[float] = field(default_factory=list)  # the objective at each iteration


Callback = Callable[[StepEvent], None]


class Evaluator(Protocol):
    """What L-BFGS minimises: the objective's terms, total and gradient at a picture.

    :class:`neuralart.losses.Objective` evaluates the whole picture with autograd;
    :class:`neuralart.tiling.TiledObjective` evaluates it tile by tile.
    """

    def value_and_grad(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """(unweighted terms, total, gradient with respect to ``x``), all detached."""
        ...

    def value(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """(unweighted terms, total), without a gradient."""
        ...


def _read(
    terms: dict[str, Tensor], total: Tensor, extra: Tensor | None
) -> tuple[dict[str, float], float | None]:
    """The terms, the total and ``extra`` as Python numbers, in one device-to-host copy.

    On a GPU every ``float(tensor)`` waits for the device; reading all the numbers an
    iteration reports at once keeps that to a single wait per iteration.
    """
    parts = [v.detach().to(total.dtype).reshape(()) for v in terms.values()]
    parts.append(total.detach().reshape(()))
    if extra is not None:
        parts.append(extra.detach().to(total.dtype).reshape(()))
    numbers = torch.stack(parts).tolist()
    out = dict(zip(terms, numbers, strict=False))
    out["total"] = numbers[len(terms)]
    return out, (numbers[-1] if extra is not None else None)


def _floats(terms: dict[str, Tensor], total: Tensor) -> dict[str, float]:
    return _read(terms, total, None)[0]


class LBFGS:
    """Limited-memory BFGS with a fixed step: no line search, one gradient per step.

    The search direction is −H·g with H the L-BFGS inverse-Hessian estimate from the last
    ``history`` curvature pairs (s, y) and H₀ = γI, γ = sᵀy / yᵀy of the newest pair. The
    very first step has no curvature to go on; it is a gradient step whose largest
    component moves ``first_step`` (in the units of x). PyTorch's L-BFGS scales that
    first step by 1 / Σ|g| instead, which on an image of a million values and a large
    loss makes it so small that the curvature pairs it yields are rounding noise, and the
    optimiser then crawls for hundreds of iterations.

    H·g is computed in the compact form of Byrd, Nocedal & Schnabel (1994),
    H·g = γg + Sᵀp − γYᵀr, with r = R⁻¹Sg and p = R⁻ᵀ((D + γYYᵀ)r − γYg), where the
    rows of S and Y are the pairs (oldest first), R the upper triangle of SYᵀ and D its
    diagonal. It gives the same direction as the usual two-loop recursion, but in a
    handful of matrix products over the stored pairs instead of four vector operations
    per pair: about ten kernel launches per step instead of nine hundred with a history
    of 100, which on a GPU is most of an iteration's cost. The pairs live in two
    preallocated (history × n) buffers filled as a ring; the small k × k algebra runs in
    float64 (float32 on MPS).

    Everything stays on the tensors' device. The one number the host needs (whether the
    newest pair satisfies the curvature condition, yᵀs > 0) comes from :meth:`observe`,
    so that a caller can read it together with the loss it reports anyway.
    """

    def __init__(
        self, history: int, learning_rate: float, first_step: float, capacity: int | None = None
    ) -> None:
        self.history = history
        self.learning_rate = learning_rate
        self.first_step = first_step
        # No more pairs than steps can be stored: a short run allocates less.
        self.slots = max(1, min(history, capacity)) if capacity is not None else history
        self.s_rows: Tensor | None = None  # (slots, n): s of each stored pair, by slot
        self.y_rows: Tensor | None = None
        self.sy: Tensor | None = None  # (slots, slots): s_i · y_j, by slot
        self.yy: Tensor | None = None  # (slots, slots): y_i · y_j, by slot
        self.order: list[int] = []  # the slots in use, oldest pair first
        self.prev_x: Tensor | None = None
        self.prev_g: Tensor | None = None
        self._pending: tuple[Tensor, Tensor, Tensor] | None = None  # s, y, yᵀs at this point

    @property
    def pairs(self) -> int:
        """How many curvature pairs are stored."""
        return len(self.order)

    def observe(self, x: Tensor, g: Tensor) -> Tensor | None:
        """The newest curvature pair for point ``x`` with gradient ``g``: its yᵀs, on the
        device (None at the first point). :meth:`step` at the same point uses it."""
        if self.prev_x is None or self.prev_g is None:
            self._pending = None
            return None
        s = x.reshape(-1) - self.prev_x
        y = g.reshape(-1) - self.prev_g
        ys = torch.dot(y, s)
        self._pending = (s, y, ys)
        return ys

    def _store(self, s: Tensor, y: Tensor) -> int:
        """Put a pair in the next slot (the oldest pair's once all are used)."""
        if self.s_rows is None:
            n = s.numel()
            self.s_rows = s.new_zeros(self.slots, n)
            self.y_rows = s.new_zeros(self.slots, n)
            small = torch.float32 if s.device.type == "mps" else torch.float64
            self.sy = s.new_zeros(self.slots, self.slots, dtype=small)
            self.yy = s.new_zeros(self.slots, self.slots, dtype=small)
        assert self.y_rows is not None
        slot = len(self.order) if len(self.order) < self.slots else self.order.pop(0)
        self.s_rows[slot].copy_(s)
        self.y_rows[slot].copy_(y)
        self.order.append(slot)
        return slot

    def step(self, x: Tensor, g: Tensor, ys: float | None = None) -> Tensor:
        """The next point from the current point ``x`` and the gradient ``g`` there.

        ``ys``: the value of what :meth:`observe` returned for this point, if the caller
        has read it already; otherwise :meth:`observe` runs here and its value is read.
        """
        flat_x, flat_g = x.reshape(-1), g.reshape(-1)
        if ys is None:
            pending = self.observe(x, g)
            ys = None if pending is None else float(pending)
        slot = None
        if self._pending is not None and ys is not None and ys > 1e-10:
            s, y, _ = self._pending  # keep only pairs with positive curvature
            slot = self._store(s, y)
        self._pending = None
        if not self.order:
            direction = -flat_g * (self.first_step / flat_g.abs().max().clamp_min(1e-20))
        else:
            direction = -self._times_h(flat_g, slot)
        self.prev_x, self.prev_g = flat_x.clone(), flat_g.clone()
        return (flat_x + self.learning_rate * direction).view_as(x)

    def _times_h(self, g: Tensor, new_slot: int | None) -> Tensor:
        """H·g in the compact form; ``new_slot``: the slot just filled, if any."""
        assert self.s_rows is not None and self.y_rows is not None
        assert self.sy is not None and self.yy is not None
        k = len(self.order)
        s_rows, y_rows = self.s_rows[:k], self.y_rows[:k]
        small = self.sy.dtype
        if new_slot is not None:  # one pass over each buffer gives S·g and S·y_new alike
            both = torch.stack((g, self.y_rows[new_slot]), dim=1)  # (n, 2)
            s_both, y_both = (s_rows @ both).to(small), (y_rows @ both).to(small)
            self.sy[:k, new_slot] = s_both[:, 1]
            self.yy[:k, new_slot] = y_both[:, 1]
            self.yy[new_slot, :k] = y_both[:, 1]
            s_g, y_g = s_both[:, 0], y_both[:, 0]
        else:
            s_g, y_g = (s_rows @ g).to(small), (y_rows @ g).to(small)
        order = torch.tensor(self.order, device=g.device)
        sy = self.sy[order][:, order]  # oldest first
        yy = self.yy[order][:, order]
        newest = self.order[-1]
        gamma = self.sy[newest, newest] / self.yy[newest, newest]
        upper = torch.triu(sy)
        r = torch.linalg.solve_triangular(upper, s_g[order].unsqueeze(1), upper=True)
        rhs = (
            torch.diagonal(sy).unsqueeze(1) * r + gamma * (yy @ r) - gamma * y_g[order].unsqueeze(1)
        )
        p = torch.linalg.solve_triangular(upper.T, rhs, upper=False)
        coef_s = torch.zeros_like(s_g).index_copy_(0, order, p[:, 0])
        coef_y = torch.zeros_like(y_g).index_copy_(0, order, -gamma * r[:, 0])
        hg = g * gamma.to(g.dtype)
        hg = hg + s_rows.T @ coef_s.to(g.dtype) + y_rows.T @ coef_y.to(g.dtype)
        return hg


def run_lbfgs(
    objective: Evaluator,
    x0: Tensor,
    *,
    iterations: int,
    history: int = 100,
    learning_rate: float = 1.0,
    first_step: float = 1.0,
    callback: Callback | None = None,
    level: int = 1,
    levels: int = 1,
    schedule: tuple[int, ...] = (),
) -> OptimizeResult:
    """Minimise ``objective`` over the image, starting from ``x0`` (network space).

    ``first_step`` is the largest change of any value in the first iteration, in the
    units of x.
    """
    optimizer = LBFGS(history, learning_rate, first_step, capacity=iterations)
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
            terms, loss, grad = objective.value_and_grad(x)
            curvature = optimizer.observe(x, grad)
            values, ys = _read(terms, loss, curvature)  # the iteration's one host sync
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
            x = optimizer.step(x, grad, ys)
            done = i
            if callback is not None:
                terms_only = {k: v for k, v in values.items() if k != "total"}
                elapsed = time.perf_counter() - start
                callback(
                    StepEvent(
                        i,
                        iterations,
                        total,
                        terms_only,
                        elapsed,
                        level,
                        levels,
                        evaluated,
                        schedule,
                    )
                )
    except KeyboardInterrupt:  # Ctrl-C: stop here and hand back the best picture so far
        interrupted = True
        stopped = f"interrupted after {done} iterations"
    if stopped is None:  # the picture after the last step has not been evaluated yet
        final = _floats(*objective.value(x))
        if math.isfinite(final["total"]) and (
            not best_values or final["total"] < best_values["total"]
        ):
            best, best_values, best_iteration = x, final, done
    if not best_values:  # no finite evaluation at all: keep the starting picture
        best_values = _floats(*objective.value(best))
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
        losses=losses,
    )
