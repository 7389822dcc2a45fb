"""VGG-19's sixteen convolutional layers, described once (docs/method.md §1). No torch import.

Every other module asks this one for a layer's block, channel count, the pools in front of
it and the size of its map, instead of reading them out of the name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Layer:
    """One convolution of VGG-19, named by its post-ReLU output (``conv4_2``)."""

    name: str
    index: int  # 0..15, shallow to deep
    block: int  # 1..5
    channels: int
    pools_before: int  # 2×2 pools between the picture and this layer (block - 1)
    pool_after: bool  # the last convolution of blocks 1-4 is followed by a pool

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of this layer's map for a (height, width) picture: each pool floors a half."""
        return max(1, height >> self.pools_before), max(1, width >> self.pools_before)

    def entries(self, height: int, width: int) -> int:
        """Numbers in this layer's map (one picture) for a (height, width) picture."""
        h, w = self.grid(height, width)
        return self.channels * h * w


_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 4, 256), (4, 4, 512), (5, 4, 512))  # block, convs, C

LAYERS: dict[str, Layer] = {}
for _block, _count, _channels in _BLOCKS:
    for _i in range(1, _count + 1):
        _name = f"conv{_block}_{_i}"
        LAYERS[_name] = Layer(
            name=_name,
            index=len(LAYERS),
            block=_block,
            channels=_channels,
            pools_before=_block - 1,
            pool_after=_i == _count and _block < 5,
        )

LAYER_NAMES: tuple[str, ...] = tuple(LAYERS)


def expand_layers(value: tuple[str, ...] | str) -> tuple[str, ...]:
    """``all`` (or ``[all]``) -> the 16 layers; otherwise the list itself."""
    if value == "all" or tuple(value) == ("all",):
        return LAYER_NAMES
    return tuple(value)


def by_depth(names: Iterable[str]) -> list[str]:
    """Distinct layer names, shallow to deep."""
    return sorted(set(names), key=lambda n: LAYERS[n].index)


def deepest(names: Iterable[str]) -> str | None:
    """The deepest of the named layers (None for none): how far the network must run."""
    found = by_depth(names)
    return found[-1] if found else None


def geometric_weights(count: int, role: str) -> list[float]:
    """Paper §3.1, by depth rank d = 1..D: style 2^(D−d), content 2^d (unnormalised)."""
    if role == "style":
        return [2.0 ** (count - d) for d in range(1, count + 1)]
    return [2.0**d for d in range(1, count + 1)]


def normalised_weights(count: int, weighting: str, role: str) -> list[float]:
    """Per-layer weights for ``count`` layers (or pairs) by depth rank, summing to 1."""
    raw = [1.0] * count if weighting == "uniform" else geometric_weights(count, role)
    total = sum(raw)
    return [w / total for w in raw]


# The fewest pixels on a side of a picture the network accepts: four pools leave one cell.
MIN_EDGE = 16
