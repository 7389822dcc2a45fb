"""Several pictures of one size optimised together: one network pass for all of them.

A batch of contents on the same style images and configuration, at the same size, makes
one (B, 3, H, W) tensor. Each iteration runs the network once over the batch, then each
picture's own terms (its content targets, the shared style targets) on its slice of the
maps, and one backward pass. The pictures' objectives are separate sums, so the gradient
of their sum is each picture's own gradient, and each picture keeps its own L-BFGS (its
curvature pairs, its best picture so far, its own stop when its loss stops being finite).
The result of each picture is the one it gets alone, up to the rounding of convolutions
run over a batch instead of one picture.

On a GPU the launches of an iteration are then shared by B pictures; on a CPU, which is
busy with one picture's arithmetic already, a batch gains little (``--batch-size auto``
is 1 there).
"""

from __future__ import annotations

import math
import os
import secrets
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from neuralart import cpucache
from neuralart.config import Config
from neuralart.errors import NeuralartError
from neuralart.losses import Objective, StyleState
from neuralart.memory import plan_memory
from neuralart.optimize import LBFGS, Callback, OptimizeResult, StepEvent
from neuralart.transfer import (
    FIRST_STEP_GREY_LEVELS,
    Inputs,
    LevelRecord,
    TransferResult,
    _init_image,
    build_objective,
    finish,
    network_device,
    plan_levels,
    prepare_inputs,
    set_precision,
    tune_device,
)
from neuralart.vgg import VGG19Features

# At most this many pictures in one batch with --batch-size auto.
MAX_AUTO_BATCH = 16


class BatchedObjective:
    """The objectives of B pictures of one size, evaluated in one network pass."""

    def __init__(self, objectives: Sequence[Objective]) -> None:
        self.objectives = list(objectives)
        self.network = self.objectives[0].network
        self.layers = self.objectives[0].layers

    def _terms(self, xs: Tensor) -> tuple[list[dict[str, Tensor]], Tensor]:
        feats = self.network(xs, self.layers) if self.layers else {}
        terms, totals = [], []
        for b, objective in enumerate(self.objectives):
            mine = {name: f[b : b + 1] for name, f in feats.items()}
            t = objective.terms(xs[b : b + 1], features=mine)
            terms.append(t)
            totals.append(objective.total(t))
        return terms, torch.stack(totals)

    def value_and_grad(self, xs: Tensor) -> tuple[list[dict[str, Tensor]], Tensor, Tensor]:
        """(each picture's unweighted terms, the B totals, the (B, 3, H, W) gradient)."""
        leaf = xs.detach().requires_grad_(True)
        terms, totals = self._terms(leaf)
        (grad,) = torch.autograd.grad(totals.sum(), leaf)
        detached = [{k: v.detach() for k, v in t.items()} for t in terms]
        return detached, totals.detach(), grad

    def value(self, xs: Tensor) -> tuple[list[dict[str, Tensor]], Tensor]:
        with torch.no_grad():
            return self._terms(xs)


