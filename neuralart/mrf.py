"""The CNN-MRF style energy of Li & Wand (2016), as their code ran it (docs/method.md §6).

Every k×k×C patch of the synthesised features (on a stride grid) is matched to the
style patch with the highest normalised cross-correlation; the energy is the squared
distance to the matched patches. Matching is a convolution of the features with the
L2-normalised style patches, evaluated in chunks of style patches so that memory stays
bounded, and the match is held fixed for the gradient.

The bank keeps the style patches and their norms (not a normalised copy): each chunk is
normalised when it is used. A picture evaluated in tiles adds up :func:`partial_energy`
over tiles whose interiors partition the map, and builds a bank tile by tile with
:func:`partial_patches`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

# Bytes of scratch held at once while matching: one chunk of style patches' scores at
# every position, and that chunk normalised.
CHUNK_BYTES = 256 * 2**20


def extract_patches(features: Tensor, size: int = 3, stride: int = 1) -> Tensor:
    """(1, C, H, W) -> (P, C, size, size): every patch on a ``stride`` grid, row-major."""
    channels = features.shape[1]
    cols = F.unfold(features, kernel_size=size, stride=stride)  # (1, C·size², P)
    return cols[0].transpose(0, 1).reshape(-1, channels, size, size)


def patch_norms(patches: Tensor, eps: float = 1e-8) -> Tensor:
    """(P, C, k, k) -> (P,): each patch's L2 norm, at least ``eps``."""
    return patches.flatten(1).norm(dim=1).clamp_min(eps)


def normalise_patches(patches: Tensor, eps: float = 1e-8) -> Tensor:
    """Each patch divided by its L2 norm (a zero patch stays zero)."""
    return patches / patch_norms(patches, eps).view(-1, 1, 1, 1)


