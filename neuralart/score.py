"""``neuralart score``: how far a picture is from its style and from its photograph.

Four figures, all computed at one scoring size (the result's long edge resized to
``size``; the content image resized to the result's exact size, the style images to the
same long edge):

* **style**: the sliced Wasserstein distance between the picture's and the style's
  VGG-19 activations at conv1_1, conv2_1, conv3_1, conv4_1 and conv5_1. Each layer's C
  feature vectors are projected on C random unit directions drawn from ``seed`` and the
  layer's name alone (never from a preset), each projection's sorted values are compared
  with the style's quantile function, and the layer's figure is the root of the mean
  squared difference; ``style`` is the mean of the five. Several style images: the
  average of their quantile functions (equal weights).
* **colour**: the same distance between the RGB pixels of the picture and of the style
  images, on 64 directions, in 8-bit levels (0..255).
* **ssim**: the structural similarity of the picture's and the content's luminance
  (scikit-image, Wang et al. 2004's Gaussian window, σ = 1.5): 1 for the photograph itself.
* **content**: ‖F − F_c‖ / ‖F_c‖ of the conv4_2 activations, 0 for the photograph itself.

The network is always the embedded VGG-19, normalised, with average pooling, whatever
preset made the picture, so that results of different presets, seeds and tools are
measured with one ruler. It is the network the optimisation uses: a picture optimised
against these features can score well without looking better to a person.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from neuralart.errors import NeuralartError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image
    from torch import Tensor

    from neuralart.vgg import VGG19Features

STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
CONTENT_LAYER = "conv4_2"
COLOR_DIRECTIONS = 64
DEFAULT_SIZE = 512
DEFAULT_SEED = 0
# The smallest long edge scored: conv5_1 needs 16 px, SSIM's 7-px window a few cells more.
MIN_SIZE = 32
MIN_SHORT_EDGE = 16
# The defaults check (benchmarks/defaults.py, docs/defaults-check.md): on every pair of
# photograph and painting, a bundled preset's default weights must keep the photograph's
# structure, its ssim at most SSIM_MARGIN below classic's on the same pair (classic, the
# reference whose pictures were looked at, keeps every photograph recognisable), and move
# the style figure at least STYLE_PROGRESS of the way from the photograph's towards 0.
SSIM_MARGIN = 0.2
STYLE_PROGRESS = 0.3


def style_progress(result: Score, photograph: Score) -> float:
    """How far a result moved from the photograph's style figure towards 0 (0: not at all,
    1: all the way)."""
    return 1.0 - result.style / photograph.style if photograph.style > 0 else 0.0


# A result and its content may differ this much in each dimension after resizing to the
# same long edge (rounding of the output size), in pixels or as a fraction.
SHAPE_SLACK = 0.02


@dataclass(frozen=True)
class Score:
    """The figures of one picture. Lower is closer for ``style``, ``color`` and
    ``content``; higher is closer for ``ssim``."""

    style: float
    color: float
    ssim: float
    content: float
    style_layers: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "style": round(self.style, 4),
            "color": round(self.color, 3),
            "ssim": round(self.ssim, 4),
            "content": round(self.content, 4),
            "style_layers": {k: round(v, 4) for k, v in self.style_layers.items()},
        }


@dataclass(frozen=True)
class StyleTarget:
    """Per layer the directions (K, C) and the style's quantile rows (K, n); the colour
    directions (64, 3) and quantile rows."""

    layers: dict[str, tuple[Tensor, Tensor]]
    color: tuple[Tensor, Tensor]


@dataclass(frozen=True)
class ContentTarget:
    """The content image at the result's size: its pixels (1, 3, H, W) in [0, 1], its
    luminance (H, W) as float64 numpy and its conv4_2 activations."""

    rgb: Tensor
    luma: np.ndarray
    features: Tensor


def directions(seed: int, name: str, count: int, dims: int) -> Tensor:
    """(count, dims) unit rows drawn from ``seed`` and ``name`` only (float64, CPU)."""
    import torch

    generator = torch.Generator().manual_seed(zlib.crc32(f"score:{seed}:{name}".encode()))
    draws = torch.randn(count, dims, generator=generator, dtype=torch.float64)
    return draws / draws.norm(dim=1, keepdim=True)


def sorted_projections(directions: Tensor, values: Tensor) -> Tensor:
    """(K, C) directions, (C, M) values -> (K, M): each projection ascending (float64)."""
    return (directions.to(values.device) @ values.double()).sort(dim=-1).values


def sliced_distance(directions: Tensor, values: Tensor, target: Tensor) -> float:
    """The root mean squared difference between the sorted projections of ``values``
    (C, M) and the target's quantile rows, resampled to M."""
    from neuralart.stats.distribution import quantiles

    mine = sorted_projections(directions, values)
    theirs = quantiles(target.to(mine.device), mine.shape[-1])
    return math.sqrt(float(((mine - theirs) ** 2).mean()))


def luma(rgb: Tensor) -> np.ndarray:
    """(1, 3, H, W) RGB in [0, 1] -> the luminance Y (H, W) as float64 numpy, clipped."""
    from neuralart.color import rgb_to_yuv

    return rgb_to_yuv(rgb.double().cpu())[0, 0].clamp(0, 1).numpy()


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """The structural similarity of two (H, W) images in [0, 1] (scikit-image)."""
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
    )


