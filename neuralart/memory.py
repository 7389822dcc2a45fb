"""The memory plan before the first iteration: whole, in tiles, or refused in one line.

The three-way statistics of paper §4.4-§4.5 hold N²·K entries per layer (0.5 GiB for a
512-channel layer), and the network's maps of a print-size picture run to tens of GiB; a
run that does not fit would otherwise swap the machine or die in the middle.
:func:`plan_memory` estimates the bytes a level needs, from the configuration and the
picture's size alone (no network, no tensors), compares them with what the device has
free, and plans tiles (:mod:`neuralart.tiles`) where the whole picture does not fit.

The estimate, in float32 (4 bytes) entries:

* style statistics: 2·ΣE + 3·max E, E the entries of one term's statistic: every term
  keeps its target and its difference from the picture's statistic until the backward
  pass; the term being formed or differentiated holds up to three more of its size; plus
  the largest scratch a term uses (the three-way statistics' blocks); tiled, the running
  sums and their gradients add 2·ΣE;
* the network: NETWORK_FACTOR × Σ N_l·H_l·W_l over the layers it runs (the maps kept
  for the backward pass, and the gradients the backward pass holds for a while) and the
  feature-sized copies each style term keeps (each statistic's ``memory``,
  :mod:`neuralart.stats`), for the whole picture or for the largest tile with its halo;
  plus the weights;
* the content targets (one map per content layer; tiled, on disk if they do not fit,
  one tile's blocks read at a time), and the fixed gradient weights where they apply;
* L-BFGS: two vectors of the picture's size per remembered step, and a few more.

Measured against whole runs (``python -m benchmarks.memory``, BENCHMARKS.md) the
estimate is 1.1–1.2 times the peak resident memory of classic and chain-blurred at 512,
1024 and 2048 px; tiled runs: ``python -m benchmarks.tiling memory``.
``NEURALART_MEMORY_AVAILABLE`` (bytes, or a number with K, M, G or T) replaces the free
memory measured on the device: to test the check, or to keep a run within a budget.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass

import torch

from neuralart.config import Config
from neuralart.errors import NeuralartError, NeuralartWarning
from neuralart.layers import LAYER_NAMES, LAYERS
from neuralart.losses import content_terms, network_layers
from neuralart.stats import Memory, statistic_for, style_terms
from neuralart.tiles import (
    Tile,
    cheapest_plan,
    check_tile,
    halo_for,
    largest_extent,
    plan_cost,
    plan_tiles,
)

FLOAT = 4  # bytes
WEIGHT_BYTES = 2 * 20_024_384 * FLOAT  # the 16 convolutions' parameters, loaded and in use
OVERHEAD = 768 << 20  # the Python process with torch loaded, its buffers, the images
NETWORK_FACTOR = 2.0  # feature maps' worth the network holds at its peak (BENCHMARKS.md)
# A tiled run's peak came out at 1.07 times the estimate at 2048x1536 (three tiles, the
# whole content maps in memory, a tile counted once), 0.92 at 4096x3072 and 1.14 at
# 768x576 in ten tiles (counted 1.15 times): beside the maps, the convolution library
# keeps caches and scratch for each tile shape (up to four per plan). A tile's network is
# counted this much larger (BENCHMARKS.md).
TILE_MARGIN = 1.35
ENVIRONMENT = "NEURALART_MEMORY_AVAILABLE"
# Tiling: the shortest L-BFGS history an automatic plan goes down to, and the most pixels
# (halos included, as a multiple of the picture's) its tiles may run the network on
# before a shorter history is tried for larger tiles. Measured (BENCHMARKS.md, "L-BFGS
# history at 256 px"): after 200 iterations chain-blurred's objective is 4 %, 6 % and
# 11 % above that of 25 steps with 10, 5 and 3 steps; tiles whose halos double the
# pixels double the time of an iteration.
MIN_TILED_HISTORY = 3
TILE_WASTE = 1.5
SPILL_MARGIN = 1.25  # disk kept free beyond the content targets a spilled run writes
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _statistic_uses(config: Config, size: tuple[int, int]) -> dict[str, Memory]:
    width, height = size
    statistic = statistic_for(config.style)
    return {
        t.label: statistic.memory(config.style, t, height, width) for t in style_terms(config.style)
    }


def _statistics_bytes(config: Config, size: tuple[int, int]) -> tuple[int, str]:
    """(bytes of the style statistics and their scratch, the largest term) at (width,
    height): a moment statistic's entries do not depend on it, a patch bank's do."""
    uses = _statistic_uses(config, size)
    largest = max(uses, key=lambda label: uses[label].statistic, default="")
    entries = [use.statistic for use in uses.values()]
    scratch = max((use.scratch for use in uses.values()), default=0)
    return FLOAT * (2 * sum(entries) + 3 * max(entries, default=0) + scratch), largest


def _network_bytes(config: Config, size: tuple[int, int]) -> int:
    """What running the network on a picture (or a tile) of (width, height) holds at its
    peak: the maps kept for the backward pass, the gradients the backward pass holds for a
    while (NETWORK_FACTOR maps in all, measured) and the feature-sized copies the style
    terms keep."""
    width, height = size
    read = network_layers(config.content, config.style, with_content=True)
    deepest = LAYERS[read[-1]].index if read else -1
    maps = NETWORK_FACTOR * sum(
        LAYERS[n].entries(height, width) for n in LAYER_NAMES[: deepest + 1]
    )
    maps += sum(use.copies for use in _statistic_uses(config, size).values())
    return int(FLOAT * maps)


def content_bytes(config: Config, size: tuple[int, int]) -> int:
    """The content targets at (width, height): one map per content layer."""
    width, height = size
    return FLOAT * sum(LAYERS[n].entries(height, width) for n, _ in content_terms(config.content))


def _whole_maps_bytes(config: Config, size: tuple[int, int], spill: bool = False) -> int:
    """The maps kept at the whole picture's size: the content targets (unless ``spill``
    keeps them on disk), and the fixed gradient weights (one per style map) where the
    style gradient is reweighted."""
    width, height = size
    maps = 0 if spill else content_bytes(config, size) // FLOAT
    if config.style.gradient_weighting != "none":
        styled = {name for t in style_terms(config.style) for name in t.layers}
        maps += sum(LAYERS[n].entries(height, width) for n in styled)
    return FLOAT * maps


def _lbfgs_bytes(values: int, history: int, extra: int = 0) -> int:
    """The stored pairs, and the current and last picture and gradient (and ``extra``
    more picture-sized vectors)."""
    return (2 * (history + 3) + extra) * values * FLOAT


def history_for(config: Config, size: tuple[int, int]) -> int:
    """The L-BFGS steps remembered at a level of (width, height): the configured number,
    never more than the level's iterations."""
    values = 3 * size[0] * size[1]
    counts = config.optimizer.level_iterations(max(size))
    return min(config.optimizer.history_for(values), max(1, counts[-1]))