def run_lbfgs_batch(
    objective: BatchedObjective,
    x0: Tensor,
    *,
    iterations: int,
    history: int,
    learning_rate: float,
    first_step: float,
    callback: Callback | None = None,
    level: int = 1,
    levels: int = 1,
    schedule: tuple[int, ...] = (),
) -> list[OptimizeResult]:
    """:func:`neuralart.optimize.run_lbfgs` for each picture of the batch ``x0`` at once:
    each its own L-BFGS and best picture; a picture whose loss stops being finite keeps
    its best picture and takes no more steps (it is still evaluated with the others).

    ``callback`` hears of every iteration as one :class:`StepEvent` for the batch: its
    loss and terms are the means over the pictures still running, its image the batch."""
    count = x0.shape[0]
    optimizers = [LBFGS(history, learning_rate, first_step, capacity=iterations) for _ in x0]
    x = x0.detach().clone()
    best = x.clone()
    start = time.perf_counter()
    initial: list[dict[str, float]] = [{} for _ in range(count)]
    best_values: list[dict[str, float]] = [{} for _ in range(count)]
    best_iteration = [0] * count
    done = [0] * count
    stopped: list[str | None] = [None] * count
    losses: list[list[float]] = [[] for _ in range(count)]
    for i in range(1, iterations + 1):
        active = [b for b in range(count) if stopped[b] is None]
        if not active:
            break
        terms, totals, grad = objective.value_and_grad(x)
        curvatures = {b: optimizers[b].observe(x[b : b + 1], grad[b : b + 1]) for b in active}
        numbers = _read_batch(terms, totals, curvatures)  # the iteration's one host sync
        steps = []
        for b in active:
            values, ys = numbers[b]
            total = values["total"]
            if not math.isfinite(total):
                stopped[b] = (
                    f"the loss became {total} at iteration {i}; kept the best finite picture"
                )
                continue
            if not initial[b]:
                initial[b] = dict(values)
            if not best_values[b] or total < best_values[b]["total"]:
                best[b].copy_(x[b])
                best_values[b], best_iteration[b] = values, i - 1
            losses[b].append(total)
            steps.append((b, optimizers[b].step(x[b : b + 1], grad[b : b + 1], ys)))
            done[b] = i
        if callback is not None and steps:
            callback(_batch_event(numbers, [b for b, _ in steps], x, i, iterations, start,
                                  level, levels, schedule))  # fmt: skip
        for b, moved in steps:
            x[b : b + 1] = moved
    final_terms, final_totals = objective.value(x)
    finals = _read_batch(final_terms, final_totals, {})
    results = []
    for b in range(count):
        if stopped[b] is None:
            final = finals[b][0]
            if math.isfinite(final["total"]) and (
                not best_values[b] or final["total"] < best_values[b]["total"]
            ):
                best[b].copy_(x[b])
                best_values[b], best_iteration[b] = final, done[b]
        if not best_values[b]:  # never finite: the starting picture, as run_lbfgs keeps
            best[b].copy_(x0[b])
            best_values[b] = finals[b][0]
        results.append(
            OptimizeResult(
                image=best[b : b + 1].detach().clone(),
                iterations=done[b],
                initial=initial[b] or dict(best_values[b]),
                final=best_values[b],
                best_iteration=best_iteration[b],
                seconds=time.perf_counter() - start,
                stopped=stopped[b],
                interrupted=False,
                losses=losses[b],
            )
        )
    return results


def _batch_event(
    numbers: list[tuple[dict[str, float], float | None]],
    running: list[int],
    x: Tensor,
    iteration: int,
    iterations: int,
    start: float,
    level: int,
    levels: int,
    schedule: tuple[int, ...],
) -> StepEvent:
    """The iteration of a batch as one event: the means over the ``running`` pictures."""
    values = [numbers[b][0] for b in running]
    mean = {k: sum(v[k] for v in values) / len(values) for k in values[0]}
    total = mean.pop("total")
    elapsed = time.perf_counter() - start
    return StepEvent(
        iteration, iterations, total, mean, elapsed, level, levels, x.detach(), schedule
    )


def _read_batch(
    terms: list[dict[str, Tensor]], totals: Tensor, curvatures: dict[int, Tensor | None]
) -> list[tuple[dict[str, float], float | None]]:
    """Each picture's terms, total and curvature as Python numbers, in one host read."""
    parts = []
    for b, t in enumerate(terms):
        parts.append(torch.stack([v.detach().to(totals.dtype).reshape(()) for v in t.values()]))
        parts.append(totals[b].reshape(1))
        ys = curvatures.get(b)
        parts.append((ys if ys is not None else totals.new_zeros(())).to(totals.dtype).reshape(1))
    flat = torch.cat(parts).tolist()
    out = []
    at = 0
    for b, t in enumerate(terms):
        values = dict(zip(t, flat[at : at + len(t)], strict=True))
        values["total"] = flat[at + len(t)]
        ys = flat[at + len(t) + 1] if curvatures.get(b) is not None else None
        at += len(t) + 2
        out.append((values, ys))
    return out


