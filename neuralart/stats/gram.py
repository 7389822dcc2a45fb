"""The Gram family (paper §2-§3.6, §4.3): the Gram matrix of a layer, the cross-layer Gram
of a pair (nearest upsampling of the deeper map, optional 3×3 blur), and the adjacent
correlations against nine offsets. One statistic kind: ``style.statistic: gram``, with
``layers`` or ``pairs``, ``shift``, ``blur`` and ``adjacent``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from neuralart.errors import NeuralartError
from neuralart.layers import LAYER_NAMES, LAYERS, expand_layers, normalised_weights
from neuralart.stats import Grids, Memory, Term
from neuralart.stats.moments import MomentStatistic

if TYPE_CHECKING:
    from torch import Tensor

    from neuralart.config import StyleConfig


def _ordered(a: str, b: str) -> tuple[str, str]:
    return (a, b) if LAYERS[a].index <= LAYERS[b].index else (b, a)


def style_pairs(style: StyleConfig) -> list[tuple[str, str]]:
    """The (shallower, deeper) layer pairs a style configuration names, by depth rank.

    Single layers are pairs of a layer with itself. Ranked by the shallower layer, ties
    broken by the deeper one (docs/method.md §3.1 [decided]).
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
    return sorted(set(pairs), key=lambda p: (LAYERS[p[0]].index, LAYERS[p[1]].index))


class GramFamily(MomentStatistic):
    name = "gram"

    def validate(self, style: StyleConfig) -> None:
        """Layers and pairs are checked with the configuration; shift, blur and adjacent
        combine freely."""

    def terms(self, style: StyleConfig) -> list[Term]:
        pairs = style_pairs(style)
        weights = normalised_weights(len(pairs), style.weighting, "style")
        return [
            Term(a if a == b else f"{a}-{b}", (a, b), w)
            for (a, b), w in zip(pairs, weights, strict=True)
        ]

    def partial_sum(
        self,
        features: dict[str, Tensor],
        term: Term,
        style: StyleConfig,
        window: Tensor | None = None,
        divisor: float = 0.0,
        grids: Grids = None,
    ) -> Tensor:
        from neuralart.statistics import adjacent_gram, cross_gram, gram

        a, b = (features[name] for name in term.layers)
        options: dict[str, Any] = {"window": window, "divisor": divisor}
        index = grids.get((term.layers[0], term.layers[1])) if grids else None
        if style.adjacent:
            return adjacent_gram(a, b, style.shift, style.blur, index=index, **options)
        if term.layers[0] == term.layers[1] and not style.blur:
            return gram(a, style.shift, **options)
        return cross_gram(a, b, style.shift, style.blur, index=index, **options)

    def memory(self, style: StyleConfig, term: Term, height: int, width: int) -> Memory:
        a, b = (LAYERS[name] for name in term.layers)
        entries = a.channels * b.channels * (9 if style.adjacent else 1)
        size_a = a.entries(height, width)
        on_b = a.channels * b.entries(height, width) // b.channels  # a's channels, b's grid
        shifted = size_a if style.shift else 0
        grid_a, grid_b = a.grid(height, width), b.grid(height, width)
        half = grid_a == (2 * grid_b[0], 2 * grid_b[1])  # blur and reduction in one kernel
        if style.adjacent:  # the nine shifted copies, on a's grid unless reduced at once
            if style.blur:
                copies = shifted + 9 * size_a + 9 * on_b
            elif half:
                copies = shifted + 9 * on_b
            else:
                copies = shifted + 9 * size_a + (9 * on_b if grid_a != grid_b else 0)
        elif grid_a == grid_b:  # the shifted or blurred map itself is multiplied
            copies = shifted + (size_a if style.blur else 0)
        else:
            copies = shifted + on_b + (size_a if style.blur and not half else 0)
        return Memory(entries, copies)


def check_single_layers(style: StyleConfig) -> None:
    """A statistic of single layers takes ``layers``, not pairs, blur or adjacent."""
    if style.pairs is not None or style.blur or style.adjacent:
        raise NeuralartError(
            f"style.statistic {style.statistic} is a statistic of single layers: "
            "use style.layers, without pairs, blur or adjacent"
        )


def single_layer_terms(style: StyleConfig, extra: Sequence[str] = ()) -> list[Term]:
    """One term per listed layer (shallow to deep), reading that layer and ``extra``."""
    layers = sorted(set(expand_layers(style.layers)), key=lambda n: LAYERS[n].index)
    weights = normalised_weights(len(layers), style.weighting, "style")
    return [Term(name, (name, *extra), w) for name, w in zip(layers, weights, strict=True)]
