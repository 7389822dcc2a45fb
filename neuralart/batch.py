"""Several pictures of one size optimised together: one network pass for all of them.

A batch of contents on the same style images and configuration at one size (a folder,
``--batch-size``), or several configurations on one pair (``compare``'s presets,
:func:`compare`), makes one (B, 3, H, W) tensor. Each iteration runs the network once
over the batch, then each picture's own terms (its content targets, its style targets,
its method's statistics) on its slice of the maps, and one backward pass. The pictures'
objectives are separate sums, so the gradient of their sum is each picture's own
gradient, and each picture keeps its own L-BFGS (its curvature pairs, its best picture
so far, its own stop when its loss stops being finite). The result of each picture is
the one it gets alone, up to the rounding of convolutions run over a batch instead of
one picture.

On a GPU the launches of an iteration are then shared by B pictures; on a CPU, which is
busy with one picture's arithmetic already, a batch gains little (``--batch-size auto``
is 1 there).
"""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from neuralart import cpucache
from neuralart.config import Config
from neuralart.errors import NeuralartError
from neuralart.layers import by_depth
from neuralart.losses import Objective, StyleState
from neuralart.memory import plan_memory
from neuralart.optimize import LBFGS, Callback, OptimizeResult, StepEvent
from neuralart.transfer import (
    FIRST_STEP_GREY_LEVELS,
    Inputs,
    LevelRecord,
    NetworkCache,
    TransferResult,
    _init_image,
    build_objective,
    finish,
    network_device,
    plan_levels,
    prepare_inputs,
    set_precision,
    transfer,
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
        # Every layer any of the objectives reads (they may be different methods); each
        # objective takes the maps it needs from the one pass.
        self.layers = by_depth({name for o in self.objectives for name in o.layers})

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


def _each(value: Any, count: int) -> list[Any]:
    """One value per picture: a sequence as given, a single value repeated."""
    if isinstance(value, Sequence):
        if len(value) != count:
            raise ValueError(f"{len(value)} values for a batch of {count}")
        return list(value)
    return [value] * count


def _cut_short(result: OptimizeResult) -> OptimizeResult:
    """A picture that finished its level when Ctrl-C stopped the batch before the next."""
    if result.interrupted:
        return result
    return dataclasses.replace(
        result, interrupted=True, stopped=f"interrupted after {result.iterations} iterations"
    )


def run_lbfgs_batch(
    objective: BatchedObjective,
    x0: Tensor,
    *,
    iterations: int | Sequence[int],
    history: int | Sequence[int],
    learning_rate: float | Sequence[float],
    first_step: float,
    callback: Callback | None = None,
    level: int = 1,
    levels: int = 1,
    schedule: tuple[int, ...] = (),
) -> list[OptimizeResult]:
    """:func:`neuralart.optimize.run_lbfgs` for each picture of the batch ``x0`` at once:
    each its own L-BFGS and best picture; a picture whose loss stops being finite keeps
    its best picture and takes no more steps (it is still evaluated with the others).
    Ctrl-C ends the batch: each picture still running hands back its best so far,
    marked interrupted (those that had all their iterations are finished as usual).
    ``iterations``, ``history`` and ``learning_rate`` are one for all or one per picture
    (a picture with fewer iterations stops stepping when it has had them).

    ``callback`` hears of every iteration as one :class:`StepEvent` for the batch: its
    loss and terms are the means over the pictures still running, its image the batch,
    its count of iterations the largest."""
    count = x0.shape[0]
    counts = _each(iterations, count)
    optimizers = [
        LBFGS(h, rate, first_step, capacity=n)
        for n, h, rate in zip(counts, _each(history, count), _each(learning_rate, count),
                              strict=True)
    ]  # fmt: skip
    iterations = max(counts, default=0)
    x = x0.detach().clone()
    best = x.clone()
    start = time.perf_counter()
    initial: list[dict[str, float]] = [{} for _ in range(count)]
    best_values: list[dict[str, float]] = [{} for _ in range(count)]
    best_iteration = [0] * count
    done = [0] * count
    stopped: list[str | None] = [None] * count
    losses: list[list[float]] = [[] for _ in range(count)]
    interrupted = [False] * count
    try:
        for i in range(1, iterations + 1):
            active = [b for b in range(count) if stopped[b] is None and i <= counts[b]]
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
    except KeyboardInterrupt:  # Ctrl-C: the pictures still running keep their best so far
        for b in range(count):
            if stopped[b] is None and done[b] < counts[b]:
                stopped[b] = f"interrupted after {done[b]} iterations"
                interrupted[b] = True
    # The pictures that ran to the end are evaluated after their last step, and one never
    # evaluated finitely keeps its start (x0, as it took no step); after Ctrl-C nothing
    # more is evaluated when neither is needed.
    finals = []
    if not all(interrupted) or not all(best_values):
        finals = _read_batch(*objective.value(x), {})
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
                interrupted=interrupted[b],
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


def compare_batch_size(
    asked: int | str, content: str | os.PathLike[str], configs: Sequence[Config], device: Any
) -> int:
    """``compare --batch-size``: a number as given; ``auto`` the fewest pictures that
    :func:`batch_size` allows for any of the configurations at the content's size."""
    if isinstance(asked, int) or device.type != "cuda":
        return batch_size(asked, configs[0], (1, 1), device)
    from neuralart.images import load_image, long_edge_size

    # Read as a run reads it (orientation applied; a bad file is one line).
    shape = load_image(content, max_pixels=configs[0].max_pixels, role="content image").size
    return min(batch_size(asked, c, long_edge_size(shape, c.size), device) for c in configs)


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
    return transfer_together(
        [(content, config) for content in contents],
        style_paths,
        network=network,
        style_cache=style_cache,
        fit_levels=[fit_levels] * len(contents),
        bit_depth=bit_depth,
        callback=callback,
    )


def together_key(config: Config) -> tuple[Any, ...]:
    """What configurations optimised together must share: the network (its weights,
    pooling and normalisation) and the precision it runs in."""
    return (config.network, config.precision)


def transfer_together(
    jobs: Sequence[tuple[str | os.PathLike[str], Config]],
    style_paths: Sequence[str | os.PathLike[str]],
    *,
    network: VGG19Features,
    style_cache: dict[Any, StyleState] | None = None,
    fit_levels: Sequence[bool] | None = None,
    bit_depth: int = 8,
    callback: Callback | None = None,
) -> list[TransferResult]:
    """:func:`neuralart.transfer.transfer` for several (content, configuration) jobs at
    once, one network pass for all: contents of one size (a folder's pictures), or
    several methods on one pair (``compare``'s presets). Each keeps its own objective,
    optimiser, iterations, starting picture and seed (a configuration without a seed
    takes the one drawn for the batch); one result per job, in order.

    Refuses, in one line, jobs that do not share the network and precision
    (:func:`together_key`), the sizes of their coarse-to-fine levels, and levels that
    would run in tiles: those run one at a time. ``callback`` hears of every iteration
    of the batch (:func:`run_lbfgs_batch`)."""
    started = time.perf_counter()
    configs = [config for _, config in jobs]
    if len({together_key(c) for c in configs}) != 1:
        raise NeuralartError("a batch needs one network and precision for all its pictures")
    drawn = secrets.randbelow(2**31)
    seeds = [c.seed if c.seed is not None else drawn for c in configs]
    torch.manual_seed(seeds[0])
    device = network_device(network)
    fits = list(fit_levels) if fit_levels is not None else [True] * len(jobs)
    inputs: list[Inputs] = [
        prepare_inputs(content, style_paths, config, None) for content, config in jobs
    ]
    plans = [
        plan_levels(config, picture, fit=fit)
        for config, picture, fit in zip(configs, inputs, fits, strict=True)
    ]
    sizes = {tuple(level.size for level in levels) for levels in plans}
    if len(sizes) != 1:
        raise NeuralartError(f"a batch needs pictures of one size, got {sorted(sizes)}")
    first = configs[0]
    tune_device(device)
    set_precision(network, first.precision, device)
    setup = time.perf_counter() - started
    conv = network.convention
    x: Tensor | None = None
    records: list[list[LevelRecord]] = [[] for _ in jobs]
    results: list[OptimizeResult] = []
    for k in range(len(plans[0])):
        cpucache.release()  # the blocks cached at the previous level's sizes
        levels = [p[k] for p in plans]
        width, height = levels[0].size
        memory = [plan_memory(c, levels[0].size, device) for c in configs]
        if any(plan.tile is not None for plan in memory):
            raise NeuralartError("a batch runs whole pictures; this level needs tiles")
        objectives = [
            build_objective(network, config, picture, level, style_cache, plan)
            for config, picture, level, plan in zip(configs, inputs, levels, memory, strict=True)
        ]
        if x is None:
            shape = torch.Size((1, 3, height, width))
            x0 = torch.cat(
                [
                    _init_image(config, shape, network, seed, o.content_image)
                    for config, seed, o in zip(configs, seeds, objectives, strict=True)
                ]
            )
        else:
            x0 = torch.nn.functional.interpolate(
                x, size=(height, width), mode="bilinear", align_corners=False
            )
        longest = max(plans, key=lambda p: p[k].iterations)
        results = run_lbfgs_batch(
            BatchedObjective(objectives),
            x0,
            iterations=[level.iterations for level in levels],
            history=[plan.history for plan in memory],
            learning_rate=[c.optimizer.learning_rate for c in configs],
            first_step=FIRST_STEP_GREY_LEVELS * conv.pixel_scale() / 255.0,
            callback=callback,
            level=k + 1,
            levels=len(plans[0]),
            schedule=tuple(lv.iterations for lv in longest),
        )
        x = torch.cat([r.image for r in results])
        for b, r in enumerate(results):
            records[b].append(
                LevelRecord(
                    size=levels[b].size,
                    iterations=r.iterations,
                    history=memory[b].history,
                    seconds=r.seconds,
                    final_losses=r.final,
                    tile=None,
                    tiles=1,
                    halo=0,
                )
            )
        del objectives
        if any(r.interrupted for r in results):  # Ctrl-C: the pictures so far, no more levels
            if k + 1 < len(plans[0]):  # those that finished this level are cut short too
                results = [_cut_short(r) for r in results]
            break
    cpucache.release()
    seconds = time.perf_counter() - started
    out = []
    for b, (picture, result) in enumerate(zip(inputs, results, strict=True)):
        config = configs[b]
        image, pixels16 = finish(result.image, picture, config, network, bit_depth)
        out.append(
            TransferResult(
                image=image,
                config=config,
                seed=seeds[b],
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
                interrupted=result.interrupted,
                pixels16=pixels16,
            )
        )
    return out


@dataclass
class Comparison:
    """The runs of :func:`compare`, in order; after Ctrl-C only those that started (the
    last one with the picture it had reached, marked ``interrupted``)."""

    results: list[TransferResult]
    interrupted: bool = False


def compare(
    content_path: str | os.PathLike[str],
    style_paths: Sequence[str | os.PathLike[str]],
    configs: Sequence[Config],
    *,
    device: torch.device,
    batch_size: int = 1,
    on_start: Callable[[Sequence[int]], None] | None = None,
    callback: Callback | None = None,
) -> Comparison:
    """Run each configuration on the same inputs, sharing networks between them.

    With ``batch_size`` above 1, runs of neighbouring configurations that share the
    network and precision go together, that many at a time, one network pass for all
    (:func:`neuralart.batch.transfer_together`); a group whose levels differ in size or
    need tiles runs one at a time instead. ``on_start`` hears of each run or group as
    it starts, by the configurations' indices. Ctrl-C ends the comparison: what was
    finished is returned, not thrown away, with the runs in flight at their best
    pictures so far, marked interrupted.
    """
    cache = NetworkCache(device)
    done = Comparison([])
    groups: list[list[int]] = []
    for index, config in enumerate(configs):
        last = groups[-1] if groups else None
        if (
            last is not None
            and len(last) < batch_size
            and together_key(configs[last[0]]) == together_key(config)
        ):
            last.append(index)
        else:
            groups.append([index])
    for group in groups:
        try:
            if len(group) > 1:
                if on_start is not None:
                    on_start(group)
                try:
                    together = transfer_together(
                        [(content_path, configs[i]) for i in group],
                        style_paths,
                        network=cache.get(configs[group[0]]),
                        callback=callback,
                    )
                except NeuralartError:  # sizes or tiles differ: one at a time
                    pass
                else:
                    done.results += together
                    if any(r.interrupted for r in together):
                        done.interrupted = True
                        return done
                    continue
            for index in group:
                if on_start is not None:
                    on_start([index])
                result = transfer(
                    content_path,
                    style_paths,
                    configs[index],
                    network=cache.get(configs[index]),
                    device=device,
                    callback=callback,
                )
                done.results.append(result)
                if result.interrupted:
                    done.interrupted = True
                    return done
        except KeyboardInterrupt:  # outside an optimisation: nothing of this run to keep
            done.interrupted = True
            return done
    return done