def _split_bank(bank: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """A bank's third part, either form: (norms, None) for (P,) norms, (None, normalised)
    for (P, C, k, k) normalised patches."""
    if bank.ndim == 1:
        return bank, None
    return None, bank


def match_patches(
    features: Tensor,
    patches: Tensor,
    norms: Tensor | None = None,
    *,
    stride: int = 2,
    chunk: int | None = None,
) -> Tensor:
    """For each patch of ``features`` (stride grid), the index of the best style patch.

    ``patches``: (P, C, k, k) style patches with ``norms`` their (P,) norms
    (:func:`patch_norms`), or, with ``norms`` None, patches already L2-normalised. The
    normalised cross-correlation of an x patch with style patch j is <x, s_j/|s_j|> / |x|;
    |x| is the same for every j, so the argmax needs only the convolution with the
    normalised patches, formed a chunk at a time. Returns (L,) indices, L the number of x
    patches in row-major order.
    """
    count, channels, size = patches.shape[0], patches.shape[1], patches.shape[-1]
    x = features.detach()
    out_h = (x.shape[-2] - size) // stride + 1
    out_w = (x.shape[-1] - size) // stride + 1
    positions = max(out_h, 0) * max(out_w, 0)
    if chunk is None:
        per_patch = positions + (channels * size * size if norms is not None else 0)
        chunk = max(1, CHUNK_BYTES // (4 * max(per_patch, 1)))
    best = torch.full((positions,), -math.inf, device=x.device, dtype=x.dtype)
    best_index = torch.zeros(positions, device=x.device, dtype=torch.long)
    if positions == 0:
        return best_index
    for start in range(0, count, chunk):
        bank = patches[start : start + chunk]
        if norms is not None:
            bank = bank / norms[start : start + chunk].view(-1, 1, 1, 1)
        bank = bank.to(x.dtype)
        scores = F.conv2d(x, bank, stride=stride)[0].reshape(bank.shape[0], -1)  # (c, L)
        value, index = scores.max(dim=0)
        better = value > best
        best = torch.where(better, value, best)
        best_index = torch.where(better, index + start, best_index)
    return best_index


def _squared_distance(
    features: Tensor, patches: Tensor, bank: Tensor, stride: int, chunk: int | None
) -> Tensor:
    """(L, C·k²): each x patch minus its matched style patch, squared (match held fixed)."""
    size = patches.shape[-1]
    norms, normalised = _split_bank(bank)
    if normalised is not None:
        index = match_patches(features, normalised, stride=stride, chunk=chunk)
    else:
        index = match_patches(features, patches, norms, stride=stride, chunk=chunk)
    cols = F.unfold(features, kernel_size=size, stride=stride)[0].transpose(0, 1)  # (L, C·k²)
    target = patches.flatten(1)[index]  # (L, C·k²)
    return (cols - target).pow(2)


def mrf_energy(
    features: Tensor,
    patches: Tensor,
    norms: Tensor,
    *,
    stride: int = 2,
    chunk: int | None = None,
) -> Tensor:
    """Mean squared distance of each x patch to its matched style patch.

    ``norms``: the (P,) norms of ``patches`` (:func:`patch_norms`), or their (P, C, k, k)
    normalised copy. The match is recomputed here (every evaluation) and treated as a
    constant.
    """
    return _squared_distance(features, patches, norms, stride, chunk).mean()


def _patch_starts(
    size: int, stride: int, origin: int, low: int, high: int, extent: int, length: int
) -> tuple[int, int]:
    """Along one axis: (first, count) of the whole map's patch starts in [low, high),
    ``first`` in the part's map (whose cell 0 is the whole map's cell ``origin``)."""
    last = min(high - 1, extent - size)
    first = -(-low // stride) * stride
    count = (last - first) // stride + 1 if last >= first else 0
    if count and (first < origin or last + size > origin + length):
        raise ValueError(
            f"the part's map (cells {origin}..{origin + length}) does not hold the patches "
            f"starting at {first}..{last} (size {size})"
        )
    return first - origin, count


def _crop(
    features: Tensor,
    size: int,
    stride: int,
    origin: tuple[int, int],
    interior: tuple[int, int, int, int],
    grid: tuple[int, int],
) -> Tensor | None:
    """The part's map cut to the whole map's patches that start in ``interior``, so that
    unfolding it on a ``stride`` grid gives exactly those patches (None: there are none)."""
    y0, y1, x0, x1 = interior
    top, rows = _patch_starts(size, stride, origin[0], y0, y1, grid[0], features.shape[-2])
    left, cols = _patch_starts(size, stride, origin[1], x0, x1, grid[1], features.shape[-1])
    if rows == 0 or cols == 0:
        return None
    bottom = top + (rows - 1) * stride + size
    right = left + (cols - 1) * stride + size
    return features[:, :, top:bottom, left:right]


def whole_patch_count(size: int, stride: int, grid: tuple[int, int]) -> int:
    """Patches on a ``stride`` grid of a whole map of ``grid`` = (H, W) cells."""
    rows = (grid[0] - size) // stride + 1 if grid[0] >= size else 0
    cols = (grid[1] - size) // stride + 1 if grid[1] >= size else 0
    return rows * cols


def partial_energy(
    features: Tensor,
    patches: Tensor,
    norms: Tensor,
    *,
    stride: int = 2,
    origin: tuple[int, int],
    interior: tuple[int, int, int, int],
    grid: tuple[int, int],
    chunk: int | None = None,
) -> Tensor:
    """A part's share of :func:`mrf_energy` of the whole map.

    ``features`` (1, C, h, w): the part's map, its cell [0, 0] the whole map's cell
    ``origin`` = (oy, ox); ``interior`` = (y0, y1, x0, x1): the whole-map cells the part
    owns (half-open); ``grid`` = (H, W): the whole map's size. The sum, over the whole
    map's patches (stride grid from 0, starts ≤ H − k, ≤ W − k) that start in the
    interior, of the squared distance to the matched style patch, over L·C·k² with L the
    whole map's patch count: parts whose interiors partition the map add up to
    :func:`mrf_energy`. The map must reach k − 1 cells past the last such start.
    ``norms`` as for :func:`mrf_energy`.
    """
    size = patches.shape[-1]
    crop = _crop(features, size, stride, origin, interior, grid)
    if crop is None:
        return features[:, :, :0, :0].sum()  # zero, on the graph
    total = whole_patch_count(size, stride, grid) * patches[0].numel()
    return _squared_distance(crop, patches, norms, stride, chunk).sum() / total


def partial_patches(
    features: Tensor,
    size: int,
    stride: int,
    origin: tuple[int, int],
    interior: tuple[int, int, int, int],
    grid: tuple[int, int],
) -> Tensor:
    """The whole map's patches (as :func:`extract_patches`) that start in ``interior``.

    Arguments as for :func:`partial_energy`. Over parts whose interiors partition the
    map, they are the whole map's patches (each once; the order is the parts' order).
    """
    crop = _crop(features, size, stride, origin, interior, grid)
    if crop is None:
        return features.new_zeros((0, features.shape[1], size, size))
    return extract_patches(crop, size, stride)


def style_variants(
    image: Image.Image, rotations: int = 0, scales: int = 0
) -> list[tuple[Image.Image, float]]:
    """The style image and its rotated (±k·π/24) and scaled (×1.05^±k) copies, each with
    its scale relative to the image, in that order: the image, the rotations (−, + for
    k = 1, 2, ...), the scales (×1.05^k, ×1.05^−k for k = 1, 2, ...).

    A scaled copy is the image itself with its factor: it is resized once, to the factor
    times the style size of the level. A rotated copy is cropped to the largest centred
    rectangle of the same aspect ratio that holds no corner fill; at the image's own
    resolution, its relative scale is its long edge over the image's.
    """
    variants = [(image, 1.0)]
    w, h = image.size
    for k in range(1, rotations + 1):
        for sign in (-1, 1):
            angle = sign * k * 180.0 / 24.0
            turned = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
            theta = math.radians(abs(angle))
            # Largest centred w'×h' (same aspect) inside the rotated w×h frame.
            factor = 1.0 / (math.cos(theta) + math.sin(theta) * max(w / h, h / w))
            cw, ch = max(1, int(w * factor)), max(1, int(h * factor))
            left, top = (w - cw) // 2, (h - ch) // 2
            crop = turned.crop((left, top, left + cw, top + ch))
            variants.append((crop, max(cw, ch) / max(w, h)))
    for k in range(1, scales + 1):
        variants.extend((image, factor) for factor in (1.05**k, 1.05**-k))
    return variants
