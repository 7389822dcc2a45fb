"""Wire configuration, images, network, objective and optimiser into one call."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from neuralart.config import Config
from neuralart.errors import NeuralartError
from neuralart.images import (
    image_to_tensor,
    load_image,
    resize_long_edge,
    resize_to,
    tensor_to_image,
)
from neuralart.losses import Objective
from neuralart.optimize import Callback, run_lbfgs
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


def load_network(config: Config, device: torch.device) -> VGG19Features:
    net = config.network
    return load_vgg19(net.weights, pooling=net.pooling, normalize=net.normalize, device=device)


def _init_image(
    config: Config, content: torch.Tensor, network: VGG19Features, seed: int
) -> torch.Tensor:
    """The starting point, in network space, the size of the content image."""
    init = config.optimizer.init
    conv = network.convention
    if init == "content":
        return content.clone()
    if init == "noise":
        generator = torch.Generator(device="cpu").manual_seed(seed)
        rgb = torch.rand(content.shape, generator=generator)  # (1, 3, H, W) uniform pixels
        return conv.to_network(rgb.to(content.device))
    image = load_image(Path(init), role="init image")
    size = (content.shape[-1], content.shape[-2])
    return conv.to_network(image_to_tensor(resize_to(image, size)).to(content.device))


def transfer(
    content_path: str | os.PathLike[str],
    style_paths: Sequence[str | os.PathLike[str]],
    config: Config,
    *,
    network: VGG19Features | None = None,
    device: torch.device | None = None,
    callback: Callback | None = None,
) -> TransferResult:
    """Stylise the content image with the style image(s) under ``config``."""
    started = time.perf_counter()
    seed = config.seed if config.seed is not None else secrets.randbelow(2**31)
    torch.manual_seed(seed)
    if device is None:
        device = pick_device(config.device)
    content_img = resize_long_edge(load_image(content_path, role="content image"), config.size)
    style_imgs = [
        resize_long_edge(load_image(p, role="style image"), config.size) for p in style_paths
    ]
    if network is None:
        network = load_network(config, device)
    conv = network.convention
    content = conv.to_network(image_to_tensor(content_img).to(device))
    styles = [conv.to_network(image_to_tensor(img).to(device)) for img in style_imgs]

    objective = Objective(
        network,
        config.content,
        config.style,
        content_image=content,
        style_images=styles,
        tv_weight=config.tv_weight,
        pixel_scale=conv.pixel_scale(),
    )
    x0 = _init_image(config, content, network, seed)
    setup = time.perf_counter() - started
    result = run_lbfgs(
        objective,
        x0,
        iterations=config.optimizer.iterations,
        history=config.optimizer.history,
        learning_rate=config.optimizer.learning_rate,
        first_step=FIRST_STEP_GREY_LEVELS * conv.pixel_scale() / 255.0,
        callback=callback,
    )
    image = tensor_to_image(conv.from_network(result.image))
    record = {
        "device": str(device),
        "weights": network.source,
        "size": [image.width, image.height],
        "iterations": result.iterations,
        "best_iteration": result.best_iteration,
        "seconds": round(time.perf_counter() - started, 3),
        "setup_seconds": round(setup, 3),
        "initial_losses": result.initial,
        "final_losses": result.final,
    }
    if result.stopped:
        record["stopped"] = result.stopped
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
    return results
