"""Wire configuration, images, network, objective and optimiser into one call.

A run is a sequence of named stages: :func:`prepare_inputs` (read the pictures),
:func:`plan_levels` (the coarse-to-fine levels), then for each level
:func:`build_objective` and :func:`run_level`, and :func:`finish` (the picture out).
:func:`transfer` runs them and returns a :class:`TransferResult`.
"""

from __future__ import annotations

import math
import os
import secrets
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from neuralart import cpucache
from neuralart.color import luminance, match_colors, match_luminance, with_chrominance
from neuralart.config import Config
from neuralart.errors import NeuralartError, NeuralartWarning
from neuralart.graphs import captured
from neuralart.images import (
    image_to_tensor,
    load_image,
    long_edge_size,
    resize_long_edge,
    resize_to,
    round_half_up,
    tensor_to_image,
    to_sixteen_bit,
)
from neuralart.layers import MIN_EDGE
from neuralart.losses import Objective, StyleState, Temporal
from neuralart.memory import MemoryPlan, plan_memory
from neuralart.optimize import Callback, Evaluator, OptimizeResult, StepEvent, run_lbfgs
from neuralart.stats import statistic_for
from neuralart.tiling import TileCallback, TiledObjective
from neuralart.vgg import VGG19Features, load_vgg19

# The first L-BFGS step (a gradient step) moves no pixel by more than this many grey
# levels. Measured on chain/chain-blurred/classic at 160 px: 1 was often slow to get
# going, 4-16 all reached the same loss in 40 iterations.
FIRST_STEP_GREY_LEVELS = 8.0

# Tiles whose halos make the network run on more than this many times the picture's pixels
# are worth a warning.
SLOW_TILES = 3.0


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise NeuralartError(f"device {name!r} was asked for but CUDA is not available here")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise NeuralartError(
                f"device {name!r} does not exist ({torch.cuda.device_count()} CUDA devices)"
            )
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise NeuralartError("device 'mps' was asked for but MPS is not available here")
    return torch.device(name)


def tune_device(device: torch.device) -> None:
    """CUDA: let cuDNN pick the fastest convolution algorithms for each picture size, and
    run the network's float32 convolutions on TF32 tensor cores where the GPU has them
    (Ampere and later; a 10-bit mantissa in the products, float32 accumulation). The
    statistics' matrix products stay in full float32. CPU: the block cache
    (:mod:`neuralart.cpucache`) serves the feature maps, where it is built."""
    if device.type == "cpu":
        cpucache.enable()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = False


def set_precision(network: VGG19Features, precision: str, device: torch.device) -> None:
    """fp32, or bf16: the network's convolutions under bf16 autocast, statistics in fp32."""
    if precision == "bf16" and device.type not in ("cuda", "cpu"):
        raise NeuralartError(f"--precision bf16 runs on CUDA or the CPU, not on {device.type}")
    network.compute_dtype = torch.bfloat16 if precision == "bf16" else None


def load_network(config: Config, device: torch.device) -> VGG19Features:
    net = config.network
    return load_vgg19(net.weights, pooling=net.pooling, normalize=net.normalize, device=device)


def _init_image(
    config: Config,
    shape: torch.Size,
    network: VGG19Features,
    seed: int,
    content: torch.Tensor | None,
) -> torch.Tensor:
    """The starting point in network space, of the given (1, 3, H, W) shape."""
    init = config.optimizer.init
    conv = network.convention
    device = network_device(network)
    if init == "content" and content is not None:
        return content.clone()
    if init in ("noise", "content"):  # no content image (texture): start from noise
        generator = torch.Generator(device="cpu").manual_seed(seed)
        rgb = torch.rand(shape, generator=generator)  # (1, 3, H, W) uniform pixels
        return conv.to_network(rgb.to(device))
    image = _load(Path(init), "init image", config.max_pixels)
    return conv.to_network(image_to_tensor(resize_to(image, (shape[-1], shape[-2]))).to(device))


