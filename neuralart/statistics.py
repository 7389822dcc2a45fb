"""Style statistics as small pure functions on feature maps (docs/method.md §2-§4.5).

All functions take feature maps shaped (B, C, H, W) and return statistics normalised by
the number of positions M (size-invariant, docs/method.md §2 [decided]):

* :func:`gram`            (F + s)(F + s)ᵀ / M                        -> (B, C, C)
* :func:`cross_gram`      (F_a + s)(blur(up(F_b)) + s)ᵀ / M          -> (B, C_a, C_b)
* :func:`adjacent_gram`   the same against the 9 shifted copies      -> (B, 9, C_a, C_b)
* :func:`content_aware_gram`  (F + s)(F + s)ᵀ per content channel k     -> (B, C, C, K)
* :func:`gram_cube`       Σ_p (F + s)_i (F + s)_j (F + s)_k          -> (B, C, C, C)

``a`` is the layer with the larger map (the shallower one), ``b`` the smaller or
equal one. Nearest-neighbour upsampling of ``b`` to ``a``'s exact size is never
materialised by :func:`cross_gram`: it uses ``F_a · up(F_b)ᵀ = up*(F_a) · F_bᵀ``,
where ``up*`` (the adjoint) sums the cells of the larger grid onto the smaller one, and
the symmetric box blur moves to the other factor the same way.
"""

from __future__ import annotations

import typing
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.grad import conv2d_input


def window_map(feature: Tensor, rows: slice, cols: slice) -> Tensor:
    """A (1, 1, H, W) map of 0 and 1 over a feature map: 1 on ``rows`` × ``cols``."""
    out = feature.new_zeros(1, 1, *feature.shape[-2:])
    out[..., rows, cols] = 1.0
    return out


def nearest_index(large: int, small: int, device: torch.device | None = None) -> Tensor:
    """For each of ``large`` output cells, the source cell of nearest upsampling.

    Exact integer arithmetic: cell i of the large grid reads cell floor(i·small/large).
    """
    return torch.div(torch.arange(large, device=device) * small, large, rounding_mode="floor")


# For a part of a picture (a tile), the cells of the smaller map that each row and column
# of the larger map reads under the whole picture's mapping, in the part's own numbering:
# (rows (H,), columns (W,)). None: the maps are whole, and the mapping is computed.
Resampling = tuple[Tensor, Tensor] | None


def upsample_nearest(x: Tensor, size: tuple[int, int], index: Resampling = None) -> Tensor:
    """(B, C, h, w) -> (B, C, H, W), nearest neighbour to the exact size."""
    h, w = x.shape[-2:]
    if index is None:
        odd = _pooled_remainders(size, (h, w))
        if odd is not None:
            return _pooled_upsample(x, size, odd)
        index = (nearest_index(size[0], h, x.device), nearest_index(size[1], w, x.device))
    return x.index_select(-2, index[0]).index_select(-1, index[1])


# Fixed depthwise kernels, by (kind, channels, device, dtype). A depthwise convolution is
# how these small linear maps run fastest: on two CPU cores about ten times faster than
# average pooling, forward and backward, and one kernel launch on a GPU. Every kind is
# separable, the outer product of the taps of one axis with those of the other:
_TAPS: dict[str, tuple[float, ...]] = {
    "blur": (1.0, 1.0, 1.0),  # the 3×3 blur, /9 in all
    "sum2": (3.0, 3.0),  # the sum of 2×2 cells (taps in thirds, see _kernel)
    "blur_sum2": (1.0, 2.0, 2.0, 1.0),  # the 2×2 sum after the 3×3 blur
    # The same on an axis of 2s + 1 cells, one cell on: the first tap reads a cell the
    # window skips (see "Pooled grids" below).
    "blur_sum2_odd": (0.0, 1.0, 2.0, 2.0, 1.0),
    "sum2_odd": (0.0, 3.0, 3.0),
}
_KERNELS: dict[tuple[str, int, torch.device, torch.dtype], Tensor] = {}


def _kernel(kind: str, like: Tensor) -> Tensor:
    """(C, 1, kh, kw) weights for C = ``like``'s channels: ``blur`` 3×3 of 1/9; ``sum2``
    2×2 of ones; ``blur_sum2`` the 4×4 kernel of the 2×2 sum after the 3×3 blur,
    [1,2,2,1]ᵀ[1,2,2,1] / 9. ``kind`` may name the rows' and the columns' taps apart,
    ``rows/columns`` (``blur_sum2_odd/blur_sum2``)."""
    channels = like.shape[1]
    key = (kind, channels, like.device, like.dtype)
    weights = _KERNELS.get(key)
    if weights is None:
        rows, _, columns = kind.partition("/")
        ty = torch.tensor(_TAPS[rows], dtype=torch.float64) / 3.0
        tx = torch.tensor(_TAPS[columns or rows], dtype=torch.float64) / 3.0
        base = torch.outer(ty, tx)
        weights = base.to(like).expand(channels, 1, *base.shape).contiguous()
        _KERNELS[key] = weights
    return weights


