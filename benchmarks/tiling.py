"""Tiled evaluation (print sizes): exactness, peak memory, cost per iteration, the halo.

    .venv/bin/python -m benchmarks.tiling exact [--size 256] [--tile 96] [--presets ...]
    .venv/bin/python -m benchmarks.tiling memory [--sizes 1024,2048,4096]
        [--preset chain-blurred] [--budget 12G] [--iterations 1] [--tiles N]
    .venv/bin/python -m benchmarks.tiling cost [--sizes 1024,2048] [--preset chain-blurred]
        [--iterations 3] [--budget auto|BYTES] [--tile N]
    .venv/bin/python -m benchmarks.tiling halo [--size 512] [--tile 128]
        [--preset chain-blurred] [--halos exact,96,64,32,16]
    .venv/bin/python -m benchmarks.tiling print [--size 8192x8192] [--preset chain-blurred]
        [--iterations 3] [--device cuda]

All on tubingen.jpg × starry_night.jpg (``benchmarks.images``: ../shared/images, or the
repository's stand-ins where that folder is absent), on the CPU, seed 0, one level.

* ``exact``: for every Table 2 preset (``--presets``), the objective at ``--size`` at a
  picture away from the content (content + 20·noise in network space, seeded): the whole
  picture's value and gradient against :class:`neuralart.tiling.TiledObjective` in
  ``--tile``-px tiles with the exact halo (targets built tile by tile too, as a tiled run
  builds them). Relative error of the total, largest gradient error over the largest
  gradient, and the seconds of each evaluation. Then, for chain-blurred and CNN-MRF (those
  of them in ``--presets``), 5 iterations from the command line with ``--tile off`` and
  with ``--tile N``, and the PSNR between the two pictures. Targets: 1e-4, 40 dB.
* ``memory``: for each size, ``neuralart transfer --tile auto`` (or ``--tile N`` with
  ``--tiles N``) in a child process with ``NEURALART_MEMORY_AVAILABLE`` set to
  ``--budget``; the child's peak resident memory (``os.wait4``) and wall time, the plan it
  ran (tiles from its JSON line; history and estimate from
  :func:`neuralart.memory.plan_memory` for the same configuration and budget) and the
  ratio of the peak to the estimate.
* ``cost``: seconds per iteration of the whole picture (``tile: off``) against the tiled
  run that ``tile: auto`` plans under ``--budget`` (default: half the whole picture's
  estimate, so that it must tile), measured in this process (median of the differences
  between iterations after the first). The halo's share is the pixels the network runs on
  over all tiles beyond the picture's own. Also the default plan for this machine's free
  memory. Target: tiled ≤ 1.5 × whole.
* ``halo``: the error a smaller ``--tile-halo`` makes against the exact halo, same tiles:
  relative error of the total, largest and relative L2 gradient errors, seconds per
  evaluation; and the PSNR of 5 iterations from the command line with ``--tile-halo H``
  against the exact halo.

* ``print``: one run at a print size (``WxH``) on ``--device`` (``benchmarks/gpu.sh`` runs
  it on a GPU): the tiles planned on the device's free memory, seconds per iteration, and
  the peak memory (allocated on a GPU, resident on the CPU).

Each prints a dated Markdown section with the exact command line, appended to
BENCHMARKS.md unless ``--no-append``. ``--threads N`` sets torch's threads here and in the
child processes (default: torch's own).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.images import picture
from benchmarks.report import BENCHMARKS, publish
from neuralart.config import Config
from neuralart.errors import NeuralartError
from neuralart.images import load_image, long_edge_size
from neuralart.losses import Objective
from neuralart.memory import ENVIRONMENT, MemoryPlan, estimate, plan_memory, tile_halo
from neuralart.presets import TABLE2_ORDER, resolve
from neuralart.tiles import check_tile, plan_cost, plan_tiles
from neuralart.tiling import TiledObjective
from neuralart.transfer import (
    NetworkCache,
    build_objective,
    plan_levels,
    prepare_inputs,
    set_precision,
    transfer,
)

ROOT = Path(__file__).resolve().parent.parent
CONTENT = picture("tubingen.jpg")
STYLE = picture("starry_night.jpg")
CPU = torch.device("cpu")
GIB = float(1 << 30)

TARGET_RELATIVE = 1e-4  # objective and gradient, tiled against whole
TARGET_PSNR = 40.0  # dB, 8-bit pictures after a few iterations
TARGET_COST = 1.5  # seconds per iteration, tiled over whole
RUN_ITERATIONS = 5  # the command-line runs compared by PSNR (default of -n)
RUN_PRESETS = ("chain-blurred", "cnn-mrf")  # exact: the presets also run end to end
NOISE = 20.0  # network-space units of noise added to the content for the evaluations


# ------------------------------------------------------------------------------- helpers


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def header(title: str, argv: list[str], what: str) -> list[str]:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"## {title} ({when})",
        "",
        f"`python -m benchmarks.tiling {shlex.join(argv)}` on {platform.machine()} CPU, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; {CONTENT.name} × "
        f"{STYLE.name}, seed 0, one level. {what}",
        "",
    ]


def configure(preset: str, size: int, iterations: int = 1, **extra: Any) -> Config:
    config, _ = resolve(
        preset,
        {
            "size": size,
            "seed": 0,
            "device": "cpu",
            "optimizer": {"iterations": iterations, "levels": 1},
            **extra,
        },
    )
    return config


def picture_size(long_edge: int) -> tuple[int, int]:
    """(width, height) of the content at this long edge, as a run makes it."""
    return long_edge_size(load_image(CONTENT).size, long_edge)


def parse_bytes(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1] if text and text[-1] in units else ""
    return int(float(text[: len(text) - len(unit)]) * units[unit])


def gib(n: float) -> str:
    return f"{n / GIB:.2f}"


@contextmanager
def budget(value: str | None) -> Iterator[None]:
    """NEURALART_MEMORY_AVAILABLE set to ``value`` (None: unset) for the duration."""
    before = os.environ.get(ENVIRONMENT)
    if value is None:
        os.environ.pop(ENVIRONMENT, None)
    else:
        os.environ[ENVIRONMENT] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENVIRONMENT, None)
        else:
            os.environ[ENVIRONMENT] = before


def child_env(args: argparse.Namespace, memory: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(ENVIRONMENT, None)
    if memory is not None:
        env[ENVIRONMENT] = memory
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    return env


def cli_command(preset: str, size: int, iterations: int, out: Path, *flags: str) -> list[str]:
    return [
        sys.executable, "-m", "neuralart", "transfer", str(CONTENT), str(STYLE),
        "-p", preset, "--size", str(size), "-n", str(iterations), "--levels", "1",
        "--seed", "0", "--device", "cpu", "-q", "--json", "-o", str(out), *flags,
    ]  # fmt: skip


def last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    raise ValueError("no JSON line in the output")


def run_cli(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run a command line; its JSON summary (or {"error": last line of stderr})."""
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": tail}
    return last_json(done.stdout)


