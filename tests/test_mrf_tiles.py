"""CNN-MRF by parts: tiles' shares of the energy and of the patch bank add up to the
whole map's, and the norms-only bank matches as the normalised one did."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from neuralart import mrf
from neuralart.config import StyleConfig
from neuralart.mrf import (
    extract_patches,
    match_patches,
    mrf_energy,
    normalise_patches,
    partial_energy,
    partial_patches,
    patch_norms,
)
from neuralart.stats import Part, statistic_for
from neuralart.stats.patches import PatchMatching

Tile = tuple[tuple[int, int], tuple[int, int, int, int], tuple[int, int, int, int]]


def randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def tiles(
    grid: tuple[int, int], rows: list[int], cols: list[int], before: int, after: int
) -> list[Tile]:
    """Tiles whose interiors split ``grid`` at ``rows`` and ``cols``: each tile's map (as
    (origin, (y0, y1, x0, x1) of the map, interior) reaches ``before`` cells above and left
    of its interior and ``after`` below and right, within the grid."""
    height, width = grid
    ys = [0, *rows, height]
    xs = [0, *cols, width]
    out: list[Tile] = []
    for y0, y1 in itertools.pairwise(ys):
        for x0, x1 in itertools.pairwise(xs):
            top, left = max(0, y0 - before), max(0, x0 - before)
            bottom, right = min(height, y1 + after), min(width, x1 + after)
            out.append(((top, left), (top, bottom, left, right), (y0, y1, x0, x1)))
    return out


def tiled_energy(
    whole: torch.Tensor,
    patches: torch.Tensor,
    norms: torch.Tensor,
    stride: int,
    parts: list[Tile],
    chunk: int | None = None,
) -> torch.Tensor:
    """Σ partial_energy over the tiles, each tile's map a slice of ``whole``."""
    grid = (whole.shape[-2], whole.shape[-1])
    total = whole.new_zeros(())
    for origin, (top, bottom, left, right), interior in parts:
        total = total + partial_energy(
            whole[:, :, top:bottom, left:right],
            patches,
            norms,
            stride=stride,
            origin=origin,
            interior=interior,
            grid=grid,
            chunk=chunk,
        )
    return total


def rows_of(patches: torch.Tensor) -> list[tuple[float, ...]]:
    """The patches as a sorted list of rows: a multiset to compare."""
    return sorted(tuple(row) for row in patches.flatten(1).tolist())


# (grid, size, stride, row splits, column splits)
PARTITIONS = [
    ((23, 19), 3, 2, [11], [9]),  # 2×2, an odd split on a stride-2 grid
    ((23, 19), 3, 2, [7, 16], []),  # 3×1
    ((23, 19), 3, 2, [1, 5, 20], [3, 4]),  # uneven, one-cell tiles, tiles holding no start
    ((20, 17), 3, 1, [6, 13], [8]),
    ((22, 21), 5, 3, [4, 10], [7, 14]),
    ((18, 16), 2, 2, [9], [5, 11]),
    ((9, 8), 3, 2, [4], [3]),  # small: the last tiles hold only the map's last patches
]


BEFORE = [0, 3, 4]  # cells of map above and left of an interior: 3 or 4 make odd origins


def test_the_partitions_give_tiles_whose_maps_start_at_odd_cells():
    for grid, size, _, rows, cols in PARTITIONS:
        origins = [o for before in BEFORE for o, _, _ in tiles(grid, rows, cols, before, size)]
        assert any(y % 2 for y, _ in origins) or not rows
        assert any(x % 2 for _, x in origins) or not cols


@pytest.mark.parametrize(("grid", "size", "stride", "rows", "cols"), PARTITIONS)
@pytest.mark.parametrize("before", BEFORE)
@pytest.mark.parametrize("extra", [0, 3])  # maps reach exactly k − 1 past the interior, or more
def test_partial_energies_add_up_to_the_whole_energy_and_gradient(
    grid, size, stride, rows, cols, before, extra
):
    channels = 4
    style = randn(1, channels, 12, 11, seed=1)
    patches = extract_patches(style, size, stride=1)
    norms = patch_norms(patches)
    base = randn(1, channels, *grid, seed=2)

    x = base.clone().requires_grad_(True)
    want = mrf_energy(x, patches, norms, stride=stride)
    want.backward()

    y = base.clone().requires_grad_(True)
    parts = tiles(grid, rows, cols, before, size - 1 + extra)
    got = tiled_energy(y, patches, norms, stride, parts)
    got.backward()

    torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-5, atol=0)
    assert x.grad is not None and y.grad is not None
    scale = float(x.grad.abs().max())
    assert scale > 0
    assert float((y.grad - x.grad).abs().max()) <= 1e-5 * scale


