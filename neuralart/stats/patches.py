"""CNN-MRF's patch matching (Li & Wand 2016; docs/method.md §6) as a style statistic.

Its target is not a statistic but a bank of style patches per layer: several style
images, and the rotated and scaled copies of each, pool their patches (a patch is
matched, not averaged, so blend weights do not apply).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from neuralart.errors import NeuralartError
from neuralart.layers import LAYERS, MIN_EDGE
from neuralart.stats import Memory, Term
from neuralart.stats.gram import check_single_layers, single_layer_terms

if TYPE_CHECKING:
    from PIL import Image
    from torch import Tensor

    from neuralart.config import StyleConfig


class PatchMatching:
    name = "mrf"
    sum_over_positions = False  # the match depends on the whole patch bank at once
    supports_gradient_weighting = False

    def validate(self, style: StyleConfig) -> None:
        check_single_layers(style)
        for key in ("patch_size", "patch_stride"):
            if getattr(style, key) < 1:
                raise NeuralartError(f"style.{key} must be at least 1")
        for key in ("rotated_copies", "scaled_copies"):
            if not 0 <= getattr(style, key) <= 12:
                raise NeuralartError(f"style.{key} must be between 0 and 12")

    def terms(self, style: StyleConfig) -> list[Term]:
        return single_layer_terms(style)

    def min_edge(self, style: StyleConfig) -> int:
        """A patch of k×k cells at a layer behind p pools needs k·2^p pixels."""
        need = MIN_EDGE
        for term in self.terms(style):
            need = max(need, style.patch_size * 2 ** LAYERS[term.layers[0]].pools_before)
        return need

    def style_copies(
        self, image: Image.Image, style: StyleConfig
    ) -> list[tuple[Image.Image, float]]:
        """The image, its rotated and its scaled copies, each with its scale relative to the
        image: every copy keeps its own scale when the level resizes the style."""
        from neuralart.mrf import style_variants

        return style_variants(image, style.rotated_copies, style.scaled_copies)

    def target(self, features: dict[str, Tensor], term: Term, style: StyleConfig) -> Any:
        from neuralart.mrf import extract_patches

        return extract_patches(features[term.layers[0]], style.patch_size, style.patch_stride)

    def combine(self, targets: Sequence[Any], weights: Sequence[float]) -> Any:
        import torch

        from neuralart.mrf import normalise_patches

        patches = torch.cat(list(targets))  # (P, C, k, k)
        return patches, normalise_patches(patches)

    def loss(
        self, features: dict[str, Tensor], term: Term, target: Any, style: StyleConfig
    ) -> Tensor:
        from neuralart.mrf import mrf_energy

        patches, normalised = target
        return mrf_energy(features[term.layers[0]], patches, normalised, stride=style.patch_stride)

    def memory(self, style: StyleConfig, term: Term, height: int, width: int) -> Memory:
        layer = LAYERS[term.layers[0]]
        h, w = layer.grid(height, width)
        copies = (1 + 2 * style.rotated_copies) * (1 + 2 * style.scaled_copies)
        patches = (h // style.patch_stride + 1) * (w // style.patch_stride + 1) * copies
        bank = 2 * patches * layer.channels * style.patch_size**2  # and its normalised copy
        shifted = layer.entries(height, width) if style.shift else 0
        return Memory(bank, shifted)