def _load(path: str | os.PathLike[str], role: str, max_pixels: int) -> Image.Image:
    """Load an input image; refuse one far smaller than the network can see."""
    image = load_image(path, max_pixels=max_pixels, role=role)
    if min(image.size) < MIN_EDGE:
        raise NeuralartError(
            f"{role} {path} is only {image.width}x{image.height} px; the network needs at "
            f"least {MIN_EDGE} px on each side of the original picture"
        )
    return image


def network_device(network: VGG19Features) -> torch.device:
    return next(network.parameters()).device


def _preserve_colour(
    mode: str, content: Image.Image, styles: list[Image.Image]
) -> tuple[Image.Image, list[Image.Image]]:
    """luminance: optimise grey pictures (the style's luma matched to the content's);
    histogram: give each style image the content's colour mean and covariance."""
    c = image_to_tensor(content)
    if mode == "histogram":
        matched = [match_colors(image_to_tensor(s), c).clamp(0, 1) for s in styles]
        return content, [tensor_to_image(t) for t in matched]
    c_grey = luminance(c)
    greys = [match_luminance(luminance(image_to_tensor(s)), c_grey).clamp(0, 1) for s in styles]
    return tensor_to_image(c_grey), [tensor_to_image(t) for t in greys]


# --------------------------------------------------------------------------- the stages


@dataclass
class Inputs:
    """What the run works from, read once: stage 1."""

    size: tuple[int, int]  # (width, height) of the output
    content: Image.Image | None  # at the output size (grey under luminance preservation)
    content_colour: Image.Image | None  # the photograph's own colours, at the output size
    styles: list[tuple[Image.Image, float]]  # style images or copies, with relative scale
    blend: list[float] | None  # one weight per entry of styles; None: all alike
    style_key: tuple[Any, ...]  # what the style targets depend on, besides size and device


@dataclass(frozen=True)
class Level:
    """One coarse-to-fine level: stage 2 plans them."""

    index: int  # 1 for the coarsest
    size: tuple[int, int]  # (width, height)
    iterations: int


@dataclass(frozen=True)
class LevelRecord:
    size: tuple[int, int]
    iterations: int
    history: int  # L-BFGS steps remembered at this level
    seconds: float
    final_losses: dict[str, float]
    tile: tuple[int, int] | None = None  # the tiles' interior (rows, columns); None: whole
    tiles: int = 1  # how many tiles the picture ran in
    halo: int = 0  # px around each tile


@dataclass
class TransferResult:
    """A finished (or interrupted) run: the picture and what happened."""

    image: Image.Image
    config: Config
    seed: int
    device: str
    precision: str
    weights: str  # where the network's weights came from
    iterations: int  # over all levels
    best_iteration: int  # at the last level run: iterations before the picture kept
    seconds: float
    setup_seconds: float
    initial_losses: dict[str, float]
    final_losses: dict[str, float]
    levels: list[LevelRecord]
    stopped: str | None = None  # why it stopped early, if it did
    interrupted: bool = False  # stopped by Ctrl-C
    pixels16: np.ndarray | None = None  # (H, W, 3) uint16, when 16 bits were asked for

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    def record(self, *, timings: bool = True) -> dict[str, Any]:
        """What happened, as plain JSON values (timings left out for a file's metadata, so
        that a seeded run writes a byte-identical file)."""
        out: dict[str, Any] = {
            "device": self.device,
            "precision": self.precision,
            "weights": self.weights,
            "size": list(self.size),
            "iterations": self.iterations,
            "best_iteration": self.best_iteration,
            "initial_losses": self.initial_losses,
            "final_losses": self.final_losses,
        }
        if timings:
            out["seconds"] = round(self.seconds, 3)
            out["setup_seconds"] = round(self.setup_seconds, 3)
        last = self.levels[-1] if self.levels else None
        if last is not None and last.tile is not None:
            out["tiles"] = {"count": last.tiles, "size": list(last.tile), "halo": last.halo}
        if len(self.levels) > 1:
            out["levels"] = [
                {
                    "size": list(level.size),
                    "iterations": level.iterations,
                    "history": level.history,
                    **({"tiles": level.tiles} if level.tile is not None else {}),
                    **({"seconds": round(level.seconds, 3)} if timings else {}),
                    "final_losses": level.final_losses,
                }
                for level in self.levels
            ]
        if self.stopped:
            out["stopped"] = self.stopped
        if self.interrupted:
            out["interrupted"] = True
        return out