def psnr(a: Path, b: Path) -> float:
    """PSNR in dB between two 8-bit pictures; inf if they are equal."""
    x = np.asarray(Image.open(a).convert("RGB"), dtype=np.float64)
    y = np.asarray(Image.open(b).convert("RGB"), dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"{a.name} is {x.shape}, {b.name} is {y.shape}")
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def show_psnr(value: float) -> str:
    return "identical" if math.isinf(value) else f"{value:.1f} dB"


def verdict(ok: bool, target: str) -> str:
    return f"met ({target})" if ok else f"**missed** ({target})"


def tile_shape(shape: Any) -> str:
    """A tile's interior (rows, columns) as W×H px."""
    if shape is None:
        return "whole"
    rows, cols = shape
    return f"{cols}×{rows}"


@dataclass
class Setup:
    """A configuration's network, inputs and level at one size."""

    config: Config
    network: Any
    inputs: Any
    level: Any

    @property
    def size(self) -> tuple[int, int]:
        width, height = self.level.size
        return width, height

    def objective(self, tile: int | None = None, halo: int = 0) -> Objective:
        """The objective, its targets built in ``tile``-px tiles with ``halo`` (None: whole)."""
        plan = None
        if tile is not None:
            plan = MemoryPlan(
                size=self.size, tile=(tile, tile), halo=halo, history=1, needed=0, free=None
            )
        return build_objective(self.network, self.config, self.inputs, self.level, None, plan)

    def tiles(self, tile: int, halo: int) -> list[Any]:
        width, height = self.size
        return plan_tiles(height, width, (tile, tile), halo)