def test_partial_energy_in_double_precision_and_chunks_is_the_whole_energy():
    grid, size, stride = (21, 18), 3, 2
    style = randn(1, 3, 10, 10, seed=3, dtype=torch.float64)
    patches = extract_patches(style, size, 1)
    norms = patch_norms(patches)
    base = randn(1, 3, *grid, seed=4, dtype=torch.float64)
    x = base.clone().requires_grad_(True)
    want = mrf_energy(x, patches, norms, stride=stride)
    want.backward()
    for chunk in (1, 7, None):
        y = base.clone().requires_grad_(True)
        parts = tiles(grid, [5, 12], [9], 1, size - 1)
        got = tiled_energy(y, patches, norms, stride, parts, chunk=chunk)
        got.backward()
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
        torch.testing.assert_close(y.grad, x.grad, rtol=1e-10, atol=1e-14)


def test_a_part_without_patches_gives_zero_on_the_graph():
    features = randn(1, 2, 6, 6, seed=5).requires_grad_(True)
    patches = extract_patches(randn(1, 2, 5, 5, seed=6), 3, 1)
    # Interior rows 8..9 of a 10-row map: no start (starts ≤ 10 − 3 = 7 on rows 0, 2, ...).
    got = partial_energy(
        features, patches, patch_norms(patches), origin=(4, 0), interior=(8, 10, 0, 6), grid=(10, 6)
    )
    assert got.item() == 0.0 and got.requires_grad


def test_a_part_whose_map_stops_short_is_refused():
    patches = extract_patches(randn(1, 2, 5, 5, seed=7), 3, 1)
    short = randn(1, 2, 6, 9, seed=8)  # rows 0..5 hold no patch starting at 4 (needs 0..6)
    with pytest.raises(ValueError, match="does not hold"):
        partial_energy(
            short, patches, patch_norms(patches), origin=(0, 0), interior=(0, 5, 0, 9), grid=(9, 9)
        )


# ---------------------------------------------------------------------------------------
# partial_patches: a bank built part by part
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("grid", "size", "stride", "rows", "cols"), PARTITIONS)
@pytest.mark.parametrize("before", BEFORE)
def test_partial_patches_over_a_partition_are_the_whole_maps_patches(
    grid, size, stride, rows, cols, before
):
    features = randn(1, 3, *grid, seed=9)
    want = extract_patches(features, size, stride)
    pieces = [
        partial_patches(
            features[:, :, top:bottom, left:right], size, stride, origin, interior, grid
        )
        for origin, (top, bottom, left, right), interior in tiles(
            grid, rows, cols, before, size - 1
        )
    ]
    got = torch.cat(pieces)
    assert got.shape == want.shape
    assert rows_of(got) == rows_of(want)


def test_the_statistic_by_parts_builds_the_same_bank_and_loss():
    style = StyleConfig(statistic="mrf", layers=("conv3_1",))
    statistic = statistic_for(style)
    assert isinstance(statistic, PatchMatching)
    assert statistic.local is True
    assert statistic.margin(style) == style.patch_size - 1
    (term,) = statistic.terms(style)
    layer = term.layers[0]
    grid = (17, 15)
    style_map = {layer: randn(1, 5, *grid, seed=10)}
    parts = tiles(grid, [8], [5, 9], 3, statistic.margin(style))

    whole = statistic.combine([statistic.target(style_map, term, style)], [1.0])
    pieces = []
    for origin, (top, bottom, left, right), interior in parts:
        crop = {layer: style_map[layer][:, :, top:bottom, left:right]}
        pieces.append(statistic.partial_target(crop, term, style, Part(origin, interior, grid)))
    by_parts = statistic.combine(pieces, [1.0] * len(pieces))
    assert rows_of(by_parts[0]) == rows_of(whole[0])
    torch.testing.assert_close(by_parts[1], patch_norms(by_parts[0]), rtol=0, atol=0)
    assert by_parts[1].shape == (by_parts[0].shape[0],)

    picture = randn(1, 5, 19, 14, seed=11)
    x = picture.clone().requires_grad_(True)
    want = statistic.loss({layer: x}, term, whole, style)
    want.backward()
    y = picture.clone().requires_grad_(True)
    got = y.new_zeros(())
    for origin, (top, bottom, left, right), interior in tiles((19, 14), [6, 13], [7], 1, 2):
        feats = {layer: y[:, :, top:bottom, left:right]}
        got = got + statistic.partial_loss(
            feats, term, by_parts, style, Part(origin, interior, (19, 14))
        )
    got.backward()
    torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-5, atol=0)
    assert x.grad is not None and y.grad is not None
    assert float((y.grad - x.grad).abs().max()) <= 1e-5 * float(x.grad.abs().max())


