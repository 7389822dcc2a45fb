"""Style statistics as small pure functions on feature maps (paper.md §2-§4.3).

All functions take feature maps shaped (B, C, H, W) and return statistics normalised by
the number of positions M (size-invariant, paper.md §2 [decided]):

* :func:`gram`            (F + s)(F + s)ᵀ / M                        -> (B, C, C)
* :func:`cross_gram`      (F_a + s)(blur(up(F_b)) + s)ᵀ / M          -> (B, C_a, C_b)
* :func:`adjacent_gram`   the same against the 9 shifted copies      -> (B, 9, C_a, C_b)

``a`` is the layer with the larger map (the shallower one), ``b`` the smaller or
equal one. Nearest-neighbour upsampling of ``b`` to ``a``'s exact size is never
materialised by :func:`cross_gram`: it uses ``F_a · up(F_b)ᵀ = up*(F_a) · F_bᵀ``,
where ``up*`` (the adjoint) sums the cells of the larger grid onto the smaller one, and
the symmetric box blur moves to the other factor the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def nearest_index(large: int, small: int, device: torch.device | None = None) -> Tensor:
    """For each of ``large`` output cells, the source cell of nearest upsampling.

    Exact integer arithmetic: cell i of the large grid reads cell floor(i·small/large).
    """
    return torch.div(torch.arange(large, device=device) * small, large, rounding_mode="floor")


def upsample_nearest(x: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, h, w) -> (B, C, H, W), nearest neighbour to the exact size."""
    h, w = x.shape[-2:]
    iy = nearest_index(size[0], h, x.device)
    ix = nearest_index(size[1], w, x.device)
    return x.index_select(-2, iy).index_select(-1, ix)


def upsample_adjoint(x: Tensor, size: tuple[int, int]) -> Tensor:
    """The adjoint of :func:`upsample_nearest`: (B, C, H, W) -> (B, C, h, w).

    Each cell of the small grid receives the sum of the large cells that read it.
    """
    big_h, big_w = x.shape[-2:]
    h, w = size
    if (big_h, big_w) == (h, w):
        return x
    if big_h == 2 * h and big_w == 2 * w:
        return F.avg_pool2d(x, kernel_size=2) * 4.0
    iy = nearest_index(big_h, h, x.device)
    ix = nearest_index(big_w, w, x.device)
    rows = x.new_zeros(*x.shape[:-2], h, big_w).index_add(-2, iy, x)
    return rows.new_zeros(*x.shape[:-2], h, w).index_add(-1, ix, rows)


def box_blur(x: Tensor) -> Tensor:
    """Mean of each 3×3 neighbourhood, zero padding, always divided by 9."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=True)


def gram(features: Tensor, shift: float = 0.0) -> Tensor:
    """(F + s)(F + s)ᵀ / M for (B, C, H, W) features -> (B, C, C)."""
    b, c, h, w = features.shape
    m = h * w
    f = features.reshape(b, c, m)  # (B, C, M)
    if shift:
        f = f + shift
    return (f @ f.transpose(1, 2)) / m  # (B, C, C)


def cross_gram(a: Tensor, b: Tensor, shift: float = 0.0, blur: bool = False) -> Tensor:
    """(F_a + s)(blur(up(F_b)) + s)ᵀ / M_a -> (B, C_a, C_b).

    ``a``: (B, C_a, H, W), the larger map; ``b``: (B, C_b, h, w) with h <= H, w <= W.
    """
    big = a.shape[-2:]
    small = (b.shape[-2], b.shape[-1])
    if small[0] > big[0] or small[1] > big[1]:
        raise ValueError("cross_gram: the first map must be the larger one")
    m = big[0] * big[1]
    bsz, ca = a.shape[:2]
    cb = b.shape[1]
    shifted = a + shift if shift else a
    # (F_a + s)·(blur(up(F_b)))ᵀ = up*(blur(F_a + s))·F_bᵀ, formed on the small grid;
    # and (F_a + s)·(s·1)ᵀ = s·(row sums of F_a + s), the same for every column.
    a_small = upsample_adjoint(box_blur(shifted) if blur else shifted, small)  # (B, C_a, h, w)
    g = a_small.reshape(bsz, ca, -1) @ b.reshape(bsz, cb, -1).transpose(1, 2)  # (B, C_a, C_b)
    if shift:
        g = g + shift * shifted.sum(dim=(2, 3)).unsqueeze(2)
    return g / m


# (dy, dx) offsets of the adjacent-correlation statistic, row-major.
OFFSETS: tuple[tuple[int, int], ...] = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def adjacent_gram(a: Tensor, b: Tensor, shift: float = 0.0, blur: bool = False) -> Tensor:
    """(F_a + s) against the 9 shifted copies of (blur(up(F_b)) + s) -> (B, 9, C_a, C_b).

    Offset (dy, dx) pairs position p of a with position p + (dy, dx) of b; positions
    that fall outside read zero (paper.md §4.3). Divided by M_a.
    """
    big = (a.shape[-2], a.shape[-1])
    bsz, ca = a.shape[:2]
    cb = b.shape[1]
    m = big[0] * big[1]
    u = upsample_nearest(b, big)  # (B, C_b, H, W)
    if blur:
        u = box_blur(u)
    fa = (a + shift).reshape(bsz, ca, m)  # (B, C_a, M)
    padded = F.pad(u + shift, (1, 1, 1, 1))  # zero fill outside, (B, C_b, H+2, W+2)
    grams = []
    for dy, dx in OFFSETS:
        shifted = padded[:, :, 1 + dy : 1 + dy + big[0], 1 + dx : 1 + dx + big[1]]
        grams.append(fa @ shifted.reshape(bsz, cb, m).transpose(1, 2))  # (B, C_a, C_b)
    return torch.stack(grams, dim=1) / m