def fit_to(content: Image.Image, result_size: tuple[int, int], where: str) -> Image.Image:
    """The content resized to the result's exact size; a result whose shape is not the
    content's (beyond rounding) is refused."""
    from neuralart.images import long_edge_size, resize_to

    expected = long_edge_size(content.size, max(result_size))
    for got, want in zip(result_size, expected, strict=True):
        if abs(got - want) > max(1.0, SHAPE_SLACK * want):
            w, h = result_size
            cw, ch = content.size
            raise NeuralartError(
                f"{where} is {w}×{h} but the content image is {cw}×{ch}: not the same "
                "shape, so it cannot be the content repainted"
            )
    return resize_to(content, result_size)


class Scorer:
    """Holds the network and scores pictures; style and content targets are made once
    and reused over a batch."""

    def __init__(
        self,
        network: VGG19Features,
        *,
        size: int = DEFAULT_SIZE,
        seed: int = DEFAULT_SEED,
        device: torch.device | str = "cpu",
    ) -> None:
        if size < MIN_SIZE:
            raise NeuralartError(f"the scoring size must be at least {MIN_SIZE} px, got {size}")
        self.network = network
        self.size = size
        self.seed = seed
        self.device = device

    def _features(self, rgb: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        import torch

        with torch.no_grad():
            x = self.network.convention.to_network(rgb.to(self.device))
            return self.network(x, layers)

    def _rgb(self, img: Image.Image) -> Tensor:
        from neuralart.images import image_to_tensor

        return image_to_tensor(img)

    def style_target(self, styles: Sequence[Image.Image]) -> StyleTarget:
        """The style images (equal weights) at the scoring long edge."""
        from neuralart.images import resize_long_edge
        from neuralart.stats.distribution import barycentre

        if not styles:
            raise NeuralartError("scoring needs at least one style image")
        weights = [1.0 / len(styles)] * len(styles)
        per_layer: dict[str, list[Tensor]] = {name: [] for name in STYLE_LAYERS}
        colors: list[Tensor] = []
        color_dirs = directions(self.seed, "rgb", COLOR_DIRECTIONS, 3)
        layer_dirs: dict[str, Tensor] = {}
        for img in styles:
            rgb = self._rgb(resize_long_edge(img, self.size))
            colors.append(sorted_projections(color_dirs, rgb[0].reshape(3, -1).double() * 255))
            features = self._features(rgb, STYLE_LAYERS)
            for name in STYLE_LAYERS:
                f = features[name][0].reshape(features[name].shape[1], -1)
                if name not in layer_dirs:
                    layer_dirs[name] = directions(self.seed, name, f.shape[0], f.shape[0])
                per_layer[name].append(sorted_projections(layer_dirs[name], f))
        return StyleTarget(
            {
                name: (layer_dirs[name], barycentre(rows, weights))
                for name, rows in per_layer.items()
            },
            (color_dirs, barycentre(colors, weights)),
        )

    def prepare(self, img: Image.Image) -> Tensor:
        """A picture to score: (1, 3, H, W) in [0, 1] at the scoring long edge."""
        from neuralart.images import resize_long_edge

        if max(img.size) < MIN_SIZE:
            raise NeuralartError(
                f"a {img.size[0]}×{img.size[1]} picture is too small to score "
                f"(at least {MIN_SIZE} px on the long edge)"
            )
        rgb = self._rgb(resize_long_edge(img, self.size))
        if min(rgb.shape[-2:]) < MIN_SHORT_EDGE:
            h, w = rgb.shape[-2:]
            raise NeuralartError(
                f"at the scoring size the picture is {w}×{h}: its short edge must be at "
                f"least {MIN_SHORT_EDGE} px (conv5_1's grid); use a larger --size"
            )
        return rgb

    def content_target(self, content: Image.Image, result: Tensor, where: str) -> ContentTarget:
        """The content image at the size of ``result`` (a prepared picture)."""
        h, w = result.shape[-2:]
        rgb = self._rgb(fit_to(content, (w, h), where))
        return ContentTarget(rgb, luma(rgb), self._features(rgb, [CONTENT_LAYER])[CONTENT_LAYER])

    def score(self, picture: Tensor, content: ContentTarget, style: StyleTarget) -> Score:
        """The figures of a prepared picture (1, 3, H, W) in [0, 1]."""
        picture = picture.clamp(0, 1)
        features = self._features(picture, (*STYLE_LAYERS, CONTENT_LAYER))
        layers = {}
        for name in STYLE_LAYERS:
            f = features[name][0].reshape(features[name].shape[1], -1)
            dirs, target = style.layers[name]
            layers[name] = sliced_distance(dirs, f, target)
        color_dirs, color_target = style.color
        color = sliced_distance(color_dirs, picture[0].reshape(3, -1).double() * 255, color_target)
        mine = features[CONTENT_LAYER].double()
        theirs = content.features.double()
        relative = float((mine - theirs).norm() / theirs.norm().clamp_min(1e-12))
        return Score(
            style=sum(layers.values()) / len(layers),
            color=color,
            ssim=ssim(luma(picture), content.luma),
            content=relative,
            style_layers=layers,
        )

    def color_transferred(self, content: ContentTarget, styles: Sequence[Image.Image]) -> Tensor:
        """The content image with its colours' mean and covariance moved to the style
        images' (all their pixels together): the plain colour transfer of a photograph."""
        import torch

        from neuralart.color import match_colors
        from neuralart.images import resize_long_edge

        pixels = torch.cat(
            [self._rgb(resize_long_edge(img, self.size)).reshape(1, 3, 1, -1) for img in styles],
            dim=-1,
        )
        return match_colors(content.rgb, pixels).clamp(0, 1)