def estimate(config: Config, size: tuple[int, int]) -> tuple[int, int, str]:
    """(bytes in all, bytes of the style statistics, the largest term) at (width, height),
    the whole picture at once."""
    statistics, largest = _statistics_bytes(config, size)
    values = 3 * size[0] * size[1]
    total = (
        statistics
        + _network_bytes(config, size)
        + _whole_maps_bytes(config, size)
        + _lbfgs_bytes(values, history_for(config, size))
        + WEIGHT_BYTES
        + OVERHEAD
    )
    return total, statistics, largest


def tiled_estimate(
    config: Config,
    size: tuple[int, int],
    extended: tuple[int, int],
    history: int,
    spill: bool = False,
    interior: tuple[int, int] = (0, 0),
) -> int:
    """Bytes a tiled run at (width, height) needs with tiles whose largest extended region
    is ``extended`` (width, height) and ``history`` L-BFGS steps: the whole picture's
    targets and vectors (two more: the gradient being assembled and the tile's pixels),
    the running sums of the statistics and their gradients, and one tile's network. With
    ``spill`` the content targets wait on disk and one tile's blocks, of its ``interior``
    (width, height), are read at a time."""
    statistics, _ = _statistics_bytes(config, size)
    values = 3 * size[0] * size[1]
    return (
        2 * statistics
        + int(TILE_MARGIN * _network_bytes(config, extended))
        + (content_bytes(config, interior) if spill else 0)
        + _whole_maps_bytes(config, size, spill)
        + _lbfgs_bytes(values, history, extra=2)
        + WEIGHT_BYTES
        + OVERHEAD
    )


