"""Content, style, TV and temporal terms and the weighted objective (docs/method.md §2-§3).

Normalisation is size-invariant (docs/method.md §2 [decided]): statistics are divided by the
number of positions and every squared distance is a mean over the entries compared, so
the same weights give the same balance at any picture size. Per-layer weights are
divided by their sum, separately for content and style.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from neuralart.config import ContentConfig, StyleConfig
from neuralart.errors import NeuralartError
from neuralart.layers import by_depth, expand_layers, normalised_weights
from neuralart.stats import Term, statistic_for, style_terms, term_layers
from neuralart.tiles import Tile, TileMaps, style_targets, tile_maps, whole_maps
from neuralart.weighting import gradient_weights, reweight_gradient


def content_terms(content: ContentConfig) -> list[tuple[str, float]]:
    """(layer, weight) of each content layer, shallow to deep (none when its weight is 0)."""
    if content.weight <= 0:
        return []
    layers = by_depth(expand_layers(content.layers))
    weights = normalised_weights(len(layers), content.weighting, "content")
    return list(zip(layers, weights, strict=True))


def network_layers(content: ContentConfig, style: StyleConfig, *, with_content: bool) -> list[str]:
    """Every layer an objective reads, shallow to deep; the last is how far the network runs."""
    names = term_layers(style_terms(style))
    if with_content:
        names += [name for name, _ in content_terms(content)]
    return by_depth(names)


def tv_loss(x: Tensor, pixel_scale: float) -> Tensor:
    """Mean squared difference of neighbouring pixels, in [0, 1] pixel units."""
    dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean()
    dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()
    return (dx + dy) / (pixel_scale * pixel_scale)


@dataclass(frozen=True)
class Temporal:
    """The temporal term of video stylisation (Ruder, Dosovitskiy & Brox 2016, short-term):
    ``weight`` · (1/D) Σ_p c(p) (x(p) − ω(p))², D the number of pixel values.

    ``target`` ω is the previous stylised frame warped into the current frame, in the
    network's pixel space; ``weights`` c are 1 where the optical flow can be trusted and 0
    at disocclusions and motion boundaries. Both are on the picture's grid (the objective's
    caller resizes them to each coarse-to-fine level).
    """

    target: Tensor  # (1, 3, H, W) ω, network space
    weights: Tensor  # (1, 1, H, W) c in [0, 1]
    weight: float


def temporal_loss(x: Tensor, temporal: Temporal, pixel_scale: float) -> Tensor:
    """(1/D) Σ_p c(p) (x(p) − ω(p))², in [0, 1] pixel units like :func:`tv_loss`."""
    squared = (x - temporal.target).pow(2) * temporal.weights  # (1, 3, H, W)
    return squared.sum() / (x.numel() * pixel_scale * pixel_scale)


# The style targets, by term label: what a batch of contents on the same style reuses.
StyleState = dict[str, Any]

# The tiles to run an image of (height, width) in; None: the whole image at once.
TilePlanner = Callable[[int, int], list[Tile] | None]


class Objective:
    """content_weight·L_c + style_weight·L_s + tv_weight·TV, with targets computed once.

    The style terms come from the statistic that ``style.statistic`` names (see
    :mod:`neuralart.stats`). ``style_state`` reuses the targets of an earlier objective on
    the same style images and configuration (a batch of contents), instead of computing
    them from ``style_images``. ``style_images`` may hold several images with ``blend``
    weights (summing to 1); the statistic combines their targets. ``tiles`` plans the
    tiles in which the targets' images are run (print sizes); the targets are the same,
    and the content targets are then kept as each tile's block (``content_blocks``, in a
    temporary file with ``spill``) instead of whole maps. ``temporal`` adds the temporal
    term of a video frame (reported as "temporal"; whole pictures only, not in tiles).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        content: ContentConfig,
        style: StyleConfig,
        *,
        content_image: Tensor | None,
        style_images: Sequence[Tensor],
        blend: Sequence[float] | None = None,
        tv_weight: float = 0.0,
        pixel_scale: float = 1.0,
        style_state: StyleState | None = None,
        tiles: TilePlanner | None = None,
        spill: bool = False,
        temporal: Temporal | None = None,
    ) -> None:
        self.network = network
        self.device = next(network.parameters()).device
        self.style = style
        self.content_image = content_image  # (1, 3, H, W) network space, or None
        self.statistic = statistic_for(style)
        self.content_weight = content.weight if content_image is not None else 0.0
        self.style_weight = style.weight
        self.tv_weight = tv_weight
        self.temporal = temporal
        self.temporal_weight = temporal.weight if temporal is not None else 0.0
        self.pixel_scale = pixel_scale
        self.content_terms = content_terms(content) if self.content_weight > 0 else []
        self.style_terms: list[Term] = style_terms(style)
        self.style_layers = term_layers(self.style_terms)
        self.layers = network_layers(content, style, with_content=bool(self.content_terms))
        blend = list(blend) if blend is not None else [1.0] * len(style_images)
        total = sum(blend)
        blend = [w / total for w in blend]

        def maps(image: Tensor, layers: list[str]) -> dict[str, Tensor]:
            plan = tiles(*image.shape[-2:]) if tiles is not None else None
            if plan is None:
                return {n: f.detach() for n, f in network(image, layers).items()}
            return whole_maps(network, image, layers, plan)

        with torch.no_grad():
            self.content_targets: dict[str, Tensor] = {}
            self.content_blocks: TileMaps | None = None
            if self.content_terms and content_image is not None:
                layers = [n for n, _ in self.content_terms]
                plan = tiles(*content_image.shape[-2:]) if tiles is not None else None
                if plan is None:
                    self.content_targets = maps(content_image, layers)
                else:
                    self.content_blocks = tile_maps(network, content_image, layers, plan, spill)
            # paper §4.1-§4.2: weights of the style gradient, from the content image.
            self.gradient_weights: dict[str, Tensor] = {}
            if style.gradient_weighting != "none" and self.style_terms:
                if content_image is None:
                    raise NeuralartError(
                        f"style.gradient_weighting {style.gradient_weighting} needs a content "
                        "image (not for textures)"
                    )
                feats = maps(content_image, self.style_layers)
                self.gradient_weights = {n: gradient_weights(style, n, f) for n, f in feats.items()}
                del feats
            self.style_targets: StyleState = {}
            if style_state is not None:  # targets built earlier for the same style images
                self.style_targets = style_state
            elif self.style_terms:
                parts: dict[str, list[Any]] = {term.label: [] for term in self.style_terms}
                for image in style_images:
                    plan = tiles(*image.shape[-2:]) if tiles is not None else None
                    if plan is not None:
                        found = style_targets(
                            network, image, self.statistic, self.style_terms, style, plan
                        )
                        for term in self.style_terms:
                            parts[term.label].append(found[term.label])
                        continue
                    feats = network(image, self.style_layers)
                    for term in self.style_terms:
                        parts[term.label].append(self.statistic.target(feats, term, style))
                    del feats
                for term in self.style_terms:
                    self.style_targets[term.label] = self.statistic.combine(
                        parts.pop(term.label), blend
                    )

    def zero(self) -> Tensor:
        """A scalar 0 on the objective's device."""
        return torch.zeros((), device=self.device)

    @property
    def style_state(self) -> StyleState:
        """The style targets, to build another objective on the same style images."""
        return self.style_targets

    def style_loss(self, feats: dict[str, Tensor], term: Term) -> Tensor:
        """One style term's loss (unweighted) against the picture's features."""
        return self.statistic.loss(feats, term, self.style_targets[term.label], self.style)

    def terms(self, x: Tensor, features: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The unweighted content, style and TV losses of image ``x`` (network space);
        ``features``: the network's maps of ``x`` when the caller has them already (a batch
        of pictures run through the network together)."""
        if features is not None:
            feats = features
        else:
            feats = self.network(x, self.layers) if self.layers else {}
        out: dict[str, Tensor] = {}
        if self.content_terms:
            out["content"] = sum(
                (
                    w * F.mse_loss(feats[name], self.content_targets[name])
                    for name, w in self.content_terms
                ),
                x.new_zeros(()),
            )
        if self.style_terms:
            # The style path may see the maps through reweighted gradients; content never.
            style_feats = {
                name: reweight_gradient(f, self.gradient_weights[name])
                if name in self.gradient_weights
                else f
                for name, f in feats.items()
            }
            out["style"] = sum(
                (t.weight * self.style_loss(style_feats, t) for t in self.style_terms),
                x.new_zeros(()),
            )
        if self.tv_weight > 0:
            out["tv"] = tv_loss(x, self.pixel_scale)
        if self.temporal is not None:
            out["temporal"] = temporal_loss(x, self.temporal, self.pixel_scale)
        return out

    def value_and_grad(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """(unweighted terms, total, gradient) at ``x``, the whole picture at once."""
        leaf = x.detach().requires_grad_(True)
        terms = self.terms(leaf)
        total = self.total(terms)
        (grad,) = torch.autograd.grad(total, leaf)
        return {k: v.detach() for k, v in terms.items()}, total.detach(), grad

    def value(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """(unweighted terms, total) at ``x``, without a gradient."""
        with torch.no_grad():
            terms = self.terms(x)
            return terms, self.total(terms)

    def total(self, terms: dict[str, Tensor]) -> Tensor:
        loss = terms["content"] * self.content_weight if "content" in terms else None
        for key, weight in (("style", self.style_weight), ("tv", self.tv_weight)):
            if key in terms:
                part = terms[key] * weight
                loss = part if loss is None else loss + part
        if "temporal" in terms:  # a video frame's temporal term
            part = terms["temporal"] * self.temporal_weight
            loss = part if loss is None else loss + part
        if loss is None:
            raise ValueError("the objective has no terms")
        return loss