def prepare_inputs(
    content_path: str | os.PathLike[str] | None,
    style_paths: Sequence[str | os.PathLike[str]],
    config: Config,
    output_size: tuple[int, int] | None = None,
) -> Inputs:
    """Stage 1: read the pictures, apply colour preservation and the statistic's style
    copies. Without a content image the output has ``output_size`` (a texture)."""
    content = None
    if content_path is not None:
        content = resize_long_edge(
            _load(content_path, "content image", config.max_pixels), config.size
        )
        size = content.size
    elif output_size is not None:
        size = output_size
    else:
        raise ValueError("transfer needs a content image or an output size")
    blend = list(config.style.blend) if config.style.blend is not None else None
    if blend is not None and len(blend) != len(style_paths):
        raise NeuralartError(
            f"--style-blend has {len(blend)} weights but there are {len(style_paths)} style images"
        )
    styles = [_load(p, "style image", config.max_pixels) for p in style_paths]
    content_colour = content
    if config.preserve_color != "none":
        if content is None:
            raise NeuralartError("--preserve-color needs a content image (not for textures)")
        content, styles = _preserve_colour(config.preserve_color, content, styles)
    statistic = statistic_for(config.style)
    copies = [statistic.style_copies(image, config.style) for image in styles]
    if blend is not None:  # each copy of a style image carries that image's weight
        blend = [w for w, group in zip(blend, copies, strict=True) for _ in group]
    # Colour preservation adapts the style images to each content: then the content too.
    adapted = None
    if config.preserve_color != "none" and content_path is not None:
        adapted = str(Path(content_path).resolve())
    style_key = (
        tuple(str(Path(p).resolve()) for p in style_paths),
        config.style,
        config.network,
        config.preserve_color,
        adapted,
    )
    return Inputs(
        size=size,
        content=content,
        content_colour=content_colour,
        styles=[copy for group in copies for copy in group],
        blend=blend,
        style_key=style_key,
    )


def style_edge(level_long_edge: int, image_scale: float, relative: float = 1.0) -> int:
    """The long edge of a style image (or a copy at ``relative`` scale) at a level."""
    return max(1, math.floor(level_long_edge * image_scale * relative + 0.5))


def level_sizes(size: tuple[int, int], levels: int) -> list[tuple[int, int]]:
    """(width, height) of each coarse-to-fine level: size / 2^(levels-1-i), halves up."""
    out = []
    for i in range(levels):
        divisor = 2 ** (levels - 1 - i)
        out.append(
            (max(1, round_half_up(size[0], divisor)), max(1, round_half_up(size[1], divisor)))
        )
    return out


def _shortest_side(inputs: Inputs, config: Config, size: tuple[int, int]) -> int:
    """The shortest side of any picture the network sees at a level of this size."""
    sides = [min(size)]
    for image, relative in inputs.styles:
        edge = style_edge(max(size), config.style.image_scale, relative)
        sides.append(min(long_edge_size(image.size, edge)))
    return min(sides)