@dataclass(frozen=True)
class MemoryPlan:
    """How a level runs: whole or in tiles, and the L-BFGS steps it remembers."""

    size: tuple[int, int]  # (width, height) of the level
    tile: tuple[int, int] | None  # the tiles' interior (rows, columns); None: whole
    halo: int  # px around each tile
    history: int
    needed: int  # bytes, estimated
    free: int | None  # bytes the device has (None: unknown)
    spill: bool = False  # the content targets wait in a temporary file, tile by tile

    def tiles(self, height: int, width: int) -> list[Tile] | None:
        """The tiles of an image of this level (the content, or a style image)."""
        if self.tile is None:
            return None
        if height <= self.tile[0] and width <= self.tile[1] and not self.spill:
            return None  # one tile is the whole picture (with its content targets on disk)
        return plan_tiles(height, width, self.tile, self.halo)

    @property
    def overhead(self) -> float:
        """Pixels the network runs on per iteration, as a multiple of the picture's (1
        whole; tiles add their halos)."""
        if self.tile is None:
            return 1.0
        width, height = self.size
        return plan_cost(height, width, self.tile, self.halo)[0] / (width * height)

    @property
    def count(self) -> int:
        width, height = self.size
        return len(self.tiles(height, width) or [None])


def tile_halo(config: Config) -> tuple[int, int, int]:
    """(halo in px, the exact halo, the alignment) for a configuration's tiles; a halo
    the user gave must lie on the alignment (one-line error)."""
    layers = network_layers(config.content, config.style, with_content=True)
    statistic = statistic_for(config.style)
    margin = 0
    if statistic.local and config.style.weight > 0:
        margin = max(
            statistic.margin(config.style) * 2 ** LAYERS[t.layers[0]].pools_before  # type: ignore[attr-defined]
            for t in style_terms(config.style)
        )
    exact, align = halo_for(layers, margin) if layers else (0, 1)
    if config.tile_halo == "exact":
        return exact, exact, align
    if config.tile_halo % align:
        raise NeuralartError(
            f"--tile-halo {config.tile_halo}: the halo must be a multiple of {align} px for "
            f"this configuration (the exact halo is {exact} px)"
        )
    return config.tile_halo, exact, align


