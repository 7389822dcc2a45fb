"""The L-BFGS loop on problems with known answers."""

from __future__ import annotations

import torch

from neuralart.optimize import LBFGS, StepEvent, run_lbfgs


class _Quadratic:
    """f(x) = ½ (x − c)ᵀ A (x − c) with a known minimum, shaped like an objective."""

    def __init__(self, n: int = 12, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
        self.a = q @ torch.diag(torch.linspace(0.5, 20.0, n, dtype=torch.float64)) @ q.T
        self.c = torch.randn(n, generator=g, dtype=torch.float64)

    def terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        d = x.reshape(-1) - self.c
        return {"style": 0.5 * d @ self.a @ d}

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return terms["style"]

    def value_and_grad(self, x):
        leaf = x.detach().requires_grad_(True)
        terms = self.terms(leaf)
        total = self.total(terms)
        (grad,) = torch.autograd.grad(total, leaf)
        return {k: v.detach() for k, v in terms.items()}, total.detach(), grad

    def value(self, x):
        with torch.no_grad():
            terms = self.terms(x)
            return terms, self.total(terms)


def test_lbfgs_finds_the_minimum_of_a_quadratic():
    problem = _Quadratic()
    x0 = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    result = run_lbfgs(problem, x0, iterations=60, history=20, first_step=0.1)
    torch.testing.assert_close(result.image.reshape(-1), problem.c, atol=1e-6, rtol=0)
    assert result.final["total"] < 1e-10
    assert result.iterations == 60 and result.losses[0] > result.losses[-1]


def test_first_step_is_a_gradient_step_of_the_given_size():
    opt = LBFGS(history=5, learning_rate=1.0, first_step=2.0)
    x = torch.zeros(4)
    g = torch.tensor([1.0, -4.0, 2.0, 0.0])
    new = opt.step(x, g)
    torch.testing.assert_close(new, torch.tensor([-0.5, 2.0, -1.0, 0.0]))


def test_history_is_bounded_and_bad_pairs_are_skipped():
    opt = LBFGS(history=3, learning_rate=1.0, first_step=1.0)
    x = torch.zeros(2)
    for k in range(6):
        x = opt.step(x, x - torch.tensor([1.0, 2.0]) * (k + 1))
    assert opt.pairs <= 3
    opt2 = LBFGS(history=3, learning_rate=1.0, first_step=1.0)
    opt2.step(torch.zeros(2), torch.ones(2))
    opt2.step(torch.ones(2), torch.ones(2) * 2)  # yᵀs = 2 > 0: kept
    opt2.step(torch.zeros(2), torch.ones(2) * 3)  # yᵀs = -2 < 0: skipped
    assert opt2.pairs == 1


def test_the_returned_picture_is_the_best_one_evaluated():
    problem = _Quadratic(seed=0)
    x0 = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    evaluated: list[torch.Tensor] = []  # evaluated[k]: the picture after k steps

    def record(event: StepEvent) -> None:
        assert event.image is not None
        evaluated.append(event.image.clone())

    # A learning rate of 2.2 makes L-BFGS overshoot: the loss falls for two steps, then
    # each step lands farther up the other side of the valley.
    result = run_lbfgs(
        problem,
        x0,
        iterations=10,
        first_step=0.5,
        learning_rate=2.2,
        callback=record,
    )
    losses = result.losses
    best = min(range(len(losses)), key=losses.__getitem__)
    assert 0 < best < len(losses) - 1, losses  # neither the start nor the last picture
    assert losses[-1] > 5 * losses[best]  # the later iterates really overshot
    assert result.best_iteration == best
    assert torch.equal(result.image, evaluated[best])
    assert result.final["total"] == losses[best]
    got = float(problem.total(problem.terms(result.image)))
    assert abs(got - result.final["total"]) <= 1e-9 * max(1.0, got)


def test_a_non_finite_loss_stops_and_keeps_a_finite_picture():
    class Explodes(_Quadratic):
        calls = 0

        def terms(self, x):
            self.calls += 1
            out = super().terms(x)
            if self.calls >= 4:
                out["style"] = out["style"] * float("nan")
            return out

    problem = Explodes()
    x0 = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    result = run_lbfgs(problem, x0, iterations=10, first_step=0.1)
    assert result.stopped is not None and "nan" in result.stopped
    assert result.iterations == 3
    assert torch.isfinite(result.image).all()
    assert result.final["total"] == min(result.losses)


def test_ctrl_c_returns_the_best_picture_so_far():
    class Interrupted(_Quadratic):
        calls = 0

        def terms(self, x):
            self.calls += 1
            if self.calls == 5:
                raise KeyboardInterrupt
            return super().terms(x)

    problem = Interrupted()
    x0 = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    result = run_lbfgs(problem, x0, iterations=50, first_step=0.1)
    assert result.interrupted and result.iterations == 4
    assert result.stopped == "interrupted after 4 iterations"
    assert result.final["total"] == min(result.losses) < result.losses[0]


class _TwoLoop:
    """Reference L-BFGS: the textbook two-loop recursion over a list of pairs."""

    def __init__(self, history: int, first_step: float) -> None:
        self.history, self.first_step = history, first_step
        self.pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.prev: tuple[torch.Tensor, torch.Tensor] | None = None
        self.kept = self.skipped = 0  # pairs that passed / failed the curvature test

    def step(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.prev is not None:
            s, y = x - self.prev[0], g - self.prev[1]
            if float(y @ s) > 1e-10:
                self.pairs = [*self.pairs, (s, y, 1.0 / (y @ s))][-self.history :]
                self.kept += 1
            else:
                self.skipped += 1
        self.prev = (x.clone(), g.clone())
        if not self.pairs:
            return x - g * (self.first_step / g.abs().max())
        q, alphas = -g, []
        for s, y, rho in reversed(self.pairs):
            alphas.append(rho * (s @ q))
            q = q - alphas[-1] * y
        s, y, _ = self.pairs[-1]
        q = q * ((s @ y) / (y @ y))
        for (s, y, rho), a in zip(self.pairs, reversed(alphas), strict=True):
            q = q + (a - rho * (y @ q)) * s
        return x + q


def test_compact_form_gives_the_two_loop_direction():
    """Same iterates as the two-loop recursion on a non-quadratic problem, through the
    ring buffer wrapping around several times and pairs being skipped."""
    gen = torch.Generator().manual_seed(3)
    n = 40
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    a = a @ a.T / n + torch.eye(n, dtype=torch.float64)
    c = torch.randn(n, generator=gen, dtype=torch.float64)

    def grad(x: torch.Tensor) -> torch.Tensor:  # of ½xᵀAx − cᵀx + ¼Σx⁴ + 3Σcos(2x)
        return a @ x - c + x.pow(3) - 6 * torch.sin(2 * x)

    ours, ref = LBFGS(history=4, learning_rate=1.0, first_step=0.3), _TwoLoop(4, 0.3)
    x_ours = x_ref = torch.zeros(n, dtype=torch.float64)
    stored = 0  # steps after which ours holds a new newest pair
    for _ in range(25):
        g_ours, g_ref = grad(x_ours), grad(x_ref)
        before = list(ours.order)  # the slots in use, oldest first: a stored pair changes it
        x_ours, x_ref = ours.step(x_ours, g_ours), ref.step(x_ref, g_ref)
        stored += ours.order != before
        torch.testing.assert_close(x_ours, x_ref, rtol=1e-9, atol=1e-9)
    # The non-convex term made the reference skip pairs, and the ring of 4 wrapped around
    # several times; ours stored exactly the pairs that the reference kept.
    assert ref.skipped > 0 and ref.kept > 2 * 4 and ref.kept + ref.skipped == 24
    assert stored == ref.kept
    assert ours.pairs == 4 and ours.s_rows is not None and ours.s_rows.shape == (4, n)


def test_short_runs_allocate_only_the_pairs_they_can_use():
    opt = LBFGS(history=100, learning_rate=1.0, first_step=1.0, capacity=3)
    x = torch.zeros(10)
    for _ in range(5):
        x = opt.step(x, x.pow(3) + x - torch.arange(10.0))
    assert opt.pairs == 3 and opt.s_rows is not None and opt.s_rows.shape == (3, 10)