def setup(cache: NetworkCache, config: Config) -> Setup:
    network = cache.get(config)
    set_precision(network, config.precision, CPU)
    inputs = prepare_inputs(CONTENT, [STYLE], config)
    level = plan_levels(config, inputs, fit=False)[-1]
    return Setup(config, network, inputs, level)


def away_from_content(objective: Objective) -> torch.Tensor:
    content = objective.content_image
    assert content is not None
    noise = torch.randn(content.shape, generator=torch.Generator().manual_seed(0))
    return content + NOISE * noise.to(content.device)


Evaluation = tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]


def timed(evaluate: Callable[[torch.Tensor], Evaluation], x: torch.Tensor) -> tuple[Any, float]:
    start = time.perf_counter()
    out = evaluate(x)
    return out, time.perf_counter() - start


def errors(got: Evaluation, reference: Evaluation) -> tuple[float, float, float]:
    """(relative error of the total, largest gradient error over the largest gradient,
    relative L2 error of the gradient)."""
    _, total, grad = got
    _, ref_total, ref_grad = reference
    rel_total = abs(float(total) - float(ref_total)) / abs(float(ref_total))
    diff = (grad - ref_grad).double()
    rel_max = float(diff.abs().max()) / float(ref_grad.abs().max())
    rel_l2 = float(diff.norm()) / float(ref_grad.double().norm())
    return rel_total, rel_max, rel_l2


def warm_up(objective: Objective, x: torch.Tensor) -> None:
    """One untimed evaluation of the whole picture, so that no timing has set-up in it."""
    objective.value_and_grad(x)


# --------------------------------------------------------------------------------- exact


