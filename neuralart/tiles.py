"""Tiles of a picture for the network: plans, and whole maps and style targets built tile by
tile (print sizes; the objective over tiles is :mod:`neuralart.tiling`).

A tile is an interior (the part of the picture it answers for) and an extended region:
the interior grown by a halo on every side where the picture continues. The network runs
on the extended region; the features of the interior are the whole picture's when the
halo covers the deepest layer's receptive radius and the tiles' origins lie on the
coarsest pooling grid (:func:`halo_for`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from neuralart.errors import NeuralartError
from neuralart.layers import LAYER_NAMES, LAYERS
from neuralart.stats import Grids, Part, StyleStatistic, Term

if TYPE_CHECKING:
    from torch import Tensor

    from neuralart.config import StyleConfig


def receptive_radius(layer: str) -> int:
    """Pixels on each side of a position that the layer's value there depends on: each
    3×3 convolution adds one cell of its own grid."""
    index = LAYERS[layer].index
    return sum(2 ** LAYERS[name].pools_before for name in LAYER_NAMES[: index + 1])


def alignment(layers: Sequence[str]) -> int:
    """The coarsest grid's cell in pixels: where tiles may start."""
    return max((2 ** LAYERS[name].pools_before for name in layers), default=1)


def halo_for(layers: Sequence[str], margin: int = 0) -> tuple[int, int]:
    """(exact halo, alignment) in pixels for an objective reading ``layers``.

    The halo covers the deepest layer's receptive radius plus one cell of the coarsest
    grid (the blur and the adjacent offsets read a neighbouring cell) or ``margin``
    pixels if more (a patch reaching past the interior), rounded up to the alignment.
    """
    deepest = max(layers, key=lambda n: LAYERS[n].index)
    align = alignment(layers)
    need = receptive_radius(deepest) + max(align, margin)
    return -(-need // align) * align, align


@dataclass(frozen=True)
class Tile:
    """A part of the picture: its interior (summed here) and the extended region the
    network runs on, both (y0, y1, x0, x1) in pixels."""

    interior: tuple[int, int, int, int]
    extended: tuple[int, int, int, int]

    def part(self, layer: str, height: int, width: int) -> Part:
        """This tile on ``layer``'s grid of a ``height`` × ``width`` picture."""
        scale = 2 ** LAYERS[layer].pools_before
        y0, y1, x0, x1 = (v // scale for v in self.interior)
        return Part(
            (self.extended[0] // scale, self.extended[2] // scale),
            (y0, y1, x0, x1),
            LAYERS[layer].grid(height, width),
        )


def plan_tiles(height: int, width: int, size: tuple[int, int], halo: int) -> list[Tile]:
    """Interiors of ``size`` (rows, columns) pixels, the last of a row or column shorter,
    each with ``halo`` pixels around it where the picture continues."""

    def spans(total: int, step: int) -> list[tuple[int, int, int, int]]:
        return [
            (start, min(total, start + step), max(0, start - halo), min(total, start + step + halo))
            for start in range(0, total, step)
        ]

    return [
        Tile((y0, y1, x0, x1), (ey0, ey1, ex0, ex1))
        for y0, y1, ey0, ey1 in spans(height, size[0])
        for x0, x1, ex0, ex1 in spans(width, size[1])
    ]


def check_tile(tile: int, align: int) -> None:
    """A tile size must be a positive multiple of the alignment (one-line error)."""
    if tile < align or tile % align:
        lower = max(align, tile // align * align)
        raise NeuralartError(
            f"--tile {tile}: tiles must be a multiple of {align} px for this configuration "
            f"(its deepest layer sits behind {int(math.log2(align))} pools); try {lower} or "
            f"{lower + align}"
        )


def _spans(total: int, step: int, halo: int) -> tuple[int, int]:
    """(sum, largest) of the extended lengths of the spans of ``step`` along ``total``."""
    lengths = [
        min(total, start + step + halo) - max(0, start - halo) for start in range(0, total, step)
    ]
    return sum(lengths), max(lengths)


def _steps(total: int, align: int) -> list[int]:
    """Each distinct span length (a multiple of ``align``) that cuts ``total`` into 1, 2,
    3, ... spans, the longest first."""
    out: list[int] = []
    for count in range(1, -(-total // align) + 1):
        share = -(-total // count)  # the picture's side over count, rounded up
        step = min(total, -(-share // align) * align)
        if not out or step < out[-1]:
            out.append(step)
    return out


def largest_extent(height: int, width: int, size: tuple[int, int], halo: int) -> tuple[int, int]:
    """(rows, columns) of the largest extended region of a plan's tiles."""
    return _spans(height, size[0], halo)[1], _spans(width, size[1], halo)[1]


def plan_cost(height: int, width: int, size: tuple[int, int], halo: int) -> tuple[int, int]:
    """(pixels the network runs on over all tiles, pixels of the largest extended tile)."""
    sum_y, max_y = _spans(height, size[0], halo)
    sum_x, max_x = _spans(width, size[1], halo)
    return sum_y * sum_x, max_y * max_x


def cheapest_plan(
    height: int, width: int, halo: int, align: int, fits: Callable[[int, int], bool]
) -> tuple[int, int] | None:
    """The interior shape (rows, columns) whose tiles cost least in all (pixels the network
    runs on) among those whose largest tile ``fits`` (a test on the pixels of its
    extended region and of its interior); None if none does."""
    rows = [(step, *_spans(height, step, halo)) for step in _steps(height, align)]
    cols = [(step, *_spans(width, step, halo)) for step in _steps(width, align)]
    best: tuple[int, tuple[int, int]] | None = None
    for step_y, sum_y, max_y in rows:
        for step_x, sum_x, max_x in cols:
            if (best is None or sum_y * sum_x < best[0]) and fits(max_y * max_x, step_y * step_x):
                best = (sum_y * sum_x, (step_y, step_x))
    return best[1] if best is not None else None


# ----------------------------------------------------------------- whole maps, tile by tile


def tile_grids(
    pairs: set[tuple[str, str]], tile: Tile, feats: dict[str, Tensor], height: int, width: int
) -> Grids:
    """For each (layer, other layer) pair on different grids, the cells of the other's
    tile map that each row and column of the layer's tile map reads, under the whole
    picture's nearest mapping (docs/method.md §3.4). Cells that fall outside the tile lie
    in its halo, where nothing is summed; they are clamped."""
    import torch

    from neuralart.statistics import nearest_index

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
        # Where the whole picture's mapping is the tile maps' own (no pool floored an odd
        # size), none is given: the statistics keep their faster path for regular grids.
        local = [
            nearest_index(feats[big].shape[-2 + axis], feats[small].shape[-2 + axis])
            for axis in (0, 1)
        ]
        if not all(torch.equal(a.cpu(), b) for a, b in zip(index, local, strict=True)):
            out[(big, small)] = (index[0], index[1])
    return out


Network = Callable[..., dict[str, "Tensor"]]


def whole_maps(network: Network, image: Tensor, layers: Sequence[str], tiles: list[Tile]) -> dict:
    """The feature maps of ``image`` at ``layers``, assembled from the tiles' interiors:
    equal to the network's maps of the whole image, with one tile's stack alive at once."""
    import torch

    height, width = image.shape[-2:]
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        for tile in tiles:
            ey0, ey1, ex0, ex1 = tile.extended
            feats = network(image[..., ey0:ey1, ex0:ex1], list(layers))
            for name, feature in feats.items():
                if name not in out:
                    rows, cols = LAYERS[name].grid(height, width)
                    out[name] = feature.new_empty(*feature.shape[:2], rows, cols)
                part = tile.part(name, height, width)
                y0, y1, x0, x1 = part.interior
                out[name][..., y0:y1, x0:x1] = feature[(..., *part.cells())]
            del feats
    return out


def pair_layers(terms: Sequence[Term]) -> set[tuple[str, str]]:
    return {(t.layers[0], t.layers[1]) for t in terms if len(t.layers) > 1}


def style_targets(
    network: Network,
    image: Tensor,
    statistic: StyleStatistic,
    terms: Sequence[Term],
    style: StyleConfig,
    tiles: list[Tile],
) -> dict[str, Any]:
    """Each term's target from one style image, built tile by tile: the tiles' parts of
    the statistic (or of the patch bank) joined into the whole image's."""
    import torch

    height, width = image.shape[-2:]
    layers = sorted({n for t in terms for n in t.layers}, key=lambda n: LAYERS[n].index)
    parts: dict[str, list[Any]] = {t.label: [] for t in terms}
    with torch.no_grad():
        for tile in tiles:
            ey0, ey1, ex0, ex1 = tile.extended
            feats = network(image[..., ey0:ey1, ex0:ex1], layers)
            grids = tile_grids(pair_layers(terms), tile, feats, height, width)
            for term in terms:
                part = tile.part(term.layers[0], height, width)
                parts[term.label].append(statistic.partial_target(feats, term, style, part, grids))
            del feats
    return {label: statistic.join(pieces) for label, pieces in parts.items()}


class TileMaps:
    """Whole-picture maps kept as each tile's interior block: the content targets of a
    tiled run. In memory, or (``spill``) in an unnamed temporary file that the system
    deletes when it is closed, so that a print-size picture's maps of every layer need
    no more memory than one tile's blocks."""

    def __init__(self, tiles: list[Tile], spill: bool = False) -> None:
        self.tiles = tiles
        self.spill = spill
        self._blocks: dict[int, dict[str, Tensor]] = {}
        self._where: dict[int, list[tuple[str, tuple[int, ...], int]]] = {}
        self._file: Any = None
        self._end = 0
        self.numel: dict[str, int] = {}  # entries of each layer's whole map

    def put(self, index: int, maps: dict[str, Tensor]) -> None:
        """Keep tile ``index``'s blocks."""
        for name, block in maps.items():
            self.numel[name] = self.numel.get(name, 0) + block.numel()
        if not self.spill:
            self._blocks[index] = {name: block.clone() for name, block in maps.items()}
            return
        import tempfile

        if self._file is None:
            # Closed by close(), or when the store is collected.
            self._file = tempfile.TemporaryFile(prefix="neuralart-")  # noqa: SIM115
        where = []
        for name, block in maps.items():
            data = block.detach().float().cpu().contiguous().numpy()
            self._file.seek(self._end)
            self._file.write(data.tobytes())
            where.append((name, tuple(data.shape), self._end))
            self._end += data.nbytes
        self._where[index] = where

    def get(self, index: int, device: Any) -> dict[str, Tensor]:
        """Tile ``index``'s blocks, on ``device``."""
        if not self.spill:
            return self._blocks[index]
        import math

        import torch

        out = {}
        for name, shape, offset in self._where[index]:
            data = bytearray(4 * math.prod(shape))
            self._file.seek(offset)
            if self._file.readinto(data) != len(data):
                raise OSError("the temporary file of the content targets was cut short")
            out[name] = torch.frombuffer(data, dtype=torch.float32).view(shape).to(device)
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __del__(self) -> None:
        self.close()


def tile_maps(
    network: Network, image: Tensor, layers: Sequence[str], tiles: list[Tile], spill: bool
) -> TileMaps:
    """The feature maps of ``image`` at ``layers``, kept as each tile's interior block."""
    import torch

    height, width = image.shape[-2:]
    store = TileMaps(tiles, spill)
    with torch.no_grad():
        for index, tile in enumerate(tiles):
            ey0, ey1, ex0, ex1 = tile.extended
            feats = network(image[..., ey0:ey1, ex0:ex1], list(layers))
            store.put(
                index,
                {
                    name: feature[(..., *tile.part(name, height, width).cells())]
                    for name, feature in feats.items()
                },
            )
            del feats
    return store
