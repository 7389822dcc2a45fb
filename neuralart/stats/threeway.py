"""The three-way statistics of paper §4.4-§4.5: content-aware Grams and Gram cubes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from neuralart.layers import LAYERS
from neuralart.stats import Grids, Memory, Term
from neuralart.stats.gram import check_single_layers, single_layer_terms
from neuralart.stats.moments import MomentStatistic

if TYPE_CHECKING:
    from torch import Tensor

    from neuralart.config import StyleConfig


def _block_scratch() -> int:
    from neuralart.statistics import CHUNK_ELEMENTS

    return 3 * CHUNK_ELEMENTS  # the pair-product blocks being formed and differentiated


class ContentAwareGram(MomentStatistic):
    """G[i, j, k] = Σ_p (F+s)_ip (F+s)_jp C_kp / M, C the same picture's ``content_layer``
    (unshifted, nearest-resampled to the layer's grid): a Gram matrix per content channel."""

    name = "content-aware"

    def validate(self, style: StyleConfig) -> None:
        check_single_layers(style)

    def terms(self, style: StyleConfig) -> list[Term]:
        return single_layer_terms(style, extra=(style.content_layer,))

    def partial_sum(
        self,
        features: dict[str, Tensor],
        term: Term,
        style: StyleConfig,
        window: Tensor | None = None,
        divisor: float = 0.0,
        grids: Grids = None,
    ) -> Tensor:
        from neuralart.statistics import content_aware_gram

        layer, content = term.layers
        index = grids.get((layer, content)) if grids else None
        return content_aware_gram(
            features[layer],
            features[content],
            style.shift,
            window=window,
            divisor=divisor,
            index=index,
        )

    def memory(self, style: StyleConfig, term: Term, height: int, width: int) -> Memory:
        layer, content = (LAYERS[name] for name in term.layers)
        size = layer.entries(height, width)
        shifted = size if style.shift else 0
        resampled = content.channels * (size // layer.channels)  # content on layer's grid
        return Memory(layer.channels**2 * content.channels, shifted + resampled, _block_scratch())


class GramCube(MomentStatistic):
    """G[i, j, k] = Σ_p (F+s)_ip (F+s)_jp (F+s)_kp / M (paper §4.5)."""

    name = "gram-cube"

    def validate(self, style: StyleConfig) -> None:
        check_single_layers(style)

    def terms(self, style: StyleConfig) -> list[Term]:
        return single_layer_terms(style)

    def partial_sum(
        self,
        features: dict[str, Tensor],
        term: Term,
        style: StyleConfig,
        window: Tensor | None = None,
        divisor: float = 0.0,
        grids: Grids = None,
    ) -> Tensor:
        from neuralart.statistics import gram_cube

        return gram_cube(features[term.layers[0]], style.shift, window=window, divisor=divisor)

    def memory(self, style: StyleConfig, term: Term, height: int, width: int) -> Memory:
        layer = LAYERS[term.layers[0]]
        shifted = layer.entries(height, width) if style.shift else 0
        return Memory(layer.channels**3, shifted, _block_scratch())