def cmd_exact(args: argparse.Namespace, argv: list[str]) -> str:
    presets = args.presets.split(",")
    runs = [p for p in RUN_PRESETS if p in presets] if args.runs is None else args.runs.split(",")
    runs = [p for p in runs if p]
    lines = header(
        f"Tiled evaluation against the whole picture at {args.size} px, {args.tile}-px tiles",
        argv,
        f"Objective and gradient at content + {NOISE:g}·noise (network space, seeded), the "
        "whole picture against tiles with the exact halo (the tiled objective's targets "
        "built tile by tile as well). Target: relative error ≤ "
        f"{TARGET_RELATIVE:g} for the total and for the largest gradient error over the "
        "largest gradient.",
    )
    lines += [
        "| preset | picture | halo | tiles (passes) | total, relative error "
        "| gradient, max error / max | whole s | tiled s | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    cache = NetworkCache(CPU)
    for preset in presets:
        config = configure(preset, args.size, tile="off")
        halo, _, align = tile_halo(config)
        try:
            check_tile(args.tile, align)
        except NeuralartError as error:
            lines.append(f"| {preset} | skipped: {error} ||||||||")
            note(lines[-1])
            continue
        s = setup(cache, config)
        whole = s.objective()
        tiled = TiledObjective(s.objective(args.tile, halo), s.tiles(args.tile, halo))
        x = away_from_content(whole)
        warm_up(whole, x)
        reference, whole_s = timed(whole.value_and_grad, x)
        got, tiled_s = timed(tiled.value_and_grad, x)
        rel_total, rel_max, _ = errors(got, reference)
        ok = rel_total <= TARGET_RELATIVE and rel_max <= TARGET_RELATIVE
        width, height = s.size
        lines.append(
            f"| {preset} | {width}×{height} | {halo} | {len(tiled.tiles)} ({tiled.passes}) "
            f"| {rel_total:.1e} | {rel_max:.1e} | {whole_s:.2f} | {tiled_s:.2f} "
            f"| {verdict(ok, f'≤ {TARGET_RELATIVE:g}')} |"
        )
        note(lines[-1])
        del whole, tiled, reference, got
    if runs:
        lines += [
            "",
            f"{args.iterations} iterations from the command line (`--levels 1 --seed 0`), "
            f"`--tile off` against `--tile {args.tile}`: PSNR of the 8-bit pictures. Target: "
            f"≥ {TARGET_PSNR:g} dB.",
            "",
            "| preset | tiles | whole s | tiled s | PSNR | target |",
            "|---|---|---|---|---|---|",
        ]
        env = child_env(args)
        with tempfile.TemporaryDirectory() as tmp:
            for preset in runs:
                outs = [Path(tmp) / f"{preset}-off.png", Path(tmp) / f"{preset}-tiled.png"]
                whole_run = run_cli(
                    cli_command(preset, args.size, args.iterations, outs[0], "--tile", "off"), env
                )
                tiled_run = run_cli(
                    cli_command(
                        preset, args.size, args.iterations, outs[1], "--tile", str(args.tile)
                    ),
                    env,
                )
                failed = whole_run.get("error") or tiled_run.get("error")
                if failed:
                    lines.append(f"| {preset} | failed: {failed} |||||")
                else:
                    value = psnr(outs[0], outs[1])
                    count = tiled_run.get("tiles", {}).get("count", "whole")
                    lines.append(
                        f"| {preset} | {count} | {whole_run['seconds']:.1f} "
                        f"| {tiled_run['seconds']:.1f} | {show_psnr(value)} "
                        f"| {verdict(value >= TARGET_PSNR, f'≥ {TARGET_PSNR:g} dB')} |"
                    )
                note(lines[-1])
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------- memory


def measure_child(cmd: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float, int]:
    """(the JSON summary or {"error": ...}, wall seconds, peak RSS in bytes) of a child."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, cwd=ROOT, env=env)
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        peak = usage.ru_maxrss * 1024  # KiB on Linux
        if proc.returncode != 0:
            err.seek(0)
            lines = err.read().decode(errors="replace").strip().splitlines()
            return {"error": (lines or [f"exit status {proc.returncode}"])[-1]}, seconds, peak
    return last_json(out.decode()), seconds, peak


def cmd_memory(args: argparse.Namespace, argv: list[str]) -> str:
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    memory = str(parse_bytes(args.budget))
    forced = f"--tile {args.tiles}" if args.tiles else "--tile auto"
    lines = header(
        f"Peak memory of tiled runs, {args.preset}, budget {args.budget}",
        argv,
        f"`neuralart transfer -p {args.preset} --levels 1 -n {args.iterations} {forced}` in "
        f"a child process with {ENVIRONMENT}={args.budget}; its peak resident memory "
        "(ru_maxrss from os.wait4) against the estimate of the plan it ran "
        "(`neuralart.memory.plan_memory`, same configuration and budget).",
    )
    lines += [
        "| size | picture | tiles | tile | halo | history | whole estimate GiB "
        "| estimate GiB | peak RSS GiB | peak / estimate | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    env = child_env(args, memory)
    for size in sizes:
        tile: int | str = args.tiles if args.tiles else "auto"
        config = configure(args.preset, size, args.iterations, tile=tile)
        width, height = picture_size(size)
        whole = estimate(config, (width, height))[0]
        try:
            with budget(memory):
                plan: MemoryPlan | None = plan_memory(config, (width, height), CPU)
        except NeuralartError as error:
            plan = None
            note(f"{size}: the plan is refused here: {error}")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.png"
            cmd = cli_command(args.preset, size, args.iterations, out, "--tile", str(tile))
            note(f"{size}: {shlex.join(cmd)}")
            summary, seconds, peak = measure_child(cmd, env)
            if "error" not in summary:
                with Image.open(out) as image:
                    if image.size != (width, height):
                        note(f"{size}: the picture is {image.size}, not {(width, height)}")
                        width, height = image.size
        picture_cell = f"{width}×{height}"
        if "error" in summary:
            lines.append(
                f"| {size} | {picture_cell} | failed: {summary['error']} ||||"
                f"| {gib(whole)} || {gib(peak)} || {seconds:.0f} |"
            )
            note(lines[-1])
            continue
        tiles = summary.get("tiles")
        count = tiles["count"] if tiles else 1
        shape = tile_shape(tiles["size"]) if tiles else "whole"
        halo = tiles["halo"] if tiles else "—"
        if plan is None:
            history, needed = "?", None
        else:
            history, needed = str(plan.history), plan.needed
            if plan.count != count or (plan.tile is not None and tiles is None):
                note(f"{size}: the run has {count} tiles, the plan here {plan.count}")
        ratio = f"{peak / needed:.2f}" if needed else "—"
        lines.append(
            f"| {size} | {picture_cell} | {count} | {shape} | {halo} | {history} "
            f"| {gib(whole)} | {gib(needed) if needed else '—'} | {gib(peak)} | {ratio} "
            f"| {seconds:.0f} |"
        )
        note(lines[-1])
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- cost


def per_iteration(elapsed: dict[int, float]) -> float:
    """Median of the differences between consecutive iterations after the first."""
    steps = sorted(elapsed)
    diffs = [elapsed[b] - elapsed[a] for a, b in itertools.pairwise(steps) if a >= 1]
    if not diffs:
        raise SystemExit("too few iterations to time: give --iterations 3 or more")
    return statistics.median(diffs)


def timed_run(cache: NetworkCache, config: Config) -> tuple[float, Any]:
    """(seconds per iteration, the last level's record) of a run in this process."""
    elapsed: dict[int, float] = {}

    def record(event: Any) -> None:
        elapsed[event.iteration] = event.elapsed

    result = transfer(CONTENT, [STYLE], config, network=cache.get(config), callback=record)
    return per_iteration(elapsed), result.levels[-1]


def halo_share(width: int, height: int, tile: tuple[int, int] | None, halo: int) -> float:
    """Pixels the network runs on over all tiles beyond the picture's own, as a share."""
    if tile is None:
        return 0.0
    return plan_cost(height, width, tile, halo)[0] / (width * height) - 1


def cmd_cost(args: argparse.Namespace, argv: list[str]) -> str:
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    tile: int | str = args.tile if args.tile else "auto"
    lines = header(
        f"Cost of tiles, {args.preset}",
        argv,
        f"Seconds per iteration (median of the differences between iterations 2 to "
        f"{args.iterations}), in one process: the whole picture (`tile: off`) against "
        f"`tile: {tile}` with {ENVIRONMENT} at the budget shown (auto: half the whole "
        "picture's estimate, so that it must tile; where that fits no plan, halfway between "
        "the tiled floor and the whole estimate; with forced tiles, unset). Halo's share: "
        "the pixels the network runs on over all tiles beyond the picture's own. "
        f"Target: tiled ≤ {TARGET_COST:g} × whole.",
    )
    lines += [
        "| size | picture | budget GiB | tiles | tile | halo | halo's share | history "
        "| whole s/it | tiled s/it | tiled / whole | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cache = NetworkCache(CPU)
    defaults: list[str] = []
    for size in sizes:
        whole_config = configure(args.preset, size, args.iterations, tile="off")
        width, height = picture_size(size)
        try:
            with budget(None):
                note(f"{size}: whole picture")
                whole_s, _ = timed_run(cache, whole_config)
        except NeuralartError as error:
            lines.append(f"| {size} | {width}×{height} | — | whole refused: {error} |||||||||")
            note(lines[-1])
            continue
        lines.append(tiled_row(cache, args, size, (width, height), whole_s))
        note(lines[-1])
        defaults.append(default_row(cache, args, size, (width, height), whole_s))
    lines += [
        "",
        "The default for this machine's free memory (`tile: auto`, no budget set):",
        "",
        "| size | free GiB | whole estimate GiB | plan | tiles | s/it | tiled / whole |",
        "|---|---|---|---|---|---|---|",
        *defaults,
    ]
    return "\n".join(lines) + "\n"


def tiled_row(
    cache: NetworkCache, args: argparse.Namespace, size: int, wh: tuple[int, int], whole_s: float
) -> str:
    """The tiled run's row: under the budget (forced tiles: the machine's own memory where
    ``--budget auto``)."""
    width, height = wh
    tile: int | str = args.tile if args.tile else "auto"
    config = configure(args.preset, size, args.iterations, tile=tile)
    whole_estimate = estimate(config, wh)[0]
    memory: int | None = None
    if not args.tile or args.budget != "auto":
        memory = choose_budget(args.budget, config, wh, whole_estimate)
        if memory is None:
            return (
                f"| {size} | {width}×{height} | — | no tiled plan fits under the whole "
                f"picture's estimate ({gib(whole_estimate)} GiB) |||||||||"
            )
    shown = "unset" if memory is None else gib(memory)
    try:
        with budget(None if memory is None else str(memory)):
            note(f"{size}: tiled, budget {shown}")
            tiled_s, level = timed_run(cache, config)
    except NeuralartError as error:
        return f"| {size} | {width}×{height} | {shown} | refused: {error} |||||||||"
    share = halo_share(width, height, level.tile, level.halo)
    ratio = tiled_s / whole_s
    met = verdict(ratio <= TARGET_COST, f"≤ {TARGET_COST:g}")
    if level.tile is None:
        met = "ran whole: the picture fits the budget"
    return (
        f"| {size} | {width}×{height} | {shown} | {level.tiles} "
        f"| {tile_shape(level.tile)} | {level.halo if level.tile else '—'} "
        f"| {100 * share:.0f} % | {level.history} | {whole_s:.2f} | {tiled_s:.2f} "
        f"| {ratio:.2f} | {met} |"
    )


def choose_budget(
    given: str, config: Config, size: tuple[int, int], whole_estimate: int
) -> int | None:
    """The budget for the tiled run: ``given``, or half the whole estimate where a plan
    fits that, else halfway between the smallest tiled plan's estimate and the whole; None
    where no tiled plan fits under the whole picture's estimate."""
    if given != "auto":
        return parse_bytes(given)
    half = whole_estimate // 2
    try:
        with budget(str(half)):
            plan_memory(config, size, CPU)
        return half
    except NeuralartError:
        pass
    low, high = half, whole_estimate  # refused at low; whole fits at high
    while high - low > (1 << 20):
        middle = (low + high) // 2
        try:
            with budget(str(middle)):
                plan_memory(config, size, CPU)
            high = middle
        except NeuralartError:
            low = middle
    if high >= whole_estimate:
        return None
    return (high + whole_estimate) // 2


def default_row(
    cache: NetworkCache, args: argparse.Namespace, size: int, wh: tuple[int, int], whole_s: float
) -> str:
    config = configure(args.preset, size, args.iterations, tile="auto")
    with budget(None):
        try:
            plan = plan_memory(config, wh, CPU)
        except NeuralartError as error:
            return f"| {size} | — | — | refused: {error} ||||"
        free = "?" if plan.free is None else gib(plan.free)
        whole = gib(estimate(config, wh)[0])
        if plan.tile is None or plan.count == 1:
            return (
                f"| {size} | {free} | {whole} | whole (it fits) | 1 | {whole_s:.2f} "
                "| 1 (the whole run above) |"
            )
        note(f"{size}: tiled, this machine's memory")
        seconds, level = timed_run(cache, config)
    return (
        f"| {size} | {free} | {whole} | {tile_shape(level.tile)} tiles, halo {level.halo} "
        f"| {level.tiles} | {seconds:.2f} | {seconds / whole_s:.2f} |"
    )


# ---------------------------------------------------------------------------------- halo


def cmd_halo(args: argparse.Namespace, argv: list[str]) -> str:
    config = configure(args.preset, args.size, tile="off")
    exact, _, align = tile_halo(config)
    check_tile(args.tile, align)
    halos: list[int] = []
    skipped: list[str] = []
    for text in args.halos.split(","):
        value = exact if text == "exact" else int(text)
        if value % align:
            skipped.append(f"{value} px (not a multiple of {align})")
        elif value not in halos:
            halos.append(value)
    if exact not in halos:
        halos.insert(0, exact)
    lines = header(
        f"Smaller halos, {args.preset} at {args.size} px in {args.tile}-px tiles",
        argv,
        f"Objective and gradient at content + {NOISE:g}·noise (network space, seeded) in "
        f"the same tiles with each halo, against the exact halo ({exact} px; alignment "
        f"{align} px); the targets are built in those tiles with that halo, as "
        f"`--tile-halo` builds them. Then {args.iterations} iterations from the command line "
        f"with `--tile {args.tile} --tile-halo H` against the exact halo: PSNR of the 8-bit "
        "pictures.",
    )
    if skipped:
        lines += [f"Skipped: {', '.join(skipped)}.", ""]
    lines += [
        "| halo | tiles (passes) | pixels run / picture | total, relative error "
        "| gradient, max error / max | gradient, relative L2 | s/evaluation | PSNR |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cache = NetworkCache(CPU)
    s = setup(cache, config)
    width, height = s.size
    whole = s.objective()
    x = away_from_content(whole)
    warm_up(whole, x)
    del whole
    results: dict[int, tuple[Evaluation, float, int, int]] = {}
    for halo in halos:
        tiled = TiledObjective(s.objective(args.tile, halo), s.tiles(args.tile, halo))
        note(f"halo {halo}: evaluating")
        got, seconds = timed(tiled.value_and_grad, x)
        results[halo] = (got, seconds, len(tiled.tiles), tiled.passes)
        del tiled
    pictures: dict[int, float | str] = {}
    env = child_env(args)
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "exact.png"
        run = run_cli(
            cli_command(
                args.preset, args.size, args.iterations, reference, "--tile", str(args.tile)
            ),
            env,
        )
        for halo in halos:
            if "error" in run:
                pictures[halo] = f"failed: {run['error']}"
                continue
            if halo == exact:
                pictures[halo] = "reference"
                continue
            out = Path(tmp) / f"halo{halo}.png"
            note(f"halo {halo}: {args.iterations} iterations")
            flags = ["--tile", str(args.tile), "--tile-halo", str(halo)]
            done = run_cli(cli_command(args.preset, args.size, args.iterations, out, *flags), env)
            pictures[halo] = f"failed: {done['error']}" if "error" in done else psnr(reference, out)
    ref = results[exact][0]
    for halo in halos:
        got, seconds, count, passes = results[halo]
        rel_total, rel_max, rel_l2 = errors(got, ref)
        cost = plan_cost(height, width, (args.tile, args.tile), halo)[0] / (width * height)
        shown = pictures[halo]
        lines.append(
            f"| {halo}{' (exact)' if halo == exact else ''} | {count} ({passes}) | {cost:.2f} "
            f"| {rel_total:.1e} | {rel_max:.1e} | {rel_l2:.1e} | {seconds:.2f} "
            f"| {shown if isinstance(shown, str) else show_psnr(shown)} |"
        )
        note(lines[-1])
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------- print


def cmd_print(args: argparse.Namespace, argv: list[str]) -> str:
    """One print-size run in tiles on the chosen device: seconds per iteration, the plan,
    the peak memory."""
    import resource

    from neuralart.images import resize_to
    from neuralart.transfer import pick_device

    width, height = (int(v) for v in args.size.lower().split("x"))
    device = pick_device(args.device)
    config = configure(args.preset, max(width, height), args.iterations, device=args.device)
    plan = plan_memory(config, (width, height), device)
    lines = header(
        f"Print size, {args.preset} at {width}×{height} on {device_name(device)}",
        argv,
        f"tubingen.jpg resized to {width}×{height} × starry_night.jpg, one level, "
        f"{args.iterations} iterations, `tile: auto` on the device's free memory; seconds "
        "per iteration: median of the differences between iterations after the first.",
    )
    with tempfile.TemporaryDirectory() as tmp:
        content = Path(tmp) / "content.png"
        resize_to(load_image(CONTENT), (width, height)).save(content)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        elapsed: dict[int, float] = {}

        def record(event: Any) -> None:
            elapsed[event.iteration] = event.elapsed
            note(f"iteration {event.iteration}: {event.elapsed:.1f} s")

        started = time.perf_counter()
        result = transfer(content, [STYLE], config, device=device, callback=record)
        wall = time.perf_counter() - started
    if device.type == "cuda":
        peak = f"{gib(torch.cuda.max_memory_allocated(device))} GiB allocated on the GPU"
    else:
        peak = f"{gib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)} GiB resident"
    level = result.levels[-1]
    tiles = f"{level.tiles} of {tile_shape(level.tile)}" if level.tile else "whole"
    lines += [
        "| picture | tiles | halo | history | content targets | free GiB | s/iteration "
        "| setup s | wall s | peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {width}×{height} | {tiles} | {level.halo} | {level.history} "
        f"| {'on disk' if plan.spill else 'in memory'} "
        f"| {gib(plan.free) if plan.free is not None else '?'} "
        f"| {per_iteration(elapsed):.2f} | {result.setup_seconds:.1f} | {wall:.1f} | {peak} |",
    ]
    return "\n".join(lines) + "\n"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"


# ---------------------------------------------------------------------------------- main


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.tiling", description=__doc__.split("\n")[0]
    )
    sub = p.add_subparsers(dest="command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--threads", type=int, default=0, help="torch threads (0: its own)")
        q.add_argument("--no-append", action="store_true", help="print only")
        q.add_argument("--append", default=None, help="append to this file, not BENCHMARKS.md")

    q = sub.add_parser("exact", help="tiled objective and gradient against the whole")
    q.add_argument("--size", type=int, default=256)
    q.add_argument("--tile", type=int, default=96)
    q.add_argument("--presets", default=",".join(TABLE2_ORDER))
    q.add_argument("-n", "--iterations", type=int, default=RUN_ITERATIONS, help="of the runs")
    q.add_argument(
        "--runs",
        default=None,
        help="presets also run from the command line, compared by PSNR (default: "
        "chain-blurred and cnn-mrf, those in --presets; '' for none)",
    )
    common(q)
    q = sub.add_parser("memory", help="peak memory of tiled runs in a child process")
    q.add_argument("--sizes", default="1024,2048,4096")
    q.add_argument("--preset", default="chain-blurred")
    q.add_argument("--budget", default="12G", help=f"{ENVIRONMENT} for the child")
    q.add_argument("--iterations", type=int, default=1)
    q.add_argument("--tiles", type=int, default=0, help="force --tile N instead of auto")
    common(q)
    q = sub.add_parser("cost", help="seconds per iteration, whole against tiled")
    q.add_argument("--sizes", default="1024,2048")
    q.add_argument("--preset", default="chain-blurred")
    q.add_argument("--iterations", type=int, default=3)
    q.add_argument("--budget", default="auto", help="bytes (e.g. 3G) or auto")
    q.add_argument("--tile", type=int, default=0, help="force tiles of N px instead of auto")
    common(q)
    q = sub.add_parser("halo", help="the error of halos smaller than the exact one")
    q.add_argument("--size", type=int, default=512)
    q.add_argument("--tile", type=int, default=128)
    q.add_argument("--preset", default="chain-blurred")
    q.add_argument("--halos", default="exact,96,64,32,16")
    q.add_argument("-n", "--iterations", type=int, default=RUN_ITERATIONS, help="of the runs")
    common(q)
    q = sub.add_parser("print", help="one print-size run in tiles: s/iteration, peak memory")
    q.add_argument("--size", default="8192x8192", help="WxH")
    q.add_argument("--preset", default="chain-blurred")
    q.add_argument("--iterations", type=int, default=3)
    q.add_argument("--device", default="auto")
    common(q)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    commands = {
        "exact": cmd_exact,
        "memory": cmd_memory,
        "cost": cmd_cost,
        "halo": cmd_halo,
        "print": cmd_print,
    }
    text = commands[args.command](args, argv)
    target = Path(args.append) if args.append else BENCHMARKS
    publish(text, None if args.no_append else target)


if __name__ == "__main__":
    main()