def test_memory_counts_the_patches_and_one_norm_each():
    style = StyleConfig(statistic="mrf", layers=("conv3_1",), rotated_copies=1)
    statistic = statistic_for(style)
    (term,) = statistic.terms(style)
    h, w = 64 // 4, 48 // 4  # conv3_1's grid
    count = (h // 2 + 1) * (w // 2 + 1) * 3
    assert statistic.memory(style, term, 64, 48).statistic == count * (256 * 9 + 1)


# ---------------------------------------------------------------------------------------
# The norms-only bank
# ---------------------------------------------------------------------------------------


def reference_match(x: torch.Tensor, patches: torch.Tensor, stride: int) -> list[int]:
    """Argmax over an explicit normalised copy of the bank, by einsum over every x patch."""
    size = patches.shape[-1]
    normalised = patches / patches.flatten(1).norm(dim=1).clamp_min(1e-8).view(-1, 1, 1, 1)
    xs = x.unfold(2, size, stride).unfold(3, size, stride)  # (1, C, h, w, k, k)
    scores = torch.einsum("bcijuv,pcuv->pij", xs, normalised).flatten(1)  # (P, L)
    return scores.argmax(dim=0).tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_the_norms_only_bank_matches_as_the_normalised_bank(dtype, stride, monkeypatch):
    patches = extract_patches(randn(1, 4, 13, 12, seed=12, dtype=dtype), 3, 1)
    patches[5] = 0  # a zero patch: its norm is clamped, its scores are 0
    patches[7] *= 1e3
    norms = patch_norms(patches)
    x = randn(1, 4, 15, 14, seed=13, dtype=dtype)
    old = match_patches(x, normalise_patches(patches), stride=stride)  # the old form
    assert old.tolist() == reference_match(x, patches, stride)
    for chunk in (1, 5, 64, 10_000, None):
        got = match_patches(x, patches, norms, stride=stride, chunk=chunk)
        assert got.tolist() == old.tolist(), chunk
    # The automatic chunk also counts the normalised chunk it forms: tiny here.
    monkeypatch.setattr(mrf, "CHUNK_BYTES", 4 * 200)
    assert match_patches(x, patches, norms, stride=stride).tolist() == old.tolist()
    # Either form of the bank gives the same energy.
    assert torch.equal(
        mrf_energy(x, patches, norms, stride=stride),
        mrf_energy(x, patches, normalise_patches(patches), stride=stride),
    )


# ---------------------------------------------------------------------------------------
# mrf_energy against explicit loops
# ---------------------------------------------------------------------------------------


def loop_energy(x: torch.Tensor, style: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """Every x patch on the stride grid against every style patch (stride 1): the best
    normalised cross-correlation picks the match, held fixed; mean of (x − match)²."""
    _, channels, height, width = x.shape
    style_patches = [
        style[0, :, i : i + size, j : j + size]
        for i in range(style.shape[2] - size + 1)
        for j in range(style.shape[3] - size + 1)
    ]
    total = x.new_zeros(())
    count = 0
    for i in range(0, height - size + 1, stride):
        for j in range(0, width - size + 1, stride):
            patch = x[0, :, i : i + size, j : j + size]
            flat = patch.detach().flatten()
            best, best_score = 0, -math.inf
            for index, candidate in enumerate(style_patches):
                score = float(flat @ candidate.flatten()) / (
                    float(flat.norm()) * float(candidate.norm())
                )
                if score > best_score:
                    best, best_score = index, score
            total = total + ((patch - style_patches[best]) ** 2).sum()
            count += channels * size * size
    return total / count


@pytest.mark.parametrize(("size", "stride"), [(3, 2), (2, 1), (3, 3)])
def test_mrf_energy_with_norms_matches_explicit_loops(size, stride):
    style = randn(1, 3, 6, 7, seed=14, dtype=torch.float64)
    base = randn(1, 3, 8, 7, seed=15, dtype=torch.float64)
    patches = extract_patches(style, size, 1)
    x = base.clone().requires_grad_(True)
    got = mrf_energy(x, patches, patch_norms(patches), stride=stride)
    got.backward()
    ref_x = base.clone().requires_grad_(True)
    want = loop_energy(ref_x, style, size, stride)
    want.backward()
    torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(x.grad, ref_x.grad, rtol=1e-10, atol=1e-14)