def plan_levels(config: Config, inputs: Inputs, *, fit: bool = True) -> list[Level]:
    """Stage 2: the coarse-to-fine levels, coarse first.

    Every picture the network sees must keep the statistic's smallest edge at the first
    level. With ``fit`` (the number of levels came from the preset, not from the user)
    coarse levels that would be too small are dropped, with a warning; a run that cannot
    fit even at one level, or whose levels the user chose, is refused in one line.
    """
    counts = config.optimizer.level_iterations(max(inputs.size))
    sizes = level_sizes(inputs.size, len(counts))
    minimum = statistic_for(config.style).min_edge(config.style)
    first = 0
    while fit and first < len(sizes) - 1 and _shortest_side(inputs, config, sizes[first]) < minimum:
        first += 1
    shortest = _shortest_side(inputs, config, sizes[first])
    if shortest < minimum:
        need = math.ceil(max(inputs.size) * minimum / shortest)
        width, height = sizes[first]
        several = len(sizes) - first > 1
        what = (
            f"with {len(sizes)} levels the first runs at {width}x{height} px, and "
            if several
            else ""
        )
        raise NeuralartError(
            f"{what}an image's short side would be {shortest} px there, but this method needs "
            f"at least {minimum}; use --size {need} or more"
            + (" or fewer --levels" if several else "")
        )
    if first:
        kept = len(sizes) - first
        warnings.warn(
            f"{config.name}: {len(sizes)} coarse-to-fine levels do not fit a "
            f"{inputs.size[0]}x{inputs.size[1]} picture; running {kept} "
            f"(the {first} coarsest dropped)",
            NeuralartWarning,
            stacklevel=2,
        )
    return [
        Level(index, size, count)
        for index, (size, count) in enumerate(zip(sizes[first:], counts[first:], strict=True), 1)
    ]


def build_objective(
    network: VGG19Features,
    config: Config,
    inputs: Inputs,
    level: Level,
    style_cache: dict[Any, StyleState] | None = None,
    plan: MemoryPlan | None = None,
    *,
    temporal: Temporal | None = None,
) -> Objective:
    """Stage 3: the objective at one level, its targets computed at that level's size (or
    taken from ``style_cache``, which a batch keeps across contents), tile by tile where
    the level's memory ``plan`` has tiles. ``temporal`` (a video frame's temporal term, on
    the output's grid) is resized to the level."""
    conv = network.convention
    device = network_device(network)
    width, height = level.size
    content = None
    if inputs.content is not None:
        content = conv.to_network(image_to_tensor(resize_to(inputs.content, level.size)).to(device))
    key = (inputs.style_key, max(level.size), str(device))  # the style's size: the long edge
    cached = style_cache.get(key) if style_cache is not None else None
    styles = []
    if cached is None:
        for image, relative in inputs.styles:
            edge = style_edge(max(width, height), config.style.image_scale, relative)
            picture = resize_to(image, long_edge_size(image.size, edge))
            styles.append(conv.to_network(image_to_tensor(picture).to(device)))
    objective = Objective(
        network,
        config.content,
        config.style,
        content_image=content,
        style_images=styles,
        blend=inputs.blend,
        tv_weight=config.tv_weight,
        pixel_scale=conv.pixel_scale(),
        style_state=cached,
        tiles=plan.tiles if plan is not None and plan.tile is not None else None,
        spill=plan is not None and plan.spill,
        temporal=_at_level(temporal, level.size),
    )
    if style_cache is not None and cached is None:
        style_cache[key] = objective.style_state
    return objective


def _at_level(temporal: Temporal | None, size: tuple[int, int]) -> Temporal | None:
    """The temporal term's target and weights at a level of (width, height)."""
    if temporal is None or temporal.target.shape[-2:] == (size[1], size[0]):
        return temporal
    target = _resized(temporal.target, size)
    return Temporal(target, _resized(temporal.weights, size), temporal.weight)


