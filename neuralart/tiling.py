"""The objective and its exact gradient, evaluated tile by tile (print sizes).

Every style statistic that is a sum over positions (``sum_over_positions``), the content
term and the TV term can be evaluated over parts of the picture and added up:

1. for each tile, extended by a halo wide enough that the features of its interior are
   those of the whole picture, run the network and add the interior's partial sums of
   every statistic (divided by the whole picture's M) and its content error;
2. form the loss from the sums, and its gradient with respect to each statistic;
3. for each tile again, back-propagate the statistic gradients contracted with the tile's
   partial sums, plus its content error, to the tile's pixels, halo included, and add
   that into the picture's gradient.

The last tile of the first pass keeps its graph, so the second pass starts with it and
recomputes one tile fewer. A statistic whose loss is itself a sum of local terms given
its target (CNN-MRF, ``local``) needs one pass: each tile's share of the loss is
back-propagated at once. Only one tile's activations are alive at a time. Exactness needs
the tiles' origins on the coarsest pooling grid and a halo of at least the deepest
layer's receptive radius (:func:`neuralart.tiles.halo_for`); a smaller halo trades
exactness for speed.
"""

from __future__ import annotations

import typing
from collections.abc import Callable

import torch
from torch import Tensor

from neuralart.errors import NeuralartError
from neuralart.layers import LAYERS
from neuralart.losses import Objective, tv_loss
from neuralart.statistics import window_map
from neuralart.stats import LocalStatistic, SumStatistic
from neuralart.tiles import Tile, pair_layers, tile_grids
from neuralart.weighting import reweight_gradient

# Called as a tile is done: (tiles done in this evaluation, tiles it takes in all).
TileCallback = Callable[[int, int], None]


def _on_tile(global_map: Tensor, tile: Tile, layer: str, like: Tensor) -> Tensor:
    """The part of a whole-picture map of ``layer`` that lies under the tile's maps."""
    scale = 2 ** LAYERS[layer].pools_before
    ey0, ex0 = tile.extended[0] // scale, tile.extended[2] // scale
    h, w = like.shape[-2:]
    return global_map[..., ey0 : ey0 + h, ex0 : ex0 + w]


