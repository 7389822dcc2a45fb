"""The objective and its exact gradient, evaluated tile by tile (groundwork for print sizes).

Every style statistic that is a sum over positions (``sum_over_positions``), the content
term and the TV term can be evaluated over parts of the picture and added up:

1. for each tile, extended by a halo wide enough that the features of its interior are
   those of the whole picture, run the network and add the interior's partial sums of
   every statistic (divided by the whole picture's M) and its content error;
2. form the loss from the sums, and its gradient with respect to each statistic;
3. for each tile again, back-propagate the statistic gradients contracted with the tile's
   partial sums, plus its content error, to the tile's pixels, halo included, and add
   that into the picture's gradient.

Only one tile's activations are alive at a time. Exactness needs the tiles' origins on
the coarsest pooling grid and a halo of at least the deepest layer's receptive radius;
:func:`halo_for` gives it. The cross-layer statistics resample between grids with the
whole picture's ``floor(i·small/large)`` (docs/method.md §3.4), which is not local where
a pool floored an odd size: each tile is given that mapping for its own rows and
columns (:func:`tile_grids`).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

import torch
from torch import Tensor

from neuralart.errors import NeuralartError
from neuralart.layers import LAYER_NAMES, LAYERS
from neuralart.losses import Objective, tv_loss
from neuralart.statistics import nearest_index
from neuralart.stats import SumStatistic
from neuralart.weighting import reweight_gradient


def receptive_radius(layer: str) -> int:
    """Pixels on each side of a position that the layer's value there depends on: each
    3×3 convolution adds one cell of its own grid."""
    index = LAYERS[layer].index
    return sum(2 ** LAYERS[name].pools_before for name in LAYER_NAMES[: index + 1])


def halo_for(layers: list[str]) -> tuple[int, int]:
    """(halo, alignment) in pixels for an objective reading ``layers``.

    The alignment is the coarsest grid's cell; the halo covers the deepest layer's
    receptive radius plus one cell of that grid (the blur and the adjacent offsets read
    a neighbouring cell), rounded up to the alignment.
    """
    deepest = max(layers, key=lambda n: LAYERS[n].index)
    align = 2 ** LAYERS[deepest].pools_before
    need = receptive_radius(deepest) + align
    return -(-need // align) * align, align


@dataclass(frozen=True)
class Tile:
    """A part of the picture: its interior (summed here) and the extended region the
    network runs on, both (y0, y1, x0, x1) in pixels."""

    interior: tuple[int, int, int, int]
    extended: tuple[int, int, int, int]


def plan_tiles(height: int, width: int, tile: int, layers: list[str]) -> list[Tile]:
    """Interiors of about ``tile`` pixels on the alignment grid, each with its halo."""
    halo, align = halo_for(layers)
    if tile < align or tile % align:
        raise NeuralartError(f"the tile size must be a multiple of {align} px, got {tile}")

    def spans(total: int) -> list[tuple[int, int, int, int]]:
        out = []
        for start in range(0, total, tile):
            end = min(total, start + tile)
            out.append((start, end, max(0, start - halo), min(total, end + halo)))
        return out

    return [
        Tile((y0, y1, x0, x1), (ey0, ey1, ex0, ex1))
        for y0, y1, ey0, ey1 in spans(height)
        for x0, x1, ex0, ex1 in spans(width)
    ]


def _cells(tile: Tile, layer: str) -> tuple[slice, slice, slice, slice]:
    """On a layer's grid: the interior within the tile's maps, and within the picture's."""
    scale = 2 ** LAYERS[layer].pools_before
    y0, y1, x0, x1 = (v // scale for v in tile.interior)
    ey0, _, ex0, _ = (v // scale for v in tile.extended)
    local = (slice(y0 - ey0, y1 - ey0), slice(x0 - ex0, x1 - ex0))
    return (*local, slice(y0, y1), slice(x0, x1))


def _on_tile(global_map: Tensor, tile: Tile, layer: str, like: Tensor) -> Tensor:
    """The part of a whole-picture map of ``layer`` that lies under the tile's maps."""
    scale = 2 ** LAYERS[layer].pools_before
    ey0, ex0 = tile.extended[0] // scale, tile.extended[2] // scale
    h, w = like.shape[-2:]
    return global_map[..., ey0 : ey0 + h, ex0 : ex0 + w]


def tile_grids(
    pairs: set[tuple[str, str]], tile: Tile, feats: dict[str, Tensor], height: int, width: int
) -> dict[tuple[str, str], tuple[Tensor, Tensor]]:
    """For each (layer, other layer) pair on different grids, the cells of the other's
    tile map that each row and column of the layer's tile map reads, under the whole
    picture's nearest mapping. Cells that fall outside the tile lie in its halo, where
    nothing is summed; they are clamped."""
    out = {}
    for big, small in pairs:
        one, other = LAYERS[big], LAYERS[small]
        if one.pools_before == other.pools_before:
            continue
        index = []
        for axis, start in ((0, tile.extended[0]), (1, tile.extended[2])):
            size_one = one.grid(height, width)[axis]
            size_other = other.grid(height, width)[axis]
            local_one = feats[big].shape[-2 + axis]
            local_other = feats[small].shape[-2 + axis]
            first_one, first_other = start >> one.pools_before, start >> other.pools_before
            mapping = nearest_index(size_one, size_other, feats[big].device)
            mapping = mapping[first_one : first_one + local_one] - first_other
            index.append(mapping.clamp(0, local_other - 1))
        out[(big, small)] = (index[0], index[1])
    return out


def _window(feature: Tensor, rows: slice, cols: slice) -> Tensor:
    window = feature.new_zeros(1, 1, *feature.shape[-2:])
    window[..., rows, cols] = 1.0
    return window


class TiledObjective:
    """The value and gradient of an :class:`Objective` over tiles of the picture."""

    def __init__(self, objective: Objective, tiles: list[Tile]) -> None:
        if objective.style_terms and not objective.statistic.sum_over_positions:
            raise NeuralartError(
                f"statistic {objective.style.statistic} is not a sum over positions; "
                "it cannot be evaluated tile by tile yet"
            )
        self.objective = objective
        self.tiles = tiles

    def _local(
        self, feats: dict[str, Tensor], tile: Tile, height: int, width: int
    ) -> tuple[dict[str, Tensor], Tensor]:
        """The tile's partial sums of every style statistic, and its content error."""
        obj = self.objective
        style_feats = {
            name: reweight_gradient(f, _on_tile(obj.gradient_weights[name], tile, name, f))
            if name in obj.gradient_weights
            else f
            for name, f in feats.items()
        }
        statistic = typing.cast(SumStatistic, obj.statistic)
        pairs = {(t.layers[0], t.layers[1]) for t in obj.style_terms if len(t.layers) > 1}
        grids = tile_grids(pairs, tile, feats, height, width)
        sums = {}
        for term in obj.style_terms:
            first = term.layers[0]
            rows, cols, _, _ = _cells(tile, first)
            window = _window(feats[first], rows, cols)
            positions = statistic.positions(term, height, width)
            sums[term.label] = statistic.partial_sum(
                style_feats, term, obj.style, window=window, divisor=positions, grids=grids
            )
        content = feats[next(iter(feats))].new_zeros(())
        for name, weight in obj.content_terms:
            rows, cols, grows, gcols = _cells(tile, name)
            target = obj.content_targets[name]
            diff = feats[name][..., rows, cols] - target[..., grows, gcols]
            content = content + weight * diff.pow(2).sum() / target.numel()
        return sums, content

    def value_and_grad(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """(unweighted terms, total, gradient) at the picture ``x`` (network space)."""
        obj = self.objective
        height, width = x.shape[-2:]
        x = x.detach()
        sums: dict[str, Tensor] = {}
        content = x.new_zeros(())
        with torch.no_grad():  # pass 1: the statistics of the whole picture
            for tile in self.tiles:
                ey0, ey1, ex0, ex1 = tile.extended
                feats = obj.network(x[..., ey0:ey1, ex0:ex1], obj.layers)
                local, error = self._local(feats, tile, height, width)
                for label, value in local.items():
                    sums[label] = value if label not in sums else sums[label] + value
                content = content + error
                del feats
        # The loss from the sums, and its gradient with respect to each statistic.
        stats = {label: value.requires_grad_(True) for label, value in sums.items()}
        terms: dict[str, Tensor] = {}
        if obj.content_terms:
            terms["content"] = content
        if obj.style_terms:
            terms["style"] = sum(
                (
                    t.weight
                    * torch.nn.functional.mse_loss(stats[t.label], obj.style_targets[t.label])
                    for t in obj.style_terms
                ),
                x.new_zeros(()),
            )
        leaf = x.clone().requires_grad_(True)
        if obj.tv_weight > 0:
            terms["tv"] = tv_loss(leaf, obj.pixel_scale)
        total = obj.total(terms)
        inputs = [stats[t.label] for t in obj.style_terms]
        grads = torch.autograd.grad(total, [*inputs, leaf], allow_unused=True)
        grad = grads[-1] if grads[-1] is not None else torch.zeros_like(x)
        upstream = dict(zip((t.label for t in obj.style_terms), grads[:-1], strict=True))
        # pass 2: each tile's share, back to its pixels
        for tile in self.tiles:
            ey0, ey1, ex0, ex1 = tile.extended
            pixels = x[..., ey0:ey1, ex0:ex1].clone().requires_grad_(True)
            feats = obj.network(pixels, obj.layers)
            local, error = self._local(feats, tile, height, width)
            share = obj.content_weight * error if obj.content_terms else pixels.new_zeros(())
            for label, value in local.items():
                share = share + (upstream[label] * value).sum()
            (piece,) = torch.autograd.grad(share, pixels)
            grad[..., ey0:ey1, ex0:ex1] += piece
            del feats, local
        detached = {key: value.detach() for key, value in terms.items()}
        return detached, total.detach(), grad
