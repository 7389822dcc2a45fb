"""The style statistics behind one small protocol, and the registry of their YAML names.

A statistic kind (``style.statistic`` in a preset) is one object that knows:

* ``validate``: the options of ``style`` that concern it (one-line errors);
* ``terms``: the terms it matches (each with the layers it reads and its weight);
* ``min_edge``: the fewest pixels on a side the picture needs;
* ``style_copies``: the style image and any extra copies it learns from (CNN-MRF's
  rotated and scaled copies), each with its scale relative to the style image;
* ``target`` / ``combine``: a term's target from one style image's features, and the
  targets of several style images combined with the blend weights;
* ``loss``: a term's loss against the picture's features;
* ``memory``: the entries a term keeps (its statistic, its feature-sized copies, scratch);
* ``partial_target`` / ``join``: a tile's share of a target, and the shares of a
  picture's tiles joined into its target (print-size style images).

A statistic that is a sum over positions divided by their number M (every Gram kind,
``sum_over_positions = True``) also gives ``partial_sum``: the sum over the positions
inside a window, divided by a given M, so that parts of a picture can be added up into
the statistic of the whole, and ``distance``, the loss of a value against its target. A
statistic whose loss is a sum of local terms given its target (CNN-MRF, ``local =
True``) gives ``partial_loss``, a tile's share of the loss, and ``margin``, the cells a
tile's map needs beyond the part it answers for.

Adding a statistic is one new module with its class, one line in :data:`REGISTRY`, and
its tests. Nothing here imports torch at module level: configurations are validated
before torch loads; the computing methods import it when they run.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from neuralart.errors import NeuralartError

if TYPE_CHECKING:
    from PIL import Image
    from torch import Tensor

    from neuralart.config import StyleConfig


@dataclass(frozen=True)
class Term:
    """One matched statistic: its label, the layers it reads (the first is the grid its
    positions live on) and its weight among the style terms (the weights sum to 1)."""

    label: str
    layers: tuple[str, ...]
    weight: float


# For a part of a picture: for a pair of layers (larger grid, smaller grid), the cells of
# the smaller map each row and column of the larger one reads under the whole picture's
# mapping, numbered within the part (statistics.Resampling). None: whole maps.
Grids = dict[tuple[str, str], tuple["Tensor", "Tensor"]] | None


@dataclass(frozen=True)
class Part:
    """A tile of the picture on one layer's grid, for statistics evaluated tile by tile:
    the whole map's cell at the tile map's [0, 0] (``origin``), the cells the tile owns
    (``interior``: y0, y1, x0, x1, half-open, whole-map coordinates) and the whole
    picture's grid (``grid``: rows, columns)."""

    origin: tuple[int, int]
    interior: tuple[int, int, int, int]
    grid: tuple[int, int]

    def cells(self) -> tuple[slice, slice]:
        """The interior within the tile's own map (rows, columns)."""
        y0, y1, x0, x1 = self.interior
        oy, ox = self.origin
        return slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox)


class Memory(NamedTuple):
    """Float entries one term needs: its statistic (the target and the difference each
    hold one), the feature-sized tensors it keeps for the backward pass, and the scratch
    it uses while it is formed."""

    statistic: int
    copies: int
    scratch: int = 0


class StyleStatistic(Protocol):
    name: str
    sum_over_positions: bool
    # A loss that is a sum of local terms given the target (patch matching): tiles add
    # their ``partial_loss`` up, in one pass.
    local: bool
    # Paper §4.1-§4.2 reweight the gradient reaching the maps a statistic reads; that
    # means something for the moment statistics, not for patch matching.
    supports_gradient_weighting: bool

    def validate(self, style: StyleConfig) -> None: ...

    def terms(self, style: StyleConfig) -> list[Term]: ...

    def min_edge(self, style: StyleConfig) -> int: ...

    def style_copies(
        self, image: Image.Image, style: StyleConfig
    ) -> list[tuple[Image.Image, float]]: ...

    def target(self, features: dict[str, Tensor], term: Term, style: StyleConfig) -> Any: ...

    def combine(self, targets: Sequence[Any], weights: Sequence[float]) -> Any: ...

    def loss(
        self, features: dict[str, Tensor], term: Term, target: Any, style: StyleConfig
    ) -> Tensor: ...

    def memory(self, style: StyleConfig, term: Term, height: int, width: int) -> Memory: ...

    def partial_target(
        self, features: dict[str, Tensor], term: Term, style: StyleConfig, part: Part,
        grids: Grids = None,
    ) -> Any: ...  # fmt: skip

    def join(self, parts: Sequence[Any]) -> Any: ...


class LocalStatistic(StyleStatistic, Protocol):
    """A statistic with ``local = True``: its loss is a sum over positions given the
    target, so each tile's share is its own loss."""

    def margin(self, style: StyleConfig) -> int: ...

    def partial_loss(
        self, features: dict[str, Tensor], term: Term, target: Any, style: StyleConfig,
        part: Part,
    ) -> Tensor: ...  # fmt: skip


class SumStatistic(StyleStatistic, Protocol):
    """A statistic with ``sum_over_positions = True``: Σ_p φ(F at p) / M."""

    def positions(self, term: Term, height: int, width: int) -> int: ...

    def partial_sum(
        self,
        features: dict[str, Tensor],
        term: Term,
        style: StyleConfig,
        window: Tensor | None = None,
        divisor: float = 0.0,
        grids: Grids = None,
    ) -> Tensor: ...

    def distance(self, value: Tensor, target: Any) -> Tensor: ...


def _registry() -> dict[str, StyleStatistic]:
    from neuralart.stats.distribution import GaussianW2, HistogramLoss, SlicedWasserstein
    from neuralart.stats.gram import GramFamily
    from neuralart.stats.patches import PatchMatching
    from neuralart.stats.threeway import ContentAwareGram, GramCube

    return {
        "gram": GramFamily(),
        "content-aware": ContentAwareGram(),
        "gram-cube": GramCube(),
        "mrf": PatchMatching(),
        "sliced-wasserstein": SlicedWasserstein(),
        "gaussian-w2": GaussianW2(),
        "histogram": HistogramLoss(),
    }


REGISTRY: dict[str, StyleStatistic] = _registry()


def statistic_for(style: StyleConfig) -> StyleStatistic:
    """The statistic a style configuration names; an unknown name is a one-line error."""
    found = REGISTRY.get(style.statistic)
    if found is None:
        close = difflib.get_close_matches(style.statistic, list(REGISTRY), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise NeuralartError(
            f"style.statistic: unknown statistic {style.statistic!r}{hint} "
            f"(known: {', '.join(REGISTRY)})"
        )
    return found


def check_style(style: StyleConfig) -> None:
    """The checks a statistic makes of the options that concern it (one-line errors)."""
    statistic = statistic_for(style)
    statistic.validate(style)
    if style.gradient_weighting != "none" and not statistic.supports_gradient_weighting:
        raise NeuralartError(
            f"style.gradient_weighting {style.gradient_weighting} works with statistics of "
            f"moments (the Gram kinds), not with statistic {style.statistic}"
        )


def style_terms(style: StyleConfig) -> list[Term]:
    """The terms of a style configuration (none when its weight is 0)."""
    return statistic_for(style).terms(style) if style.weight > 0 else []


def term_layers(terms: Sequence[Term]) -> list[str]:
    """Every layer the terms read, shallow to deep."""
    from neuralart.layers import by_depth

    return by_depth(name for term in terms for name in term.layers)
