"""Content, style and TV terms and the weighted objective (paper.md §2-§3).

Normalisation is size-invariant (paper.md §2 [decided]): statistics are divided by the
number of positions and every squared distance is a mean over the entries compared, so
the same weights give the same balance at any picture size. Per-layer weights are
divided by their sum, separately for content and style.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from neuralart.config import ContentConfig, StyleConfig, expand_layers
from neuralart.errors import NeuralartError
from neuralart.mrf import extract_patches, mrf_energy, normalise_patches
from neuralart.statistics import adjacent_gram, content_aware_gram, cross_gram, gram, gram_cube
from neuralart.vgg import LAYER_INDEX, LAYER_NAMES
from neuralart.weighting import gradient_weights, reweight_gradient


@dataclass(frozen=True)
class StyleTerm:
    """One style statistic: the Gram of ``a`` (a == b) or the cross-layer Gram of a pair.

    ``a`` is the shallower layer of the pair.
    """

    a: str
    b: str
    weight: float

    @property
    def label(self) -> str:
        return self.a if self.a == self.b else f"{self.a}-{self.b}"


def geometric_weights(count: int, role: str) -> list[float]:
    """Paper §3.1, by depth rank d = 1..D: style 2^(D−d), content 2^d (unnormalised)."""
    if role == "style":
        return [2.0 ** (count - d) for d in range(1, count + 1)]
    return [2.0**d for d in range(1, count + 1)]


def normalised_weights(count: int, weighting: str, role: str) -> list[float]:
    raw = [1.0] * count if weighting == "uniform" else geometric_weights(count, role)
    total = sum(raw)
    return [w / total for w in raw]


def _ordered(a: str, b: str) -> tuple[str, str]:
    return (a, b) if LAYER_INDEX[a] <= LAYER_INDEX[b] else (b, a)


def style_pairs(style: StyleConfig) -> list[tuple[str, str]]:
    """The (shallower, deeper) layer pairs a style configuration names, by depth rank.

    Ranked by the shallower layer, ties broken by the deeper one (paper.md §3.1 [decided]).
    """
    if style.pairs is None:
        pairs = [(name, name) for name in expand_layers(style.layers)]
    elif style.pairs == "chain":
        pairs = [(LAYER_NAMES[i], LAYER_NAMES[i + 1]) for i in range(len(LAYER_NAMES) - 1)]
    elif isinstance(style.pairs, str):  # all-to-LAYER
        anchor = style.pairs.removeprefix("all-to-")
        pairs = [_ordered(name, anchor) for name in LAYER_NAMES]
    else:
        pairs = [_ordered(a, b) for a, b in style.pairs]
    unique = sorted(set(pairs), key=lambda p: (LAYER_INDEX[p[0]], LAYER_INDEX[p[1]]))
    return unique


def style_terms(style: StyleConfig) -> list[StyleTerm]:
    pairs = style_pairs(style)
    weights = normalised_weights(len(pairs), style.weighting, "style")
    return [StyleTerm(a, b, w) for (a, b), w in zip(pairs, weights, strict=True)]


def content_terms(content: ContentConfig) -> list[tuple[str, float]]:
    layers = sorted(set(expand_layers(content.layers)), key=LAYER_INDEX.__getitem__)
    weights = normalised_weights(len(layers), content.weighting, "content")
    return list(zip(layers, weights, strict=True))


def style_layers(style: StyleConfig, terms: Sequence[StyleTerm]) -> list[str]:
    """Every layer the style statistics read, shallow to deep."""
    names = {t.a for t in terms} | {t.b for t in terms}
    if terms and style.statistic == "content-aware":
        names.add(style.content_layer)
    return sorted(names, key=LAYER_INDEX.__getitem__)


def style_statistic(features: dict[str, Tensor], term: StyleTerm, style: StyleConfig) -> Tensor:
    """The statistic of one term from a forward pass's features."""
    a, b = features[term.a], features[term.b]
    if style.statistic == "content-aware":
        return content_aware_gram(a, features[style.content_layer], style.shift)
    if style.statistic == "gram-cube":
        return gram_cube(a, style.shift)
    if style.adjacent:
        return adjacent_gram(a, b, style.shift, style.blur)
    if term.a == term.b and not style.blur:
        return gram(a, style.shift)
    return cross_gram(a, b, style.shift, style.blur)


def tv_loss(x: Tensor, pixel_scale: float) -> Tensor:
    """Mean squared difference of neighbouring pixels, in [0, 1] pixel units."""
    dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean()
    dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()
    return (dx + dy) / (pixel_scale * pixel_scale)


