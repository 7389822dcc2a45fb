"""Wire configuration, images, network, objective and optimiser into one call."""

from __future__ import annotations

import math
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from neuralart.color import luminance, match_colors, match_luminance, with_chrominance
from neuralart.config import Config, expand_layers
from neuralart.errors import NeuralartError
from neuralart.images import (
    MIN_EDGE,
    image_to_tensor,
    load_image,
    long_edge_size,
    resize_long_edge,
    resize_to,
    tensor_to_image,
)
from neuralart.losses import Objective, StyleState
from neuralart.memory import check_memory
from neuralart.optimize import Callback, StepEvent, run_lbfgs
from neuralart.vgg import VGG19Features, load_vgg19

# The first L-BFGS step (a gradient step) moves no pixel by more than this many grey
# levels. Measured on chain/chain-blurred/classic at 160 px: 1 was often slow to get
# going, 4-16 all reached the same loss in 40 iterations.
FIRST_STEP_GREY_LEVELS = 8.0


@dataclass
class TransferResult:
    image: Image.Image
    config: Config
    seed: int
    record: dict[str, Any]  # what happened: device, seconds, iterations, losses, ...


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
    statistics' matrix products stay in full float32."""
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


def schedule(config: Config, size: tuple[int, int]) -> list[tuple[tuple[int, int], int]]:
    """((width, height), iterations) of each coarse-to-fine level for an output of ``size``."""
    counts = config.optimizer.level_iterations(max(size))
    return list(zip(level_sizes(size, len(counts)), counts, strict=True))


def level_sizes(size: tuple[int, int], levels: int) -> list[tuple[int, int]]:
    """(width, height) of each coarse-to-fine level: size / 2^(levels-1-i)."""
    out = []
    for i in range(levels):
        factor = 0.5 ** (levels - 1 - i)
        out.append((max(1, round(size[0] * factor)), max(1, round(size[1] * factor))))
    return out


def _smallest_edge(config: Config) -> int:
    """The fewest pixels on a side the network needs: 16, or more for CNN-MRF patches.

    A patch of k×k cells at a layer behind p pools needs k·2^p pixels.
    """
    need = MIN_EDGE
    if config.style.statistic == "mrf":
        for name in expand_layers(config.style.layers):
            pools = int(name[4]) - 1  # conv{block}_{i}: block b sits behind b-1 pools
            need = max(need, config.style.patch_size * 2**pools)
    return need