# The shift of a pair's first map, s·1 on its grid, carried through a linear map K: the
# map is K(F) + s·K(1), and K(1) is the same single-channel map for every channel. It is
# added as the convolution's bias, K(1)'s value inside the grid, and the rows and columns
# near the edges, where K(1) differs (the blur reads zeros outside), are set right after:
# no pass over the whole map, as forming F + s first would take.
_RESPONSES: dict[tuple[Any, ...], tuple[float, Tensor, Tensor, Tensor, Tensor]] = {}


def _shift_response(
    key: tuple[Any, ...], ones_through: Any, like: Tensor
) -> tuple[float, Tensor, Tensor, Tensor, Tensor]:
    """(v, rows, row_fix, columns, column_fix) of K(1) = ``ones_through(ones)``: its value
    v inside the grid, the rows where it differs and their K(1) − v, the columns where it
    differs and their K(1) − v on the other rows (0 on those rows)."""
    key = (*key, like.device, like.dtype)
    found = _RESPONSES.get(key)
    if found is None:
        with torch.no_grad():
            response = ones_through()[0, 0].to(torch.float64)  # (h, w)
        h, w = response.shape
        v = float(response[h // 2, w // 2])
        rows = torch.nonzero(response[:, w // 2] != v).flatten()
        columns = torch.nonzero(response[h // 2, :] != v).flatten()
        row_fix = response[rows] - v
        column_fix = response[:, columns] - v
        column_fix[rows] = 0.0
        found = (v, rows, row_fix.to(like), columns, column_fix.to(like))
        _RESPONSES[key] = found
    return found


def _add_shift_edges(out: Tensor, shift: float, response: tuple[Any, ...]) -> Tensor:
    """Set the edges of ``out`` = K(F) + s·v right: + s·(K(1) − v) where it differs."""
    _, rows, row_fix, columns, column_fix = response
    b, c = out.shape[:2]
    # The sources are a few rows and columns: made whole, whatever the device's
    # index_add_ makes of broadcast strides.
    if rows.numel():
        out.index_add_(-2, rows, (row_fix * shift).expand(b, c, -1, -1).contiguous())
    if columns.numel():
        out.index_add_(-1, columns, (column_fix * shift).expand(b, c, -1, -1).contiguous())
    return out


class _FixedConv(torch.autograd.Function):
    """A depthwise convolution with a constant kernel that keeps nothing for its backward
    pass: the gradient is the transposed convolution of the gradient alone. Autograd's
    own convolution would keep its input, a picture-sized map, until the backward pass
    (the shifted map of every blurred pair, for example). With ``shift`` s it is the
    convolution of x + s (s inside the grid, zeros outside), without forming x + s.

    With ``totals`` it also returns the sum of x + s over the grid, per picture and
    channel: its gradient, the same for every cell of a channel, is added where the
    transposed convolution writes (as its bias, or right behind it while the map is
    still in the cache) rather than by autograd, one pass over the map later.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weights: Tensor, stride: int, padding: int, shift: float, totals: bool
    ) -> Tensor | tuple[Tensor, Tensor]:
        ctx.shape = x.shape
        ctx.weights = weights
        ctx.stride = stride
        ctx.padding = padding
        ctx.set_materialize_grads(False)
        groups = x.shape[1]
        if not shift:
            out = F.conv2d(x, weights, stride=stride, padding=padding, groups=groups)
        else:
            one = weights[:1]
            response = _shift_response(  # the kernels are kept for good: their address names them
                ("conv", tuple(x.shape[-2:]), weights.data_ptr(), stride, padding),
                lambda: F.conv2d(
                    x.new_ones(1, 1, *x.shape[-2:]), one, stride=stride, padding=padding
                ),
                x,
            )
            bias = x.new_full((groups,), shift * response[0])
            out = F.conv2d(x, weights, bias, stride=stride, padding=padding, groups=groups)
            out = _add_shift_edges(out, shift, response)
        if not totals:
            return out
        return out, _grid_totals(x, shift)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: Any, grad: Tensor | None, grad_totals: Tensor | None = None
    ) -> tuple[Tensor | None, None, None, None, None, None]:
        shape, weights, padding = ctx.shape, ctx.weights, ctx.padding
        if grad is None:
            if grad_totals is None:
                return None, None, None, None, None, None
            back = grad_totals[:, :, None, None].expand(shape).contiguous()
            return back, None, None, None, None, None
        bias, grad_totals = _as_bias(grad_totals, shape)
        if ctx.stride == 1 and weights.shape[0] == shape[1]:
            # At stride 1, one output per channel, the transposed convolution is the
            # convolution with the kernel turned round, which runs faster (oneDNN: about
            # 0.6 × the time).
            kh, kw = weights.shape[-2:]
            turned = weights.flip(-2, -1)
            pad = (kh - 1 - padding, kw - 1 - padding)
            back = F.conv2d(grad, turned, bias, padding=pad, groups=shape[1])
        else:
            back = _transposed(grad, weights, shape, ctx.stride, padding)
            grad_totals = grad_totals if bias is None else bias[None]
        if grad_totals is not None:
            back += grad_totals[:, :, None, None]
        return back, None, None, None, None, None


def _grid_totals(x: Tensor, shift: float) -> Tensor:
    """Σ over the grid of x + s: (B, C)."""
    totals = x.sum(dim=(2, 3))
    return totals + shift * x.shape[-2] * x.shape[-1] if shift else totals


def _as_bias(grad_totals: Tensor | None, shape: torch.Size) -> tuple[Tensor | None, Tensor | None]:
    """The gradient of the grid totals as a convolution's bias when there is one picture
    (bias, None), else (None, the gradient) to add after."""
    if grad_totals is not None and shape[0] == 1:
        return grad_totals[0].contiguous(), None
    return None, grad_totals


def _transposed(
    grad: Tensor, weights: Tensor, shape: torch.Size, stride: int, padding: int
) -> Tensor:
    """The transposed depthwise convolution back onto ``shape``'s grid. oneDNN's
    deconvolution runs it in about 0.55 × the time of the convolution's input gradient
    (the 2×2 sum after the blur, 64 channels at 512×341 px), without a bias: with one it
    leaves the fast path."""
    kh, kw = weights.shape[-2:]
    extra = tuple(
        size - ((n - 1) * stride - 2 * padding + k)
        for size, n, k in zip(shape[-2:], grad.shape[-2:], (kh, kw), strict=True)
    )
    if weights.shape[0] == shape[1] and all(0 <= e < stride for e in extra):
        return F.conv_transpose2d(
            grad, weights, stride=stride, padding=padding, output_padding=extra, groups=shape[1]
        )
    return conv2d_input(shape, weights, grad, stride=stride, padding=padding, groups=shape[1])


def fixed_conv(
    x: Tensor,
    weights: Tensor,
    stride: int = 1,
    padding: int = 0,
    shift: float = 0.0,
    totals: list[Tensor] | None = None,
) -> Tensor:
    """``F.conv2d(x + shift, weights, stride, padding, groups=C)`` for constant depthwise
    weights, the shift inside the grid only, keeping nothing for the backward pass
    (:class:`_FixedConv`). With a list ``totals``, Σ over the grid of x + s, (B, C), is
    appended to it, its gradient folded into this convolution's backward pass."""
    if totals is None:
        return typing.cast(Tensor, _FixedConv.apply(x, weights, stride, padding, shift, False))
    out, sums = _FixedConv.apply(x, weights, stride, padding, shift, True)
    totals.append(sums)
    return typing.cast(Tensor, out)


def upsample_adjoint(
    x: Tensor,
    size: tuple[int, int],
    index: Resampling = None,
    shift: float = 0.0,
    totals: list[Tensor] | None = None,
) -> Tensor:
    """The adjoint of :func:`upsample_nearest`: (B, C, H, W) -> (B, C, h, w).

    Each cell of the small grid receives the sum of the large cells that read it. With
    ``shift`` s, of x + s (pooled grids only: ``index`` None and H, W twice h, w or one
    more); ``totals`` as in :func:`fixed_conv` (pooled grids only).
    """
    big_h, big_w = x.shape[-2:]
    h, w = size
    odd = _pooled_remainders((big_h, big_w), size) if index is None else None
    if (shift or totals is not None) and (odd is None or (big_h, big_w) == (h, w)):
        raise ValueError("upsample_adjoint: a shift or totals only on pooled grids")
    if index is None:
        if (big_h, big_w) == (h, w):
            return x
        if odd == (0, 0):
            return fixed_conv(x, _kernel("sum2", x), stride=2, shift=shift, totals=totals)
        if odd is not None:
            return _pooled_adjoint(x, odd, blur=False, shift=shift, totals=totals)
        index = (nearest_index(big_h, h, x.device), nearest_index(big_w, w, x.device))
    iy, ix = index
    rows = x.new_zeros(*x.shape[:-2], h, big_w).index_add(-2, iy, x)
    return rows.new_zeros(*x.shape[:-2], h, w).index_add(-1, ix, rows)


def box_blur(x: Tensor, shift: float = 0.0, totals: list[Tensor] | None = None) -> Tensor:
    """Mean of each 3×3 neighbourhood, zero padding, always divided by 9; with ``shift``
    s, of x + s inside the grid; ``totals`` as in :func:`fixed_conv`."""
    return fixed_conv(x, _kernel("blur", x), padding=1, shift=shift, totals=totals)


def blur_adjoint(
    x: Tensor,
    size: tuple[int, int],
    index: Resampling = None,
    shift: float = 0.0,
    totals: list[Tensor] | None = None,
) -> Tensor:
    """up*(blur(x)): the adjoint of blur(up(·)), from x's grid down to ``size``; with
    ``shift`` s, of x + s inside the grid, and ``totals`` as in :func:`fixed_conv`
    (both ``index`` None only).

    When the large grid is exactly twice the small one this is a single 4×4 stride-2
    depthwise convolution; on pooled grids with an odd side, the same with a 5-tap axis
    and one extra row and column (below).
    """
    odd = _pooled_remainders((x.shape[-2], x.shape[-1]), size) if index is None else None
    if (shift or totals is not None) and index is not None:
        raise ValueError("blur_adjoint: a shift or totals only without an index")
    if index is None and (x.shape[-2], x.shape[-1]) == tuple(size):
        return box_blur(x, shift, totals)
    if odd == (0, 0):
        kernel = _kernel("blur_sum2", x)
        return fixed_conv(x, kernel, stride=2, padding=1, shift=shift, totals=totals)
    if odd is not None:
        return _pooled_adjoint(x, odd, blur=True, shift=shift, totals=totals)
    return upsample_adjoint(box_blur(x, shift, totals), size, index)


# Pooled grids. The network's 2×2 pooling halves a grid of 2s or 2s + 1 cells to s (an
# odd last row or column is dropped), so adjacent blocks' maps are always in this
# relation: 512×341 px gives 341 → 170 rows and 85 → 42. On 2s + 1 cells, nearest
# upsampling back (cell i reads floor(i·s / (2s + 1))) gives cell 0 the three large
# cells 0, 1, 2 and every other cell j the pair 2j + 1, 2j + 2: the regular pairs
# shifted by one, with one cell left over at the start. The functions below run the
# stride-2 kernels with one more tap in front on such an axis (a tap of weight 0 that
# steps the windows one cell on, so that no padded copy of the map is needed) and add
# the leftover cell's row and column by hand, instead of summing through an index and
# gathering through it in the backward pass (BENCHMARKS.md, "Pooled grids with an odd
# side").


def _pooled_remainders(big: tuple[int, int], small: tuple[int, int]) -> tuple[int, int] | None:
    """(r_y, r_x) when each axis of ``big`` is 2·small + r with r in {0, 1}, else None."""
    out = tuple(b - 2 * s for b, s in zip(big, small, strict=True))
    return (out[0], out[1]) if all(r in (0, 1) for r in out) else None


def _blur_1d(v: Tensor) -> Tensor:
    """Mean of each 3 neighbours along the last axis, zero outside (always /3)."""
    padded = F.pad(v, (1, 1))
    return (padded[..., :-2] + padded[..., 1:-1] + padded[..., 2:]) / 3.0


def _pair_sums_1d(v: Tensor, r: int, *, leftover: bool) -> Tensor:
    """The nearest adjoint along the last axis for a length 2s + r: cell j sums cells
    2j + r and 2j + r + 1; with ``leftover`` cell 0 also gets cell 0 when r = 1."""
    out = v[..., r:].unflatten(-1, (-1, 2)).sum(-1)
    if r and leftover:
        out[..., 0] += v[..., 0]
    return out


def _pair_sums_1d_adjoint(v: Tensor, r: int, *, leftover: bool) -> Tensor:
    """The adjoint of :func:`_pair_sums_1d`: each of the 2s + r cells gets its pair's
    value (cell 0, when r = 1, that of pair 0 with ``leftover``, else 0)."""
    out = v.new_zeros(*v.shape[:-1], 2 * v.shape[-1] + r)
    out[..., r:].unflatten(-1, (-1, 2)).copy_(v[..., None])
    if r and leftover:
        out[..., 0] = v[..., 0]
    return out


def _pooled_upsample(g: Tensor, big: tuple[int, int], odd: tuple[int, int]) -> Tensor:
    """Nearest upsampling of (B, C, h, w) ``g`` to ``big`` = 2·(h, w) + ``odd``, written
    as broadcast copies (one pass; a gather through an index is several times slower)."""
    ry, rx = odd
    h, w = g.shape[-2:]
    out = g.new_empty(*g.shape[:-2], *big)
    pairs = out[..., ry:, rx:].unflatten(-1, (w, 2)).unflatten(-3, (h, 2))
    pairs.copy_(g[..., :, None, :, None])
    if ry:  # row 0 is the leftover row: it reads row 0 of g
        out[..., 0, rx:].unflatten(-1, (w, 2)).copy_(g[..., 0, :, None])
    if rx:
        out[..., ry:, 0].unflatten(-1, (h, 2)).copy_(g[..., :, 0, None])
    if ry and rx:
        out[..., 0, 0] = g[..., 0, 0]
    return out


def _pooled_kernel(odd: tuple[int, int], blur: bool, like: Tensor) -> tuple[Tensor, int]:
    """The stride-2 kernel of the pooled adjoint (with the blur or not) and its padding."""
    base = "blur_sum2" if blur else "sum2"
    rows, columns = (f"{base}_odd" if r else base for r in odd)
    return _kernel(f"{rows}/{columns}", like), (1 if blur else 0)


def _pooled_adjoint_values(x: Tensor, odd: tuple[int, int], blur: bool, shift: float) -> Tensor:
    """up*(x + s), or up*(blur(x + s)) with ``blur``, onto the grid that x's halves (see
    above); s = ``shift`` inside x's grid.

    Written P (the adjoint along an axis) = P₀ + E, P₀ the shifted pairs and E the
    leftover cell, the 2-D map P_y·X·P_xᵀ is P₀_y·X·P₀_xᵀ (one stride-2 convolution)
    plus E_y·X·P_xᵀ (one row, into row 0) plus P₀_y·X·E_xᵀ (one column, into column 0).
    """
    ry, rx = odd
    weights, padding = _pooled_kernel(odd, blur, x)
    groups = x.shape[1]
    bias = None
    if shift:
        response = _shift_response(
            ("pooled", tuple(x.shape[-2:]), odd, blur),
            lambda: _pooled_adjoint_values(x.new_ones(1, 1, *x.shape[-2:]), odd, blur, 0.0),
            x,
        )
        bias = x.new_full((groups,), shift * response[0])
    main = F.conv2d(x, weights, bias, stride=2, padding=padding, groups=groups)
    if blur:
        first_row = _blur_1d((x[..., 0, :] + x[..., 1, :]) / 3.0) if ry else None
        first_col = _blur_1d((x[..., :, 0] + x[..., :, 1]) / 3.0) if rx else None
    else:
        first_row = x[..., 0, :] if ry else None
        first_col = x[..., :, 0] if rx else None
    if first_row is not None:  # E_y·X·P_xᵀ: row 0, with P_x's own leftover
        main[..., 0, :] += _pair_sums_1d(first_row, rx, leftover=True)
    if first_col is not None:  # P₀_y·X·E_xᵀ: column 0, the rows' leftover already counted
        main[..., :, 0] += _pair_sums_1d(first_col, ry, leftover=False)
    return _add_shift_edges(main, shift, response) if shift else main


class _PooledAdjoint(torch.autograd.Function):
    """up*(x + s) or up*(blur(x + s)) on pooled grids; the backward pass is up(grad), or
    blur(up(grad)) as the transposed stride-2 convolution and the leftover row and
    column. ``totals`` as in :class:`_FixedConv`."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, odd: tuple[int, int], blur: bool, shift: float, totals: bool
    ) -> Tensor | tuple[Tensor, Tensor]:
        ctx.big = x.shape
        ctx.odd = odd
        ctx.blur = blur
        ctx.set_materialize_grads(False)
        out = _pooled_adjoint_values(x, odd, blur, shift)
        return (out, _grid_totals(x, shift)) if totals else out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: Any, grad: Tensor | None, grad_totals: Tensor | None = None
    ) -> tuple[Tensor | None, None, None, None, None]:
        shape, (ry, rx) = ctx.big, ctx.odd
        if grad is None:
            if grad_totals is None:
                return None, None, None, None, None
            back = grad_totals[:, :, None, None].expand(shape).contiguous()
            return back, None, None, None, None
        grad = grad.contiguous()
        if not ctx.blur:
            # Every large cell reads one small cell: the totals' gradient, the same on
            # every cell of a channel, is added on the small grid before the copies.
            if grad_totals is not None:
                grad = grad + grad_totals[:, :, None, None]
            back = _pooled_upsample(grad, (shape[-2], shape[-1]), ctx.odd)
            return back, None, None, None, None
        weights, padding = _pooled_kernel(ctx.odd, True, grad)
        back = _transposed(grad, weights, shape, 2, padding)
        if ry:  # the leftover row's part: rows 0 and 1 read row 0 of grad
            row = _blur_1d(_pair_sums_1d_adjoint(grad[..., 0, :], rx, leftover=True)) / 3.0
            back[..., 0, :] += row
            back[..., 1, :] += row
        if rx:  # the leftover column's part: columns 0 and 1 read column 0 of grad
            col = _blur_1d(_pair_sums_1d_adjoint(grad[..., :, 0], ry, leftover=False)) / 3.0
            back[..., :, 0] += col
            back[..., :, 1] += col
        if grad_totals is not None:  # while the map is still in the cache
            back += grad_totals[:, :, None, None]
        return back, None, None, None, None


def _pooled_adjoint(
    x: Tensor,
    odd: tuple[int, int],
    blur: bool,
    shift: float = 0.0,
    totals: list[Tensor] | None = None,
) -> Tensor:
    if totals is None:
        return typing.cast(Tensor, _PooledAdjoint.apply(x, odd, blur, shift, False))
    out, sums = _PooledAdjoint.apply(x, odd, blur, shift, True)
    totals.append(sums)
    return typing.cast(Tensor, out)


class _SelfGram(torch.autograd.Function):
    """f·fᵀ for (B, C, M) f, with a backward of one matrix product: (D + Dᵀ)·f."""

    @staticmethod
    def forward(ctx: Any, f: Tensor) -> Tensor:
        ctx.save_for_backward(f)
        return f @ f.transpose(1, 2)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (f,) = ctx.saved_tensors
        return (grad + grad.transpose(1, 2)) @ f


class _Cross(torch.autograd.Function):
    """a·bᵀ for (B, C_a, M) a and (B, C_b, M) b, with both gradients formed as whole
    maps, grad·b and gradᵀ·a: autograd's would give b's as the transpose of an (M, C_b)
    product, which every later pass over it then reads across the grain."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a, b)
        return a @ b.transpose(1, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        a, b = ctx.saved_tensors
        grad_a = grad @ b if ctx.needs_input_grad[0] else None
        grad_b = grad.transpose(1, 2) @ a if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


def _cross(a: Tensor, b: Tensor) -> Tensor:
    return typing.cast(Tensor, _Cross.apply(a, b))


def _windowed(shifted: Tensor, window: Tensor | None) -> Tensor:
    """The shifted map with the positions outside ``window`` (a 0/1 map) set to zero."""
    return shifted if window is None else shifted * window


def gram(
    features: Tensor, shift: float = 0.0, *, window: Tensor | None = None, divisor: float = 0.0
) -> Tensor:
    """(F + s)(F + s)ᵀ / M for (B, C, H, W) features -> (B, C, C).

    Every statistic here takes the same two keywords: ``window`` (a (1, 1, H, W) map of 0
    and 1 on the first map's grid) keeps only the positions where it is 1 in the sum, and
    ``divisor`` replaces M (0: M of the maps given). Together they give the partial sums
    that a picture split into parts adds up.
    """
    b, c, h, w = features.shape
    m = divisor or h * w
    f = features + shift if shift else features
    f = _windowed(f, window).reshape(b, c, h * w)  # (B, C, M); window² = window
    return _SelfGram.apply(f) / m  # (B, C, C)


def cross_gram(
    a: Tensor,
    b: Tensor,
    shift: float = 0.0,
    blur: bool = False,
    *,
    window: Tensor | None = None,
    divisor: float = 0.0,
    index: Resampling = None,
) -> Tensor:
    """(F_a + s)(blur(up(F_b)) + s)ᵀ / M_a -> (B, C_a, C_b).

    ``a``: (B, C_a, H, W), the larger map; ``b``: (B, C_b, h, w) with h <= H, w <= W.
    """
    big = a.shape[-2:]
    small = (b.shape[-2], b.shape[-1])
    if small[0] > big[0] or small[1] > big[1]:
        raise ValueError("cross_gram: the first map must be the larger one")
    m = divisor or big[0] * big[1]
    bsz, ca = a.shape[:2]
    cb = b.shape[1]
    # (F_a + s)·(blur(up(F_b)))ᵀ = up*(blur(F_a + s))·F_bᵀ, formed on the small grid;
    # and (F_a + s)·(s·1)ᵀ = s·(row sums of F_a + s), the same for every column. Where a
    # convolution forms up*(blur(·)) and no window cuts the maps, it adds the shift on
    # the way (:func:`fixed_conv`): F_a + s is never formed.
    pooled = big != small and _pooled_remainders((big[0], big[1]), small) is not None
    sums: Tensor | None
    if shift and window is None and index is None and (blur or pooled):
        # The row sums come with the convolution: their gradient is added where its
        # backward pass writes, not by autograd in one more pass over F_a's gradient.
        totals: list[Tensor] = []
        if blur:
            a_small = blur_adjoint(a, small, shift=shift, totals=totals)
        else:
            a_small = upsample_adjoint(a, small, shift=shift, totals=totals)
        (sums,) = totals
    else:
        shifted = _windowed(a + shift if shift else a, window)
        if blur:
            a_small = blur_adjoint(shifted, small, index)
        else:
            a_small = upsample_adjoint(shifted, small, index)
        sums = shifted.sum(dim=(2, 3)) if shift else None
    g = _cross(a_small.reshape(bsz, ca, -1), b.reshape(bsz, cb, -1))  # (B, C_a, C_b)
    if sums is not None:
        g = g + shift * sums.unsqueeze(2)
    return g / m


# (dy, dx) offsets of the adjacent-correlation statistic, row-major.
OFFSETS: tuple[tuple[int, int], ...] = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def _offset_kernels(half: bool, channels: int, like: Tensor) -> Tensor:
    """(9·C, 1, k, k) depthwise weights: for each channel, one kernel per offset d that
    shifts the map by −d (out[q] = in[q − d], zero outside); with ``half`` also the 2×2
    sum of the grid adjoint (a 4×4 kernel at stride 2, padding 1)."""
    key = (f"offsets-{half}", channels, like.device, like.dtype)
    weights = _KERNELS.get(key)
    if weights is None:
        base = torch.zeros(9, 3, 3, dtype=torch.float64)  # centre (1, 1)
        for index, (dy, dx) in enumerate(OFFSETS):
            base[index, 1 - dy, 1 - dx] = 1.0
        if half:  # then sum each 2×2 block
            summed = torch.zeros(9, 4, 4, dtype=torch.float64)
            for oy in (0, 1):
                for ox in (0, 1):
                    summed[:, oy : oy + 3, ox : ox + 3] += base
            base = summed
        weights = base.to(like).repeat(channels, 1, 1).unsqueeze(1).contiguous()
        _KERNELS[key] = weights
    return weights


def _valid_masks(size: tuple[int, int], like: Tensor) -> Tensor:
    """(9, H·W): 1 where position p + d is inside the grid, for each offset d."""
    key = (f"valid-{size[0]}x{size[1]}", 9, like.device, like.dtype)
    masks = _KERNELS.get(key)
    if masks is None:
        h, w = size
        masks = torch.zeros(9, h, w, dtype=like.dtype, device=like.device)
        for index, (dy, dx) in enumerate(OFFSETS):
            masks[index, max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] = 1.0
        masks = masks.reshape(9, h * w)
        _KERNELS[key] = masks
    return masks


def adjacent_gram(
    a: Tensor,
    b: Tensor,
    shift: float = 0.0,
    blur: bool = False,
    *,
    window: Tensor | None = None,
    divisor: float = 0.0,
    index: Resampling = None,
) -> Tensor:
    """(F_a + s) against the 9 shifted copies of (blur(up(F_b)) + s) -> (B, 9, C_a, C_b).

    Offset (dy, dx) pairs position p of a with position p + (dy, dx) of b; positions
    that fall outside read zero (docs/method.md §4.3). Divided by M_a.

    As for :func:`cross_gram`, the shift and the blur move to ``a``'s side and the
    upsampling becomes its adjoint, so the products run on ``b``'s (small) grid and
    ``up(F_b)`` is never formed: with Z = blur(up(F_b)) + s read as zero outside,
    Σ_p A'_p Z_{p+d} = up*(blur(S_d A'))·F_bᵀ + s·Σ_p A'_p [p + d inside], where
    A' = F_a + s and (S_d A')_q = A'_{q−d}. The nine shifted copies of A' come from one
    depthwise convolution (fused with the reduction when there is no blur), and the nine
    products are one.
    """
    big = (a.shape[-2], a.shape[-1])
    small = (b.shape[-2], b.shape[-1])
    if small[0] > big[0] or small[1] > big[1]:
        raise ValueError("adjacent_gram: the first map must be the larger one")
    bsz, ca = a.shape[:2]
    cb = b.shape[1]
    m = divisor or big[0] * big[1]
    shifted = _windowed(a + shift if shift else a, window)
    half = index is None and big == (2 * small[0], 2 * small[1])
    if blur:  # shift, then blur and reduce (the blur must read zero outside the grid)
        moved = fixed_conv(shifted, _offset_kernels(False, ca, a), padding=1)
        copies = blur_adjoint(moved, small, index)
    elif half:  # shift and reduce in one kernel
        copies = fixed_conv(shifted, _offset_kernels(True, ca, a), stride=2, padding=1)
    else:
        moved = fixed_conv(shifted, _offset_kernels(False, ca, a), padding=1)
        copies = upsample_adjoint(moved, small, index)
    # copies: (B, C_a·9, h, w), channel c·9 + d
    g = _cross(copies.reshape(bsz, ca * 9, -1), b.reshape(bsz, cb, -1))
    g = g.reshape(bsz, ca, 9, cb).transpose(1, 2)  # (B, 9, C_a, C_b)
    if shift:
        inside = shifted.reshape(bsz, ca, -1) @ _valid_masks(big, a).t()  # (B, C_a, 9)
        g = g + shift * inside.transpose(1, 2).unsqueeze(3)
    return g / m


# ----------------------------------------------------------------- three-way statistics
# Paper §4.4-§4.5: G[i, j, k] = Σ_p A_ip A_jp C_kp / M, a Gram matrix per row k of C.
# As one product: the rows (i, j) of the Khatri-Rao product P[(i, j), p] = A_ip A_jp
# times Cᵀ. G is symmetric in (i, j): a block of rows i in [i0, i1) forms the pairs with
# j >= i0 only, and the part j >= i1 is mirrored. Each block of P holds at most about
# CHUNK_ELEMENTS floats. The backward pass is written by hand in the same blocks:
# autograd would keep every block of P.

CHUNK_ELEMENTS = 1 << 24  # 64 MiB of float32 per block


def _row_blocks(n: int, m: int) -> list[tuple[int, int]]:
    """Blocks [i0, i1) of rows i whose P block, (i1 - i0) × (n - i0) × m, stays in budget."""
    blocks = []
    i0 = 0
    while i0 < n:
        rows = max(1, CHUNK_ELEMENTS // max(1, (n - i0) * m))
        blocks.append((i0, min(n, i0 + rows)))
        i0 += rows
    return blocks


def _pair_rows(a: Tensor, i0: int, i1: int) -> Tensor:
    """P[(i, j), p] = A_ip A_jp for i in [i0, i1), j in [i0, N): ((i1-i0)·(N-i0), M)."""
    return (a[i0:i1, None, :] * a[None, i0:, :]).reshape(-1, a.shape[1])


class _WeightedGram(torch.autograd.Function):
    """(A (B, N, M), C (B, K, M), scale) -> (B, N, N, K), [i, j, k] = scale·Σ_p A_ip A_jp C_kp."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, c: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(a, c)
        ctx.scale = scale
        bsz, n, m = a.shape
        out = a.new_empty(bsz, n, n, c.shape[1])
        for b in range(bsz):
            ct = c[b].t() * scale  # (M, K)
            for i0, i1 in _row_blocks(n, m):
                part = (_pair_rows(a[b], i0, i1) @ ct).reshape(i1 - i0, n - i0, -1)
                out[b, i0:i1, i0:] = part
                out[b, i1:, i0:i1] = part[:, i1 - i0 :].transpose(0, 1)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        a, c = ctx.saved_tensors
        bsz, n, m = a.shape
        need_a, need_c = ctx.needs_input_grad[:2]
        grad_a = torch.zeros_like(a) if need_a else None
        grad_c = torch.zeros_like(c) if need_c else None
        for b in range(bsz):
            cs = c[b] * ctx.scale  # (K, M)
            for i0, i1 in _row_blocks(n, m):
                rows = i1 - i0
                # A formed (i, j) with j >= i1 stands for G[i, j] and its mirror G[j, i].
                g = grad[b, i0:i1, i0:]
                if i1 < n:
                    g = g.clone()
                    g[:, rows:] += grad[b, i1:, i0:i1].transpose(0, 1)
                g = g.reshape(rows * (n - i0), -1)  # (rows·(N-i0), K)
                if grad_c is not None:
                    grad_c[b] += (g.t() @ _pair_rows(a[b], i0, i1)) * ctx.scale
                if grad_a is not None:
                    gp = (g @ cs).reshape(rows, n - i0, m)  # dL/dP for the block
                    grad_a[b, i0:i1] += (gp * a[b, None, i0:]).sum(dim=1)
                    grad_a[b, i0:] += (gp * a[b, i0:i1, None]).sum(dim=0)
        return grad_a, grad_c, None


def weighted_gram(a: Tensor, c: Tensor, scale: float = 1.0) -> Tensor:
    """scale·Σ_p A_ip A_jp C_kp for A (B, N, M), C (B, K, M) -> (B, N, N, K)."""
    return typing.cast(Tensor, _WeightedGram.apply(a, c, scale))


def content_aware_gram(
    features: Tensor,
    content: Tensor,
    shift: float = 0.0,
    *,
    window: Tensor | None = None,
    divisor: float = 0.0,
    index: Resampling = None,
) -> Tensor:
    """(F + s)(F + s)ᵀ weighted by each channel k of a content map, / M -> (B, C, C, K).

    ``content``: (B, K, h, w), the same image's content layer (paper §4.4: conv4_2,
    unshifted), resampled by nearest neighbour to the features' H×W.
    """
    b, n, h, w = features.shape
    up = upsample_nearest(content, (h, w), index).reshape(b, content.shape[1], h * w)
    a = _windowed(features + shift, window).reshape(b, n, h * w)  # window² = window
    return weighted_gram(a, up, 1.0 / (divisor or h * w))


def gram_cube(
    features: Tensor, shift: float = 0.0, *, window: Tensor | None = None, divisor: float = 0.0
) -> Tensor:
    """Σ_p (F + s)_ip (F + s)_jp (F + s)_kp / M for (B, C, H, W) -> (B, C, C, C) (§4.5)."""
    b, n, h, w = features.shape
    a = _windowed(features + shift, window).reshape(b, n, h * w)  # window³ = window
    return weighted_gram(a, a, 1.0 / (divisor or h * w))