def _resized(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A (1, C, H, W) tensor at (width, height): area averages when shrinking."""
    height, width = size[1], size[0]
    if x.shape[-2:] == (height, width):
        return x
    if height <= x.shape[-2] and width <= x.shape[-1]:
        return F.interpolate(x, size=(height, width), mode="area")
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)


def run_level(
    objective: Objective,
    x0: torch.Tensor,
    config: Config,
    level: Level,
    levels: Sequence[Level],
    callback: Callback | None,
    pixel_scale: float,
    plan: MemoryPlan | None = None,
    on_tile: TileCallback | None = None,
) -> OptimizeResult:
    """Stage 4: L-BFGS at one level from ``x0``, tile by tile where the level's memory
    ``plan`` has tiles (``on_tile`` hears of each)."""
    width, height = level.size
    tiles = plan.tiles(height, width) if plan is not None else None
    evaluator: Evaluator = objective if tiles is None else TiledObjective(objective, tiles, on_tile)
    # On CUDA the evaluation is recorded once as a graph and replayed (neuralart.graphs).
    evaluator = captured(evaluator, x0, config.precision, tiled=tiles is not None)
    history = plan.history if plan is not None else config.optimizer.history_for(3 * width * height)
    return run_lbfgs(
        evaluator,
        x0,
        iterations=level.iterations,
        history=history,
        learning_rate=config.optimizer.learning_rate,
        first_step=FIRST_STEP_GREY_LEVELS * pixel_scale / 255.0,
        callback=callback,
        level=level.index,
        levels=len(levels),
        schedule=tuple(lv.iterations for lv in levels),
    )


def finish(
    x: torch.Tensor, inputs: Inputs, config: Config, network: VGG19Features, bit_depth: int = 8
) -> tuple[Image.Image, np.ndarray | None]:
    """Stage 5: the picture at the output size, in RGB, with the photograph's colours
    put back under luminance preservation; with ``bit_depth`` 16 also its 16-bit pixels,
    quantised from the same floating-point picture."""
    width, height = inputs.size
    if x.shape[-2:] != (height, width):  # stopped before the last level
        x = F.interpolate(x, size=(height, width), mode="bilinear")
    rgb = network.convention.from_network(x)
    if config.preserve_color == "luminance" and inputs.content_colour is not None:
        rgb = with_chrominance(rgb, image_to_tensor(inputs.content_colour).to(rgb.device))
    return tensor_to_image(rgb), (to_sixteen_bit(rgb) if bit_depth == 16 else None)


def _with_frames(
    callback: Callback | None,
    every: int,
    sink: Callable[[StepEvent, Image.Image], None] | None,
    network: VGG19Features,
) -> Callback | None:
    """The callback, also handing every ``every``-th picture to ``sink``."""
    if every <= 0 or sink is None:
        return callback
    conv = network.convention

    def step(event: StepEvent) -> None:
        if event.iteration % every == 0 and event.image is not None:
            sink(event, tensor_to_image(conv.from_network(event.image)))
        if callback is not None:
            callback(event)

    return step


def transfer(
    content_path: str | os.PathLike[str] | None,
    style_paths: Sequence[str | os.PathLike[str]],
    config: Config,
    *,
    network: VGG19Features | None = None,
    device: torch.device | None = None,
    callback: Callback | None = None,
    output_size: tuple[int, int] | None = None,
    frame_every: int = 0,
    frame_sink: Callable[[StepEvent, Image.Image], None] | None = None,
    style_cache: dict[Any, StyleState] | None = None,
    fit_levels: bool = True,
    bit_depth: int = 8,
    on_tile: TileCallback | None = None,
    temporal: Temporal | None = None,
    init_image: torch.Tensor | None = None,
) -> TransferResult:
    """Stylise the content image with the style image(s) under ``config``.

    Without a content image (``content_path`` None) this synthesises a texture of
    ``output_size`` (width, height) from noise. With more than one level
    (``optimizer.levels``, automatic for large pictures) it works coarse to fine: each
    level starts from the previous result, upsampled, and its targets are recomputed at
    its size. Every ``frame_every`` iterations the picture is handed to ``frame_sink``.
    ``style_cache`` (a dict the caller keeps) holds the style targets, so that a batch of
    contents on the same style images and configuration builds them once. ``fit_levels``:
    the number of levels came from the preset and may drop coarse levels that are too
    small (see :func:`plan_levels`). ``bit_depth`` 16 also keeps the picture's 16-bit
    pixels (``pixels16``). A level that does not fit the memory there is runs tile by tile
    (``config.tile``; see :func:`neuralart.memory.plan_memory`), telling ``on_tile`` of
    each tile done within an iteration. A video frame (:mod:`neuralart.video.stylise`)
    adds ``temporal``, its temporal term on the output's grid (whole pictures only), and
    starts from ``init_image`` ((1, 3, H, W) network space, resized to the first level)
    instead of ``config.optimizer.init``.
    """
    started = time.perf_counter()
    seed = config.seed if config.seed is not None else secrets.randbelow(2**31)
    torch.manual_seed(seed)
    if device is None:
        device = network_device(network) if network is not None else pick_device(config.device)
    inputs = prepare_inputs(content_path, style_paths, config, output_size)
    levels = plan_levels(config, inputs, fit=fit_levels)  # refusals before the network loads
    if isinstance(config.tile, int) and config.tile > max(inputs.size):
        width, height = inputs.size
        raise NeuralartError(
            f"--tile {config.tile} is larger than the {width}x{height} px picture; give at "
            f"most {max(inputs.size)}, or --tile auto"
        )
    plans = [plan_memory(config, level.size, device) for level in levels]
    slow = [plan for plan in plans if plan.overhead > SLOW_TILES]
    if slow:
        worst = max(slow, key=lambda plan: plan.overhead)
        assert worst.tile is not None
        warnings.warn(
            f"the memory there is fits {worst.count} tiles of {worst.tile[1]}x{worst.tile[0]} px "
            f"at {worst.size[0]}x{worst.size[1]}: with their {worst.halo}-px halos each "
            f"iteration runs the network on {worst.overhead:.1f}x the picture; more memory or "
            "a smaller --tile-halo is faster",
            NeuralartWarning,
            stacklevel=2,
        )
    if temporal is not None and any(plan.tile is not None for plan in plans):
        raise NeuralartError("a video frame runs whole, not in tiles: use a smaller --size")
    if network is None:
        network = load_network(config, device)
    tune_device(device)
    set_precision(network, config.precision, device)
    step_callback = _with_frames(callback, frame_every, frame_sink, network)
    setup = time.perf_counter() - started
    x: torch.Tensor | None = None
    records: list[LevelRecord] = []
    result: OptimizeResult | None = None
    for level, plan in zip(levels, plans, strict=True):
        cpucache.release()  # the blocks cached at the previous level's sizes
        objective = build_objective(
            network, config, inputs, level, style_cache, plan, temporal=temporal
        )
        width, height = level.size
        if x is None and init_image is not None:  # a video frame: the warped previous one
            x0 = _resized(init_image.to(network_device(network)), level.size).clone()
        elif x is None:
            content = objective.content_image
            x0 = _init_image(config, torch.Size((1, 3, height, width)), network, seed, content)
        else:  # the previous level's result, upsampled
            x0 = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
        result = run_level(
            objective,
            x0,
            config,
            level,
            levels,
            step_callback,
            network.convention.pixel_scale(),
            plan,
            on_tile,
        )
        x = result.image
        records.append(
            LevelRecord(
                size=level.size,
                iterations=result.iterations,
                history=plan.history,
                seconds=result.seconds,
                final_losses=result.final,
                tile=plan.tile,
                tiles=plan.count,
                halo=plan.halo if plan.tile is not None else 0,
            )
        )
        del objective
        if result.stopped:
            break
    assert result is not None and x is not None
    cpucache.release()
    image, pixels16 = finish(x, inputs, config, network, bit_depth)
    return TransferResult(
        image=image,
        config=config,
        seed=seed,
        device=str(device),
        precision=config.precision,
        weights=network.source,
        iterations=sum(record.iterations for record in records),
        best_iteration=result.best_iteration,
        seconds=time.perf_counter() - started,
        setup_seconds=setup,
        initial_losses=result.initial,
        final_losses=result.final,
        levels=records,
        stopped=result.stopped,
        interrupted=result.interrupted,
        pixels16=pixels16,
    )


class NetworkCache:
    """One network per distinct (weights, pooling, normalize), loaded on first use."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._networks: dict[tuple[str, str, bool], VGG19Features] = {}

    def get(self, config: Config) -> VGG19Features:
        net = config.network
        key = (net.weights, net.pooling, net.normalize)
        if key not in self._networks:
            self._networks[key] = load_network(config, self.device)
        return self._networks[key]