class TiledObjective:
    """The value and gradient of an :class:`Objective` over tiles of the picture (an
    evaluator for :func:`neuralart.optimize.run_lbfgs`)."""

    def __init__(
        self, objective: Objective, tiles: list[Tile], on_tile: TileCallback | None = None
    ) -> None:
        statistic = objective.statistic
        if objective.style_terms and not (statistic.sum_over_positions or statistic.local):
            raise NeuralartError(
                f"statistic {objective.style.statistic} is neither a sum over positions nor "
                "local; it cannot be evaluated tile by tile"
            )
        if objective.content_blocks is not None and objective.content_blocks.tiles != tiles:
            raise ValueError("the content targets were kept for other tiles")
        self.objective = objective
        self.tiles = tiles
        self.on_tile = on_tile
        self.local = bool(objective.style_terms) and statistic.local

    @property
    def passes(self) -> int:
        """Tile evaluations per iteration."""
        if self.local or not self.objective.style_terms:
            return len(self.tiles)
        return 2 * len(self.tiles) - 1

    def _style_features(self, feats: dict[str, Tensor], tile: Tile) -> dict[str, Tensor]:
        weights = self.objective.gradient_weights
        return {
            name: reweight_gradient(f, _on_tile(weights[name], tile, name, f))
            if name in weights
            else f
            for name, f in feats.items()
        }

    def _content(self, feats: dict[str, Tensor], index: int, height: int, width: int) -> Tensor:
        """The share of tile ``index`` in the content term (unweighted)."""
        obj = self.objective
        tile = self.tiles[index]
        content = obj.zero()
        blocks = obj.content_blocks
        here = blocks.get(index, obj.device) if blocks is not None else {}
        for name, weight in obj.content_terms:
            part = tile.part(name, height, width)
            if blocks is not None:
                target, count = here[name], blocks.numel[name]
            else:
                y0, y1, x0, x1 = part.interior
                whole = obj.content_targets[name]
                target, count = whole[..., y0:y1, x0:x1], whole.numel()
            diff = feats[name][(..., *part.cells())] - target
            content = content + weight * diff.pow(2).sum() / count
        return content

    def _sums(
        self, feats: dict[str, Tensor], tile: Tile, height: int, width: int
    ) -> dict[str, Tensor]:
        """The tile's partial sums of every style statistic."""
        obj = self.objective
        statistic = typing.cast(SumStatistic, obj.statistic)
        style_feats = self._style_features(feats, tile)
        grids = tile_grids(pair_layers(obj.style_terms), tile, feats, height, width)
        sums = {}
        for term in obj.style_terms:
            part = tile.part(term.layers[0], height, width)
            cells = window_map(feats[term.layers[0]], *part.cells())
            sums[term.label] = statistic.partial_sum(
                style_feats,
                term,
                obj.style,
                window=cells,
                divisor=statistic.positions(term, height, width),
                grids=grids,
            )
        return sums

    def _local_style(self, feats: dict[str, Tensor], tile: Tile, height: int, width: int) -> Tensor:
        """The tile's share of the style term of a local statistic (unweighted)."""
        obj = self.objective
        statistic = typing.cast(LocalStatistic, obj.statistic)
        total = obj.zero()
        for term in obj.style_terms:
            part = tile.part(term.layers[0], height, width)
            target = obj.style_targets[term.label]
            total = total + term.weight * statistic.partial_loss(
                feats, term, target, obj.style, part
            )
        return total

    def _tile_done(self, done: int) -> int:
        if self.on_tile is not None:
            self.on_tile(done + 1, self.passes)
        return done + 1

    def _run(self, x: Tensor, tile: Tile) -> tuple[Tensor, dict[str, Tensor]]:
        ey0, ey1, ex0, ex1 = tile.extended
        pixels = x[..., ey0:ey1, ex0:ex1].clone().requires_grad_(torch.is_grad_enabled())
        return pixels, self.objective.network(pixels, self.objective.layers)

    def value(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """(unweighted terms, total) at ``x``, without a gradient: one pass."""
        terms, total, _ = self._evaluate(x, gradient=False)
        return terms, total

    def value_and_grad(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """(unweighted terms, total, gradient) at the picture ``x`` (network space)."""
        terms, total, grad = self._evaluate(x, gradient=True)
        assert grad is not None
        return terms, total, grad

    def _evaluate(
        self, x: Tensor, gradient: bool
    ) -> tuple[dict[str, Tensor], Tensor, Tensor | None]:
        obj = self.objective
        x = x.detach()
        leaf = x.detach().requires_grad_(gradient)  # the TV term's input (no copy)
        terms: dict[str, Tensor] = {}
        with torch.set_grad_enabled(gradient):
            if obj.tv_weight > 0:
                terms["tv"] = tv_loss(leaf, obj.pixel_scale)
        if self.local or not obj.style_terms:
            return self._one_pass(x, leaf, terms, gradient)
        return self._two_passes(x, leaf, terms, gradient)

    def _one_pass(
        self, x: Tensor, leaf: Tensor, terms: dict[str, Tensor], gradient: bool
    ) -> tuple[dict[str, Tensor], Tensor, Tensor | None]:
        """Content, TV and a local statistic: each tile's share back-propagated at once."""
        obj = self.objective
        height, width = x.shape[-2:]
        grad = torch.zeros_like(x) if gradient else None
        if "tv" in terms and grad is not None:
            (grad,) = torch.autograd.grad(obj.tv_weight * terms["tv"], leaf)
        content = x.new_zeros(())
        style = x.new_zeros(())
        done = 0
        for index, tile in enumerate(self.tiles):
            with torch.set_grad_enabled(gradient):
                pixels, feats = self._run(x, tile)
                share = x.new_zeros(())
                if obj.content_terms:
                    part = self._content(feats, index, height, width)
                    content = content + part.detach()
                    share = share + obj.content_weight * part
                if obj.style_terms:
                    part = self._local_style(feats, tile, height, width)
                    style = style + part.detach()
                    share = share + obj.style_weight * part
            if grad is not None and share.requires_grad:
                (piece,) = torch.autograd.grad(share, pixels)
                ey0, ey1, ex0, ex1 = tile.extended
                grad[..., ey0:ey1, ex0:ex1] += piece
            del feats, pixels, share
            done = self._tile_done(done)
        if obj.content_terms:
            terms["content"] = content
        if obj.style_terms:
            terms["style"] = style
        ordered: dict[str, Tensor] = {
            key: terms[key] for key in ("content", "style", "tv") if key in terms
        }
        total = obj.total(ordered).detach()
        return {key: value.detach() for key, value in ordered.items()}, total, grad

    def _two_passes(
        self, x: Tensor, leaf: Tensor, terms: dict[str, Tensor], gradient: bool
    ) -> tuple[dict[str, Tensor], Tensor, Tensor | None]:
        obj = self.objective
        height, width = x.shape[-2:]
        sums: dict[str, Tensor] = {}
        content = x.new_zeros(())
        kept: tuple[Tile, Tensor, dict[str, Tensor], Tensor] | None = None
        done = 0
        for index, tile in enumerate(self.tiles):  # pass 1: the whole picture's statistics
            last = gradient and index == len(self.tiles) - 1
            with torch.set_grad_enabled(last):
                pixels, feats = self._run(x, tile)
                local = self._sums(feats, tile, height, width)
                error = self._content(feats, index, height, width)
            for label, value in local.items():
                value = value.detach()
                sums[label] = value if label not in sums else sums[label] + value
            content = content + error.detach()
            if last:  # its graph serves the second pass
                kept = (tile, pixels, local, error)
            del feats, pixels, local, error
            done = self._tile_done(done)
        stats = {label: value.requires_grad_(gradient) for label, value in sums.items()}
        statistic = typing.cast(SumStatistic, obj.statistic)
        with torch.set_grad_enabled(gradient):
            if obj.content_terms:
                terms["content"] = content
            terms["style"] = sum(
                (
                    t.weight * statistic.distance(stats[t.label], obj.style_targets[t.label])
                    for t in obj.style_terms
                ),
                x.new_zeros(()),
            )
            ordered: dict[str, Tensor] = {
                key: terms[key] for key in ("content", "style", "tv") if key in terms
            }
            total = obj.total(ordered)
        detached = {key: value.detach() for key, value in ordered.items()}
        if not gradient:
            return detached, total.detach(), None
        inputs = [stats[t.label] for t in obj.style_terms]
        with_tv = "tv" in terms
        grads = torch.autograd.grad(
            total, [*inputs, *([leaf] if with_tv else [])], allow_unused=True
        )
        grad = grads[-1] if with_tv else torch.zeros_like(x)
        upstream = dict(zip((t.label for t in obj.style_terms), grads[: len(inputs)], strict=True))
        del stats, inputs, grads
        # pass 2: each tile's share, back to its pixels; the kept tile first
        for index in reversed(range(len(self.tiles))):
            tile = self.tiles[index]
            if kept is not None:
                _, pixels, local, error = kept
                kept = None
            else:
                with torch.enable_grad():
                    pixels, feats = self._run(x, tile)
                    local = self._sums(feats, tile, height, width)
                    error = self._content(feats, index, height, width)
                del feats
            with torch.enable_grad():
                share = obj.content_weight * error if obj.content_terms else obj.zero()
                for label, value in local.items():
                    if upstream[label] is not None:
                        share = share + (upstream[label] * value).sum()
            (piece,) = torch.autograd.grad(share, pixels)
            ey0, ey1, ex0, ex1 = tile.extended
            grad[..., ey0:ey1, ex0:ex1] += piece
            del pixels, local, error, share, piece
            if index < len(self.tiles) - 1:
                done = self._tile_done(done)
        return detached, total.detach(), grad