def _history_choices(config: Config, size: tuple[int, int]) -> list[int]:
    """The histories to try at a level, longest first: the configured one, and where it is
    automatic, halved down to MIN_TILED_HISTORY."""
    first = history_for(config, size)
    if config.optimizer.history != "auto":
        return [first]
    out = [first]
    while out[-1] > MIN_TILED_HISTORY:
        out.append(max(MIN_TILED_HISTORY, out[-1] // 2))
    return out


def _shortest_history(config: Config, size: tuple[int, int]) -> int:
    return _history_choices(config, size)[-1]


def _parse_bytes(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if match is None:
        raise NeuralartError(
            f"{ENVIRONMENT} must be a number of bytes, e.g. 8G or 500M; got {text!r}"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available(device: torch.device) -> int | None:
    """Free bytes on the device (the environment variable first); None if unknown."""
    override = os.environ.get(ENVIRONMENT)
    if override:
        return _parse_bytes(override)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    found = _meminfo_available()
    if found is None:  # no /proc (macOS, Windows): free physical pages, if the OS says
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            found = None
    return found


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def _why(config: Config, size: tuple[int, int], total: int, free: int, device: torch.device) -> str:
    statistics, largest = _statistics_bytes(config, size)
    worst = f", {largest} the largest" if largest else ""
    return (
        f"about {_gib(total)} of memory at {size[0]}x{size[1]} px (style statistics "
        f"{config.style.statistic}: {_gib(statistics)}{worst}) but {device} has {_gib(free)} free"
    )


def plan_memory(config: Config, size: tuple[int, int], device: torch.device) -> MemoryPlan:
    """How a level of (width, height) runs within the memory the device has free.

    ``tile: off`` runs the whole picture or refuses; ``tile: N`` runs N-px tiles (or the
    whole picture where it is no larger); ``auto`` runs the whole picture where it fits,
    else the tiles that cost least among those that fit, with the longest L-BFGS history
    (halved down to MIN_TILED_HISTORY) whose tiles waste at most TILE_WASTE, or else the
    cheapest tiles of all. A run that cannot fit even so is refused in one line.
    """
    width, height = size
    free = available(device)
    halo, _, align = tile_halo(config)
    history = history_for(config, size)
    whole = estimate(config, size)[0]
    if isinstance(config.tile, int):
        check_tile(config.tile, align)
        statistic = statistic_for(config.style)
        if config.style.weight > 0 and not (statistic.sum_over_positions or statistic.local):
            raise NeuralartError(
                f"--tile {config.tile}: statistic {config.style.statistic} cannot be evaluated "
                "tile by tile; use --tile auto or off"
            )
        shape = (min(config.tile, height), min(config.tile, width))
        if shape == (height, width):
            return MemoryPlan(size, None, halo, history, whole, free)
        rows, cols = largest_extent(height, width, shape, halo)
        needed = tiled_estimate(config, size, (cols, rows), history)
        spill = False
        if free is not None and needed > free:  # the content targets on disk, if that fits
            spill = True
            needed = tiled_estimate(config, size, (cols, rows), history, True, shape[::-1])
        if free is not None and needed > free:
            raise NeuralartError(
                f"--tile {config.tile} needs {_why(config, size, needed, free, device)}; "
                "use smaller tiles or --tile auto"
            )
        return MemoryPlan(size, shape, halo, history, needed, free, spill)
    if free is None:
        warnings.warn(
            f"could not tell how much memory {device} has free; the memory check is skipped "
            f"and the picture runs whole (set {ENVIRONMENT} to check against a figure of "
            "your own)",
            NeuralartWarning,
            stacklevel=2,
        )
        return MemoryPlan(size, None, halo, history, whole, free)
    if whole <= free:
        return MemoryPlan(size, None, halo, history, whole, free)
    statistic = statistic_for(config.style)
    if config.style.weight > 0 and not (statistic.sum_over_positions or statistic.local):
        raise NeuralartError(
            f"this run needs {_why(config, size, whole, free, device)}, and statistic "
            f"{config.style.statistic} cannot be evaluated tile by tile; use a smaller --size "
            "or fewer or shallower style layers"
        )
    if config.tile == "off":
        raise NeuralartError(
            f"this run needs {_why(config, size, whole, free, device)}; use --tile auto, "
            "fewer or shallower style layers or a smaller --size"
        )
    fallback: MemoryPlan | None = None
    per_pixel = TILE_MARGIN * _network_bytes(config, (64, 64)) / (64 * 64)
    spill_pixel = content_bytes(config, (64, 64)) / (64 * 64)
    disk = _disk_free()
    for steps in _history_choices(config, size):
        for spill in (False, True):
            if spill and (disk is None or disk < SPILL_MARGIN * content_bytes(config, size)):
                continue  # no room on disk for the content targets
            base = tiled_estimate(config, size, (0, 0), steps, spill)
            inner = spill_pixel if spill else 0.0

            def fits(extended: int, interior: int, base: int = base, inner: float = inner) -> bool:
                return base + per_pixel * extended + inner * interior <= free

            found = cheapest_plan(height, width, halo, align, fits)
            if found is None:
                continue
            cost, _ = plan_cost(height, width, found, halo)
            rows, cols = largest_extent(height, width, found, halo)
            needed = tiled_estimate(config, size, (cols, rows), steps, spill, found[::-1])
            plan = MemoryPlan(size, found, halo, steps, needed, free, spill)
            if cost <= TILE_WASTE * width * height:
                return plan
            if fallback is None or plan.overhead < fallback.overhead:
                fallback = plan  # the cheapest iteration, if none wastes little enough
    if fallback is not None:
        return fallback
    side = (min(width, align + 2 * halo), min(height, align + 2 * halo))
    steps = _shortest_history(config, size)
    smallest = tiled_estimate(config, size, side, steps, True, (align, align))
    if smallest >= whole:  # tiles cannot help a picture this small
        raise NeuralartError(
            f"this run needs {_why(config, size, whole, free, device)}; use fewer or "
            "shallower style layers or a smaller --size"
        )
    halo_hint = " or a smaller --tile-halo (no longer exact)" if halo > 2 * align else ""
    raise NeuralartError(
        f"this run needs {_why(config, size, smallest, free, device)} even in the smallest "
        f"tiles ({align} px, {halo}-px halos) with {steps} L-BFGS steps and the content "
        f"targets on disk; use a smaller --size{halo_hint}, or fewer or shallower style layers"
    )


def _disk_free() -> int | None:
    """Free bytes where temporary files go (the content targets of a spilled run)."""
    import shutil
    import tempfile

    try:
        return shutil.disk_usage(tempfile.gettempdir()).free
    except OSError:
        return None


def check_memory(config: Config, size: tuple[int, int], device: torch.device) -> None:
    """Raise a one-line NeuralartError if a run at (width, height) cannot fit, whole or in
    tiles (see :func:`plan_memory`)."""
    plan_memory(config, size, device)
