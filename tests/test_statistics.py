"""Tests for neuralart.statistics against naive loop references written from docs/method.md.

The references below deliberately avoid the module's tricks (adjoint products, row-sum
shift expansion, avg_pool): they materialise the upsampled / blurred / shifted maps and
sum over channels and positions with explicit loops or einsum, in float64.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from neuralart.statistics import (
    OFFSETS,
    _cross,
    adjacent_gram,
    blur_adjoint,
    box_blur,
    cross_gram,
    gram,
    nearest_index,
    upsample_adjoint,
    upsample_nearest,
)

TOL = {"rtol": 1e-10, "atol": 1e-10}

# ---------------------------------------------------------------------------- references


def ref_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest upsampling: output (i, j) reads input (floor(i·h/H), floor(j·w/W))."""
    b, c, h, w = x.shape
    big_h, big_w = size
    out = x.new_zeros(b, c, big_h, big_w)
    for i in range(big_h):
        for j in range(big_w):
            out[:, :, i, j] = x[:, :, (i * h) // big_h, (j * w) // big_w]
    return out


def ref_adjoint(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Each large cell is added onto the small cell it reads from under ref_up."""
    b, c, big_h, big_w = x.shape
    h, w = size
    out = x.new_zeros(b, c, h, w)
    for i in range(big_h):
        for j in range(big_w):
            out[:, :, (i * h) // big_h, (j * w) // big_w] += x[:, :, i, j]
    return out


def ref_blur(x: torch.Tensor) -> torch.Tensor:
    """Mean of the 3×3 neighbourhood, zero padding, always divided by 9."""
    _, _, h, w = x.shape
    out = torch.zeros_like(x)
    for i in range(h):
        for j in range(w):
            for di, dj in itertools.product((-1, 0, 1), repeat=2):
                if 0 <= i + di < h and 0 <= j + dj < w:
                    out[:, :, i, j] += x[:, :, i + di, j + dj]
    return out / 9.0


def ref_gram(f: torch.Tensor, s: float) -> torch.Tensor:
    b, c, h, w = f.shape
    fs = (f + s).reshape(b, c, h * w)
    return torch.einsum("bip,bjp->bij", fs, fs) / (h * w)


def ref_b_side(a: torch.Tensor, b: torch.Tensor, s: float, blur: bool) -> torch.Tensor:
    """blur(up(F_b)) + s (or up(F_b) + s), materialised at a's exact size."""
    u = ref_up(b, (a.shape[-2], a.shape[-1]))
    return (ref_blur(u) if blur else u) + s


def ref_cross_gram(a: torch.Tensor, b: torch.Tensor, s: float, blur: bool) -> torch.Tensor:
    bsz, ca, h, w = a.shape
    fa = (a + s).reshape(bsz, ca, h * w)
    fb = ref_b_side(a, b, s, blur).reshape(bsz, b.shape[1], h * w)
    return torch.einsum("bip,bjp->bij", fa, fb) / (h * w)


def ref_adjacent_gram(a: torch.Tensor, b: torch.Tensor, s: float, blur: bool) -> torch.Tensor:
    bsz, ca, h, w = a.shape
    cb = b.shape[1]
    fa = a + s
    fb = ref_b_side(a, b, s, blur)  # zero fill is applied after the shift
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    out = a.new_zeros(bsz, 9, ca, cb)
    for k, (dy, dx) in enumerate(offsets):
        for i in range(h):
            for j in range(w):
                if 0 <= i + dy < h and 0 <= j + dx < w:
                    out[:, k] += torch.einsum(
                        "bi,bj->bij", fa[:, :, i, j], fb[:, :, i + dy, j + dx]
                    )
    return out / (h * w)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


# (large a size, small b size): odd non-integer ratio, exact ratio 2, equal, one axis only
PAIRS = [((5, 7), (2, 3)), ((4, 6), (2, 3)), ((3, 4), (3, 4)), ((5, 6), (5, 3))]
SHIFTS = [0.0, -1.0, 0.5]

# ------------------------------------------------------------------ upsampling and blur


@pytest.mark.parametrize(
    ("large", "small", "expected"),
    [
        (5, 2, [0, 0, 0, 1, 1]),
        (7, 3, [0, 0, 0, 1, 1, 2, 2]),
        (4, 2, [0, 0, 1, 1]),
        (3, 3, [0, 1, 2]),
        (6, 4, [0, 0, 1, 2, 2, 3]),
        (9, 4, [0, 0, 0, 1, 1, 2, 2, 3, 3]),
    ],
)
def test_nearest_index(large: int, small: int, expected: list[int]) -> None:
    assert nearest_index(large, small).tolist() == expected


@pytest.mark.parametrize(("big", "small"), PAIRS)
def test_upsample_nearest_matches_loop(big: tuple[int, int], small: tuple[int, int]) -> None:
    x = rand(2, 3, *small)
    out = upsample_nearest(x, big)
    assert out.shape == (2, 3, *big)
    torch.testing.assert_close(out, ref_up(x, big), rtol=0, atol=0)


@pytest.mark.parametrize(("big", "small"), [((4, 6), (2, 3)), ((5, 7), (2, 3)), ((3, 4), (3, 4))])
def test_loop_reference_agrees_with_interpolate(
    big: tuple[int, int], small: tuple[int, int]
) -> None:
    x = rand(2, 3, *small)
    expected = F.interpolate(x, size=big, mode="nearest")
    torch.testing.assert_close(ref_up(x, big), expected, rtol=0, atol=0)
    torch.testing.assert_close(upsample_nearest(x, big), expected, rtol=0, atol=0)


@pytest.mark.parametrize(("big", "small"), PAIRS)
def test_upsample_adjoint(big: tuple[int, int], small: tuple[int, int]) -> None:
    x, y = rand(2, 3, *big, seed=1), rand(2, 3, *small, seed=2)
    adj = upsample_adjoint(x, small)
    assert adj.shape == (2, 3, *small)
    torch.testing.assert_close(adj, ref_adjoint(x, small), **TOL)
    # <up(y), x> == <y, up*(x)>, with up the loop reference
    torch.testing.assert_close((ref_up(y, big) * x).sum(), (y * adj).sum(), **TOL)


@pytest.mark.parametrize("size", [(5, 7), (3, 4), (1, 1), (2, 3)])
def test_box_blur_matches_loop(size: tuple[int, int]) -> None:
    x = rand(2, 3, *size)
    torch.testing.assert_close(box_blur(x), ref_blur(x), **TOL)


@pytest.mark.parametrize(("big", "small"), [*PAIRS, ((8, 6), (4, 3)), ((2, 2), (1, 1))])
def test_blur_adjoint_is_the_adjoint_of_blurred_upsampling(
    big: tuple[int, int], small: tuple[int, int]
) -> None:
    """up*(blur(x)), whether by the 4×4 stride-2 kernel (exact halves) or in two steps,
    against the loop references, and <blur(up(y)), x> == <y, blur_adjoint(x)>."""
    x, y = rand(2, 3, *big, seed=3), rand(2, 3, *small, seed=4)
    out = blur_adjoint(x, small)
    torch.testing.assert_close(out, ref_adjoint(ref_blur(x), small), **TOL)
    lhs = (ref_blur(ref_up(y, big)) * x).sum()  # the loop references' blur(up(y))
    torch.testing.assert_close(lhs, (y * out).sum(), **TOL)


# Grids that a 2×2 pooling halves, dropping an odd last row or column: every remainder
# (0, 0), (1, 0), (0, 1), (1, 1), at sizes down to one cell of the small grid.
POOLED = [
    (tuple(2 * s + r for s, r in zip(small, odd, strict=True)), small)
    for small in ((1, 1), (3, 2), (4, 5))
    for odd in ((0, 0), (1, 0), (0, 1), (1, 1))
]


@pytest.mark.parametrize("blur", [False, True])
@pytest.mark.parametrize(("big", "small"), POOLED)
def test_adjoints_on_pooled_grids_forward_and_backward(
    big: tuple[int, int], small: tuple[int, int], blur: bool
) -> None:
    """On pooled grids the adjoints take a path of their own (stride-2 kernels and the
    leftover first row and column): their values against the loop references, and their
    gradients against those of the references (blur(up(g)) by the loops)."""
    x = rand(2, 3, *big, seed=5).requires_grad_(True)
    g = rand(2, 3, *small, seed=6)
    out = blur_adjoint(x, small) if blur else upsample_adjoint(x, small)
    expected = ref_adjoint(ref_blur(x) if blur else x, small)
    torch.testing.assert_close(out, expected, **TOL)
    (grad,) = torch.autograd.grad(out, x, g)
    up = ref_up(g, big)
    torch.testing.assert_close(grad, ref_blur(up) if blur else up, **TOL)


@pytest.mark.parametrize("shift", [-1.0, 0.5])
@pytest.mark.parametrize("blur", [False, True])
@pytest.mark.parametrize(("big", "small"), [*POOLED, ((5, 7), (5, 7)), ((1, 1), (1, 1))])
def test_shifted_adjoints_add_the_shift_inside_the_grid_only(
    big: tuple[int, int], small: tuple[int, int], blur: bool, shift: float
) -> None:
    """The adjoints with ``shift`` add it as a bias and set the edges right by hand: they
    must equal the adjoint of x + s (zeros outside the grid), and their gradient is that
    of the unshifted map. Same grids run the blur alone (upsampling is the identity)."""
    if big == small and not blur:
        with pytest.raises(ValueError, match="pooled grids"):
            upsample_adjoint(rand(1, 1, *big), small, shift=shift)
        return
    x = rand(2, 3, *big, seed=15).requires_grad_(True)
    g = rand(2, 3, *small, seed=16)
    out = blur_adjoint(x, small, shift=shift) if blur else upsample_adjoint(x, small, shift=shift)
    shifted = x + shift
    expected = ref_adjoint(ref_blur(shifted) if blur else shifted, small)
    torch.testing.assert_close(out, expected, **TOL)
    (grad,) = torch.autograd.grad(out, x, g)
    up = ref_up(g, big)
    torch.testing.assert_close(grad, ref_blur(up) if blur else up, **TOL)


# Where the adjoints hand out totals: pooled grids with and without the blur; one grid
# and other ratios with it.
TOTALS = [
    *((big, small, blur) for big, small in POOLED[4:8] for blur in (False, True)),
    ((5, 7), (5, 7), True),
    ((5, 7), (2, 3), True),
]


@pytest.mark.parametrize("used", ["both", "map", "totals"])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize(("big", "small", "blur"), TOTALS)
def test_adjoint_totals_and_their_gradient(
    big: tuple[int, int], small: tuple[int, int], blur: bool, batch: int, used: str
) -> None:
    """``totals`` hands out Σ over the grid of x + s with the adjoint, its gradient added
    inside the adjoint's backward pass (as the convolution's bias for one picture, after
    it for a batch): values and the gradient of any mix of the two outputs must be those
    of the reference, including when only one of them reaches the loss."""
    shift = -1.0
    x = rand(batch, 3, *big, seed=21).requires_grad_(True)
    g = rand(batch, 3, *small, seed=22)
    w = rand(batch, 3, seed=23)
    totals: list[torch.Tensor] = []
    adjoint = blur_adjoint if blur else upsample_adjoint
    out = adjoint(x, small, shift=shift, totals=totals)
    (sums,) = totals
    shifted = x + shift
    expected = ref_adjoint(ref_blur(shifted) if blur else shifted, small)
    torch.testing.assert_close(out, expected, **TOL)
    torch.testing.assert_close(sums, shifted.sum(dim=(2, 3)), **TOL)
    loss = {"both": (out * g).sum() + (sums * w).sum(), "map": (out * g).sum()}.get(
        used, (sums * w).sum()
    )
    (grad,) = torch.autograd.grad(loss, x)
    up = ref_up(g, big)
    expected_grad = torch.zeros_like(x)
    if used != "totals":
        expected_grad += ref_blur(up) if blur else up
    if used != "map":
        expected_grad += w[:, :, None, None]
    torch.testing.assert_close(grad, expected_grad, **TOL)


def test_cross_gives_both_gradients_as_whole_maps() -> None:
    """a·bᵀ's gradients: right, and laid out as the maps are (a later pass over a
    transposed gradient reads it across the grain)."""
    a = rand(2, 3, 11, seed=24).requires_grad_(True)
    b = rand(2, 4, 11, seed=25).requires_grad_(True)
    weights = rand(2, 3, 4, seed=26)
    got = _cross(a, b)
    expected = torch.einsum("bim,bjm->bij", a, b)
    torch.testing.assert_close(got, expected, **TOL)
    grads = torch.autograd.grad((got * weights).sum(), (a, b))
    ref_grads = torch.autograd.grad((expected * weights).sum(), (a, b))
    for mine, theirs in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(mine, theirs, **TOL)
        assert mine.is_contiguous()


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("blur", [False, True])
@pytest.mark.parametrize(("big", "small"), [*POOLED[4:], ((5, 7), (5, 7))])
def test_cross_gram_gradients_on_pooled_grids(
    big: tuple[int, int], small: tuple[int, int], blur: bool, batch: int
) -> None:
    """The shifted pair's Gram (the shift carried by the convolution's bias) and its
    gradients for both maps, against autograd through the loop reference: across every
    kind of pooling and on one grid, for one picture and for a batch."""
    a = rand(batch, 3, *big, seed=17).requires_grad_(True)
    b = rand(batch, 4, *small, seed=18).requires_grad_(True)
    weights = rand(batch, 3, 4, seed=19)
    got = cross_gram(a, b, -1.0, blur)
    expected = ref_cross_gram(a, b, -1.0, blur)
    torch.testing.assert_close(got, expected, **TOL)
    grads = torch.autograd.grad((got * weights).sum(), (a, b))
    ref_grads = torch.autograd.grad((expected * weights).sum(), (a, b))
    for mine, theirs in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(mine, theirs, **TOL)


@pytest.mark.parametrize(("big", "small"), POOLED)
def test_upsample_nearest_on_pooled_grids(big: tuple[int, int], small: tuple[int, int]) -> None:
    x = rand(2, 3, *small, seed=7)
    torch.testing.assert_close(upsample_nearest(x, big), ref_up(x, big), rtol=0, atol=0)


def test_box_blur_always_divides_by_nine() -> None:
    out = box_blur(torch.ones(1, 1, 3, 4, dtype=torch.float64))
    expected = torch.tensor([[4, 6, 6, 4], [6, 9, 9, 6], [4, 6, 6, 4]], dtype=torch.float64) / 9
    torch.testing.assert_close(out[0, 0], expected, rtol=0, atol=1e-15)


# ------------------------------------------------------------------------------- Grams


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("size", [(5, 7), (3, 4)])
def test_gram_matches_reference(size: tuple[int, int], shift: float) -> None:
    f = rand(2, 4, *size)
    g = gram(f, shift)
    assert g.shape == (2, 4, 4)
    torch.testing.assert_close(g, ref_gram(f, shift), **TOL)


@pytest.mark.parametrize("blur", [False, True])
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize(("big", "small"), PAIRS)
def test_cross_gram_matches_reference(
    big: tuple[int, int], small: tuple[int, int], shift: float, blur: bool
) -> None:
    a, b = rand(2, 3, *big, seed=3), rand(2, 5, *small, seed=4)
    g = cross_gram(a, b, shift, blur)
    assert g.shape == (2, 3, 5)
    torch.testing.assert_close(g, ref_cross_gram(a, b, shift, blur), **TOL)


def test_cross_gram_cases_discriminate_wrong_variants() -> None:
    """The reference cases above would catch the plausible mistakes of the formula."""
    a, b, s = rand(2, 3, 5, 7, seed=3), rand(2, 5, 2, 3, seed=4), -1.0
    g = cross_gram(a, b, s, blur=True)
    m = 35
    u = ref_up(b, (5, 7))
    shift_before_blur = torch.einsum(
        "bip,bjp->bij", (a + s).reshape(2, 3, m), ref_blur(u + s).reshape(2, 5, m)
    )
    blur_on_a_side = torch.einsum(
        "bip,bjp->bij", (ref_blur(a) + s).reshape(2, 3, m), (u + s).reshape(2, 5, m)
    )
    for wrong in (shift_before_blur / m, blur_on_a_side / m, ref_cross_gram(a, b, s, False)):
        assert not torch.allclose(g, wrong, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shift", SHIFTS)
def test_cross_gram_of_map_with_itself_is_gram(shift: float) -> None:
    a = rand(2, 4, 5, 7)
    torch.testing.assert_close(cross_gram(a, a, shift, blur=False), gram(a, shift), **TOL)


def test_cross_gram_rejects_larger_second_map() -> None:
    with pytest.raises(ValueError):
        cross_gram(rand(1, 2, 2, 3), rand(1, 2, 5, 7))


def test_offsets_order() -> None:
    # Row-major over (dy, dx) ∈ {−1, 0, 1}², as adjacent_gram's second axis is ordered.
    assert OFFSETS == (
        (-1, -1), (-1, 0), (-1, 1),
        (0, -1), (0, 0), (0, 1),
        (1, -1), (1, 0), (1, 1),
    )  # fmt: skip


@pytest.mark.parametrize("index", range(9))
def test_each_offset_pairs_a_position_with_its_neighbour_at_that_offset(index: int) -> None:
    """One active cell in a at (2, 2) and one in b at (2 + dy, 2 + dx): only the statistic
    of offset (dy, dx) sees them together."""
    dy, dx = OFFSETS[index]
    a = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    b = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    a[0, 0, 2, 2] = 1.0
    b[0, 0, 2 + dy, 2 + dx] = 1.0
    g = adjacent_gram(a, b)[0, :, 0, 0]
    expected = torch.zeros(9, dtype=torch.float64)
    expected[index] = 1.0 / 25
    torch.testing.assert_close(g, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("blur", [False, True])
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize(("big", "small"), PAIRS[:3])
def test_adjacent_gram_matches_reference(
    big: tuple[int, int], small: tuple[int, int], shift: float, blur: bool
) -> None:
    a, b = rand(2, 3, *big, seed=5), rand(2, 5, *small, seed=6)
    g = adjacent_gram(a, b, shift, blur)
    assert g.shape == (2, 9, 3, 5)
    torch.testing.assert_close(g, ref_adjacent_gram(a, b, shift, blur), **TOL)
    # the centre offset is the plain cross-layer Gram
    torch.testing.assert_close(g[:, 4], cross_gram(a, b, shift, blur), **TOL)


# --------------------------------------------------------------------- gradients, shift


def test_gradcheck_cross_gram() -> None:
    a = rand(1, 2, 5, 7, seed=7).requires_grad_()
    b = rand(1, 3, 2, 3, seed=8).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: cross_gram(x, y, -1.0, blur=True), (a, b))


@pytest.mark.parametrize("shift", [0.0, -1.0])
def test_gradcheck_gram(shift: float) -> None:
    f = rand(2, 3, 3, 4, seed=9).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: gram(x, shift), (f,))


def test_gradcheck_adjacent_gram() -> None:
    a = rand(1, 2, 3, 4, seed=10).requires_grad_()
    b = rand(1, 2, 2, 3, seed=11).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: adjacent_gram(x, y, -1.0, blur=True), (a, b))


def test_shift_removes_exact_zeros_of_dead_channels() -> None:
    f = torch.relu(rand(1, 8, 5, 5, seed=12))
    f[:, :4] = 0.0  # four dead channels
    g0, g1 = gram(f, 0.0), gram(f, -1.0)
    assert torch.all(g0[0, :4] == 0) and torch.all(g0[0, :, :4] == 0)
    frac0 = (g0 == 0).double().mean().item()
    frac1 = (g1 == 0).double().mean().item()
    assert frac0 >= 48 / 64
    assert frac1 < frac0
    assert frac1 == 0.0
    # dead-vs-dead entries become (0 − 1)² = 1 under s = −1
    torch.testing.assert_close(g1[0, :4, :4], torch.ones(4, 4, dtype=torch.float64), **TOL)
