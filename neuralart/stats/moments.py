"""What every statistic that is a sum over positions shares (the Gram kinds)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from neuralart.layers import LAYERS, MIN_EDGE
from neuralart.stats import Grids, Memory, Part, Term

if TYPE_CHECKING:
    from PIL import Image
    from torch import Tensor

    from neuralart.config import StyleConfig


class MomentStatistic:
    """A statistic Σ_p φ(F at p) / M over the positions p of the first layer's grid.

    Subclasses give :meth:`partial_sum` and :meth:`memory`; the target of one style
    image is its statistic, several style images blend linearly, and the loss is the
    mean squared difference of the statistics.
    """

    name = ""
    sum_over_positions = True
    local = False
    supports_gradient_weighting = True

    def validate(self, style: StyleConfig) -> None:
        """No options of its own to check."""

    def terms(self, style: StyleConfig) -> list[Term]:
        raise NotImplementedError

    def min_edge(self, style: StyleConfig) -> int:
        return MIN_EDGE

    def style_copies(
        self, image: Image.Image, style: StyleConfig
    ) -> list[tuple[Image.Image, float]]:
        return [(image, 1.0)]

    def positions(self, term: Term, height: int, width: int) -> int:
        """M: the positions summed over, on the first layer's grid of a picture."""
        h, w = LAYERS[term.layers[0]].grid(height, width)
        return h * w

    def partial_sum(
        self,
        features: dict[str, Tensor],
        term: Term,
        style: StyleConfig,
        window: Tensor | None = None,
        divisor: float = 0.0,
        grids: Grids = None,
    ) -> Tensor:
        """Σ over the positions inside ``window`` (a (1, 1, H, W) map of 0 and 1 on the
        first layer's grid; None: all) divided by ``divisor`` (0: the positions of these
        maps). Without either it is the statistic itself. ``grids``: how the maps of a
        part of the picture resample between layers (see :data:`neuralart.stats.Grids`)."""
        raise NotImplementedError

    def target(self, features: dict[str, Tensor], term: Term, style: StyleConfig) -> Any:
        return self.partial_sum(features, term, style).detach()

    def partial_target(
        self,
        features: dict[str, Tensor],
        term: Term,
        style: StyleConfig,
        part: Part,
        grids: Grids = None,
    ) -> Any:
        """A tile's share of the target: the sum over its interior, divided by the whole
        picture's M; the shares of a picture's tiles :meth:`join` into its target."""
        from neuralart.statistics import window_map

        rows, columns = part.grid
        cells = window_map(features[term.layers[0]], *part.cells())
        return self.partial_sum(
            features, term, style, window=cells, divisor=rows * columns, grids=grids
        ).detach()

    def join(self, parts: Sequence[Any]) -> Any:
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total

    def distance(self, value: Tensor, target: Any) -> Tensor:
        """The loss of a statistic's value against its target."""
        import torch.nn.functional as F

        return F.mse_loss(value, target)

    def combine(self, targets: Sequence[Any], weights: Sequence[float]) -> Any:
        total = None
        for target, weight in zip(targets, weights, strict=True):
            part = target * weight
            total = part if total is None else total + part
        return total

    def loss(
        self, features: dict[str, Tensor], term: Term, target: Any, style: StyleConfig
    ) -> Tensor:
        return self.distance(self.partial_sum(features, term, style), target)

    def memory(self, style: StyleConfig, term: Term, height: int, width: int) -> Memory:
        raise NotImplementedError