def _check_smallest_level(
    config: Config,
    levels: list[tuple[int, int]],
    final: tuple[int, int],
    styles: list[tuple[int, int]],
    style_scale: float = 1.0,
) -> None:
    """The first (smallest) level must still give the network enough pixels on every side."""
    minimum = _smallest_edge(config)
    width, height = levels[0]
    shorts = [min(width, height)]
    for size in styles:
        style_edge = max(1, round(max(width, height) * style_scale))
        shorts.append(min(long_edge_size(size, style_edge)))
    if min(shorts) >= minimum:
        return
    need = math.ceil(max(final) * minimum / min(shorts))
    what = (
        f"with {len(levels)} levels the first runs at {width}x{height} px, and "
        if len(levels) > 1
        else ""
    )
    raise NeuralartError(
        f"{what}an image's short side would be {min(shorts)} px there, but this method needs "
        f"at least {minimum}; use --size {need} or more"
        + (" or fewer --scales" if len(levels) > 1 else "")
    )


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
) -> TransferResult:
    """Stylise the content image with the style image(s) under ``config``.

    Without a content image (``content_path`` None) this synthesises a texture of
    ``output_size`` (width, height) from noise. With more than one level (see
    :func:`schedule`; ``optimizer.levels``, automatic for large pictures) it works
    coarse to fine: each level starts from the previous result, upsampled, and its
    targets are recomputed at its size. Every ``frame_every`` iterations the picture is
    handed to ``frame_sink`` (intermediate frames). ``style_cache`` (a dict the caller
    keeps) holds the style targets per style size, so that a batch of contents with the
    same style images and configuration builds them once.
    """
    started = time.perf_counter()
    seed = config.seed if config.seed is not None else secrets.randbelow(2**31)
    torch.manual_seed(seed)
    if device is None:
        device = network_device(network) if network is not None else pick_device(config.device)
    content_full = None
    if content_path is not None:
        content_full = resize_long_edge(
            _load(content_path, "content image", config.max_pixels), config.size
        )
        final_size = content_full.size
    elif output_size is not None:
        final_size = output_size
    else:
        raise ValueError("transfer needs a content image or an output size")
    blend = config.style.blend
    if blend is not None and len(blend) != len(style_paths):
        raise NeuralartError(
            f"--style-blend has {len(blend)} weights but there are {len(style_paths)} style images"
        )
    style_full = [_load(p, "style image", config.max_pixels) for p in style_paths]
    content_colour = content_full
    if config.preserve_color != "none":
        if content_full is None:
            raise NeuralartError("--preserve-color needs a content image (not for textures)")
        content_full, style_full = _preserve_colour(config.preserve_color, content_full, style_full)
    check_memory(config, final_size, device)  # the largest level, before the network loads
    if network is None:
        network = load_network(config, device)
    tune_device(device)
    set_precision(network, config.precision, device)
    conv = network.convention
    style_cfg = config.style
    if style_cfg.statistic == "mrf" and (style_cfg.rotations or style_cfg.scales):
        from neuralart.mrf import style_variants

        style_full = [
            v
            for img in style_full
            for v in style_variants(img, style_cfg.rotations, style_cfg.scales)
        ]
        blend = None  # patches are matched, not averaged: every copy counts alike

    step_callback = callback
    if frame_every > 0 and frame_sink is not None:
        sink = frame_sink

        def step_callback(event: StepEvent) -> None:
            if event.iteration % frame_every == 0 and event.image is not None:
                sink(event, tensor_to_image(conv.from_network(event.image)))
            if callback is not None:
                callback(event)

    plan = schedule(config, final_size)
    levels = [level_size for level_size, _ in plan]
    counts = tuple(count for _, count in plan)
    _check_smallest_level(
        config, levels, final_size, [img.size for img in style_full], style_cfg.scale
    )
    x: torch.Tensor | None = None
    history: list[dict[str, Any]] = []
    iterations_done = 0
    setup = time.perf_counter() - started
    result = None
    for index, ((width, height), count) in enumerate(plan):
        long_edge = max(width, height)
        content = None
        if content_full is not None:
            content = conv.to_network(
                image_to_tensor(resize_to(content_full, (width, height))).to(device)
            )
        style_edge = max(1, round(long_edge * style_cfg.scale))
        # Colour preservation adapts the style images to each content: no reuse then.
        use_cache = style_cache is not None and config.preserve_color == "none"
        cache_key = (style_edge, str(device))
        cached = style_cache.get(cache_key) if style_cache is not None and use_cache else None
        styles = []
        if cached is None:
            styles = [
                conv.to_network(image_to_tensor(resize_long_edge(img, style_edge)).to(device))
                for img in style_full
            ]
        objective = Objective(
            network,
            config.content,
            config.style,
            content_image=content,
            style_images=styles,
            blend=blend,
            tv_weight=config.tv_weight,
            pixel_scale=conv.pixel_scale(),
            style_state=cached,
        )
        if style_cache is not None and use_cache and cached is None:
            style_cache[cache_key] = objective.style_state
        if x is None:
            x0 = _init_image(config, torch.Size((1, 3, height, width)), network, seed, content)
        else:  # the previous level's result, upsampled
            x0 = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
        result = run_lbfgs(
            objective,
            x0,
            iterations=count,
            history=config.optimizer.history_for(3 * width * height),
            learning_rate=config.optimizer.learning_rate,
            first_step=FIRST_STEP_GREY_LEVELS * conv.pixel_scale() / 255.0,
            callback=step_callback,
            level=index + 1,
            levels=len(levels),
            schedule=counts,
        )
        x = result.image
        iterations_done += result.iterations
        history.append(
            {
                "size": [width, height],
                "iterations": result.iterations,
                "history": config.optimizer.history_for(3 * width * height),
                "seconds": round(result.seconds, 3),
                "final_losses": result.final,
            }
        )
        del objective
        if result.stopped:
            break
    assert result is not None and x is not None
    if x.shape[-2:] != (final_size[1], final_size[0]):  # stopped before the last level
        x = F.interpolate(x, size=(final_size[1], final_size[0]), mode="bilinear")
    rgb = conv.from_network(x)
    if config.preserve_color == "luminance" and content_colour is not None:
        # The picture's luma with the photograph's own chrominance.
        rgb = with_chrominance(rgb, image_to_tensor(content_colour).to(rgb.device))
    image = tensor_to_image(rgb)
    record: dict[str, Any] = {
        "device": str(device),
        "precision": config.precision,
        "weights": network.source,
        "size": [image.width, image.height],
        "iterations": iterations_done,
        "best_iteration": result.best_iteration,
        "seconds": round(time.perf_counter() - started, 3),
        "setup_seconds": round(setup, 3),
        "initial_losses": result.initial,
        "final_losses": result.final,
    }
    if len(history) > 1:
        record["levels"] = history
    if result.stopped:
        record["stopped"] = result.stopped
    if result.interrupted:
        record["interrupted"] = True
    return TransferResult(image=image, config=config, seed=seed, record=record)


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


def compare(
    content_path: str | os.PathLike[str],
    style_paths: Sequence[str | os.PathLike[str]],
    configs: Sequence[Config],
    *,
    device: torch.device,
    on_start: Callable[[int, Config], None] | None = None,
    callback: Callback | None = None,
) -> list[TransferResult]:
    """Run each configuration on the same inputs, sharing networks between them."""
    cache = NetworkCache(device)
    results = []
    for index, config in enumerate(configs):
        if on_start is not None:
            on_start(index, config)
        network = cache.get(config)
        results.append(
            transfer(
                content_path,
                style_paths,
                config,
                network=network,
                device=device,
                callback=callback,
            )
        )
        if results[-1].record.get("interrupted"):
            raise KeyboardInterrupt  # Ctrl-C ends the whole comparison
    return results