# Style targets (statistic per term) and CNN-MRF patch banks (patches, normalised) per layer.
StyleState = tuple[dict[str, Tensor], dict[str, tuple[Tensor, Tensor]]]


class Objective:
    """content_weight·L_c + style_weight·L_s + tv_weight·TV, with targets computed once.

    ``style_state`` reuses the targets of an earlier objective on the same style images
    and configuration (a batch of contents), instead of computing them from ``style_images``.
    ``style_images`` may hold several images with ``blend`` weights (summing to 1); the
    target of each style term is the blend of their statistics. With the ``mrf``
    statistic the target of each layer is instead a bank of patches from every style
    image (their blend weights do not apply: a patch is matched, not averaged).
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
    ) -> None:
        self.network = network
        self.style = style
        self.content_weight = content.weight if content_image is not None else 0.0
        self.style_weight = style.weight
        self.tv_weight = tv_weight
        self.pixel_scale = pixel_scale
        self.content_terms = content_terms(content) if self.content_weight > 0 else []
        self.style_terms = style_terms(style) if self.style_weight > 0 else []
        self.style_layers = style_layers(style, self.style_terms)
        self.layers = sorted(
            set(self.style_layers) | {name for name, _ in self.content_terms},
            key=LAYER_INDEX.__getitem__,
        )
        blend = list(blend) if blend is not None else [1.0] * len(style_images)
        total = sum(blend)
        blend = [w / total for w in blend]

        with torch.no_grad():
            self.content_targets: dict[str, Tensor] = {}
            if self.content_terms and content_image is not None:
                feats = network(content_image, [n for n, _ in self.content_terms])
                self.content_targets = {n: f.detach() for n, f in feats.items()}
            # paper §4.1-§4.2: weights of the style gradient, from the content image.
            self.gradient_weights: dict[str, Tensor] = {}
            if style.gradient_weighting != "none" and self.style_terms:
                if content_image is None:
                    raise NeuralartError(
                        f"style.gradient_weighting {style.gradient_weighting} needs a content "
                        "image (not for textures)"
                    )
                feats = network(content_image, self.style_layers)
                self.gradient_weights = {n: gradient_weights(style, n, f) for n, f in feats.items()}
            self.style_targets: dict[str, Tensor] = {}
            self.patch_banks: dict[str, tuple[Tensor, Tensor]] = {}
            if style_state is not None:  # targets built earlier for the same style images
                self.style_targets, self.patch_banks = style_state
            elif self.style_terms:
                banks: dict[str, list[Tensor]] = {name: [] for name in self.style_layers}
                for image, w in zip(style_images, blend, strict=True):
                    feats = network(image, self.style_layers)
                    if style.statistic == "mrf":
                        for name in self.style_layers:
                            banks[name].append(
                                extract_patches(feats[name], style.patch_size, style.patch_stride)
                            )
                        continue
                    for term in self.style_terms:
                        stat = style_statistic(feats, term, style).detach() * w
                        prev = self.style_targets.get(term.label)
                        self.style_targets[term.label] = stat if prev is None else prev + stat
                    del feats
                if style.statistic == "mrf":
                    for name, parts in banks.items():
                        patches = torch.cat(parts)  # (P, C, k, k)
                        self.patch_banks[name] = (patches, normalise_patches(patches))

    @property
    def style_state(self) -> StyleState:
        """The style targets, to build another objective on the same style images."""
        return self.style_targets, self.patch_banks

    def _style_loss(self, feats: dict[str, Tensor], term: StyleTerm) -> Tensor:
        if self.style.statistic == "mrf":
            patches, normalised = self.patch_banks[term.a]
            return mrf_energy(feats[term.a], patches, normalised, stride=self.style.patch_stride)
        target = self.style_targets[term.label]
        return F.mse_loss(style_statistic(feats, term, self.style), target)

    def terms(self, x: Tensor) -> dict[str, Tensor]:
        """The unweighted content, style and TV losses of image ``x`` (network space)."""
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
                (t.weight * self._style_loss(style_feats, t) for t in self.style_terms),
                x.new_zeros(()),
            )
        if self.tv_weight > 0:
            out["tv"] = tv_loss(x, self.pixel_scale)
        return out

    def total(self, terms: dict[str, Tensor]) -> Tensor:
        loss = terms["content"] * self.content_weight if "content" in terms else None
        for key, weight in (("style", self.style_weight), ("tv", self.tv_weight)):
            if key in terms:
                part = terms[key] * weight
                loss = part if loss is None else loss + part
        if loss is None:
            raise ValueError("the objective has no terms")
        return loss
