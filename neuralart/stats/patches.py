"""CNN-MRF's patch matching (Li & Wand 2016; docs/method.md §6) as a style statistic.

Its target is not a statistic but a bank of style patches per layer: several style
images, and the rotated and scaled copies of each, pool their patches (a patch is
matched, not averaged, so blend weights do not apply). The bank holds the patches and
their norms; each chunk of it is normalised when it is matched.

A picture evaluated in tiles asks :meth:`PatchMatching.partial_loss` for each tile's
share of the loss, and builds a style's bank tile by tile with
:meth:`PatchMatching.partial_target`, each given the tile's place in the layer's map
(:class:`neuralart.stats.Part`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from neuralart.errors import NeuralartError
from neuralart.layers import LAYERS, MIN_EDGE
from neuralart.stats import Grids, Memory, Part, Term
from neuralart.stats.gram import check_single_layers, single_layer_terms

if TYPE_CHECKING:
    from PIL import Image
    from torch import Tensor

    from neuralart.config import StyleConfig


class PatchMatching:
    name = "mrf"
    local = True  # a tile's share of the loss needs only its own map and a margin
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
        """(P, C, k, k): the style patches of the term's layer on the patch stride grid."""
        from neuralart.mrf import extract_patches

        return extract_patches(features[term.layers[0]], style.patch_size, style.patch_stride)

    def partial_target(
        self,
        features: dict[str, Tensor],
        term: Term,
        style: StyleConfig,
        part: Part,
        grids: Grids = None,
    ) -> Any:
        """A tile's share of :meth:`target`: the patches that start in its interior (one
        layer: ``grids`` does not apply). The shares of a picture's tiles :meth:`join`
        into its target, up to the order of the patches."""
        from neuralart.mrf import partial_patches

        return partial_patches(
            features[term.layers[0]],
            style.patch_size,
            style.patch_stride,
            part.origin,
            part.interior,
            part.grid,
        ).detach()

    def join(self, parts: Sequence[Any]) -> Any:
        """The tiles' patches, pooled: (P, C, k, k)."""
        import torch

        return parts[0] if len(parts) == 1 else torch.cat(list(parts))

    def combine(self, targets: Sequence[Any], weights: Sequence[float]) -> Any:
        """(patches (P, C, k, k), norms (P,)): the targets' patches pooled (weights do not
        apply); tiles' shares may be passed as targets too."""
        import torch

        from neuralart.mrf import patch_norms

        patches = targets[0] if len(targets) == 1 else torch.cat(list(targets))
        return patches, patch_norms(patches)

    def loss(
        self, features: dict[str, Tensor], term: Term, target: Any, style: StyleConfig
    ) -> Tensor:
        from neuralart.mrf import mrf_energy

        patches, norms = target
        return mrf_energy(features[term.layers[0]], patches, norms, stride=style.patch_stride)

    def margin(self, style: StyleConfig) -> int:
        """Cells a tile's map must reach past its interior (bottom and right): k − 1."""
        return style.patch_size - 1

    def partial_loss(
        self, features: dict[str, Tensor], term: Term, target: Any, style: StyleConfig, part: Part
    ) -> Tensor:
        """The part's share of :meth:`loss`: the tiles' shares add up to the whole loss."""
        from neuralart.mrf import partial_energy

        patches, norms = target
        return partial_energy(
            features[term.layers[0]],
            patches,
            norms,
            stride=style.patch_stride,
            origin=part.origin,
            interior=part.interior,
            grid=part.grid,
        )

    def memory(self, style: StyleConfig, term: Term, height: int, width: int) -> Memory:
        """The bank: the style patches and a norm each."""
        layer = LAYERS[term.layers[0]]
        h, w = layer.grid(height, width)
        copies = (1 + 2 * style.rotated_copies) * (1 + 2 * style.scaled_copies)
        patches = (h // style.patch_stride + 1) * (w // style.patch_stride + 1) * copies
        bank = patches * (layer.channels * style.patch_size**2 + 1)  # the patches, a norm each
        shifted = layer.entries(height, width) if style.shift else 0
        return Memory(bank, shifted)