def batch_size(asked: int | str, config: Config, size: tuple[int, int], device: Any) -> int:
    """``--batch-size``: a number as given; ``auto`` as many pictures as the device's free
    memory holds by the memory plan's estimate (at most MAX_AUTO_BATCH), 1 on a CPU."""
    if isinstance(asked, int):
        if asked < 1:
            raise NeuralartError(f"--batch-size must be 1 or more, or auto; got {asked}")
        return asked
    if device.type != "cuda":
        return 1
    plan = plan_memory(config, size, device)
    if plan.tile is not None or plan.free is None or plan.needed <= 0:
        return 1
    return max(1, min(MAX_AUTO_BATCH, plan.free // plan.needed))


def transfer_batch(
    contents: Sequence[str | os.PathLike[str]],
    style_paths: Sequence[str | os.PathLike[str]],
    config: Config,
    *,
    network: VGG19Features,
    style_cache: dict[Any, StyleState] | None = None,
    fit_levels: bool = True,
    bit_depth: int = 8,
    callback: Callback | None = None,
) -> list[TransferResult]:
    """:func:`neuralart.transfer.transfer` for several contents of one size at once (the
    same style images, configuration and seed); one result per content, in order.
    Refuses contents whose pictures come out at different sizes, and levels that would
    run in tiles (those go one picture at a time). ``callback`` hears of every
    iteration of the batch (:func:`run_lbfgs_batch`)."""
    started = time.perf_counter()
    seed = config.seed if config.seed is not None else secrets.randbelow(2**31)
    torch.manual_seed(seed)
    device = network_device(network)
    inputs: list[Inputs] = [prepare_inputs(c, style_paths, config, None) for c in contents]
    sizes = {i.size for i in inputs}
    if len(sizes) != 1:
        raise NeuralartError(f"a batch needs pictures of one size, got {sorted(sizes)}")
    levels = plan_levels(config, inputs[0], fit=fit_levels)
    tune_device(device)
    set_precision(network, config.precision, device)
    setup = time.perf_counter() - started
    conv = network.convention
    x: Tensor | None = None
    records: list[list[LevelRecord]] = [[] for _ in inputs]
    results: list[OptimizeResult] = []
    for level in levels:
        cpucache.release()  # the blocks cached at the previous level's sizes
        plan = plan_memory(config, level.size, device)
        if plan.tile is not None:
            raise NeuralartError("a batch runs whole pictures; this level needs tiles")
        objectives = [
            build_objective(network, config, picture, level, style_cache, plan)
            for picture in inputs
        ]
        width, height = level.size
        if x is None:
            shape = torch.Size((1, 3, height, width))
            x0 = torch.cat(
                [_init_image(config, shape, network, seed, o.content_image) for o in objectives]
            )
        else:
            x0 = torch.nn.functional.interpolate(
                x, size=(height, width), mode="bilinear", align_corners=False
            )
        results = run_lbfgs_batch(
            BatchedObjective(objectives),
            x0,
            iterations=level.iterations,
            history=plan.history,
            learning_rate=config.optimizer.learning_rate,
            first_step=FIRST_STEP_GREY_LEVELS * conv.pixel_scale() / 255.0,
            callback=callback,
            level=level.index,
            levels=len(levels),
            schedule=tuple(lv.iterations for lv in levels),
        )
        x = torch.cat([r.image for r in results])
        for b, r in enumerate(results):
            records[b].append(
                LevelRecord(
                    size=level.size,
                    iterations=r.iterations,
                    history=plan.history,
                    seconds=r.seconds,
                    final_losses=r.final,
                    tile=None,
                    tiles=1,
                    halo=0,
                )
            )
        del objectives
    cpucache.release()
    seconds = time.perf_counter() - started
    out = []
    for b, (picture, result) in enumerate(zip(inputs, results, strict=True)):
        image, pixels16 = finish(result.image, picture, config, network, bit_depth)
        out.append(
            TransferResult(
                image=image,
                config=config,
                seed=seed,
                device=str(device),
                precision=config.precision,
                weights=network.source,
                iterations=sum(r.iterations for r in records[b]),
                best_iteration=result.best_iteration,
                seconds=seconds,
                setup_seconds=setup,
                initial_losses=result.initial,
                final_losses=result.final,
                levels=records[b],
                stopped=result.stopped,
                interrupted=False,
                pixels16=pixels16,
            )
        )
    return out
