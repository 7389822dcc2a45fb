"""The CNN-MRF energy (docs/method.md §6) against naive, loop-based references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from neuralart import mrf
from neuralart.mrf import (
    extract_patches,
    match_patches,
    mrf_energy,
    normalise_patches,
    style_variants,
)

# ---------------------------------------------------------------------------------------
# Naive references: explicit loops over positions, no unfold / conv.
# ---------------------------------------------------------------------------------------


def naive_patches(features: torch.Tensor, size: int, stride: int) -> list[torch.Tensor]:
    """Every (C, size, size) patch of features[0] on a stride grid, row-major."""
    _, _, height, width = features.shape
    out = []
    for i in range(0, height - size + 1, stride):
        for j in range(0, width - size + 1, stride):
            out.append(features[0, :, i : i + size, j : j + size])
    return out


def naive_ncc(a: torch.Tensor, b: torch.Tensor) -> float:
    """Normalised cross-correlation <a, b> / (|a| |b|), written out element by element."""
    dot = 0.0
    na = 0.0
    nb = 0.0
    for u, v in zip(a.flatten().tolist(), b.flatten().tolist(), strict=True):
        dot += u * v
        na += u * u
        nb += v * v
    return dot / (math.sqrt(na) * math.sqrt(nb))


def naive_match(x_features: torch.Tensor, style: list[torch.Tensor], size: int, stride: int):
    """Brute-force argmax of the NCC over the style patches, for every x patch."""
    indices = []
    for x in naive_patches(x_features.detach(), size, stride):
        scores = [naive_ncc(x, s) for s in style]
        indices.append(max(range(len(scores)), key=scores.__getitem__))
    return indices


def naive_energy(
    x_features: torch.Tensor, style: list[torch.Tensor], index: list[int], size: int, stride: int
) -> torch.Tensor:
    """Mean over x patches and their C·k·k entries of (x patch − matched patch)²."""
    total = x_features.new_zeros(())
    count = 0
    for x, j in zip(naive_patches(x_features, size, stride), index, strict=True):
        total = total + ((x - style[j].detach()) ** 2).sum()
        count += x.numel()
    return total / count


def rand(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=generator, dtype=torch.float64)


# ---------------------------------------------------------------------------------------
# extract_patches / normalise_patches
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize(("channels", "height", "width"), [(3, 7, 6), (2, 5, 9)])
def test_extract_patches_matches_loop(stride, channels, height, width):
    features = rand(1, channels, height, width, seed=1)
    got = extract_patches(features, size=3, stride=stride)
    want = torch.stack(naive_patches(features, 3, stride))
    assert got.shape == want.shape == (want.shape[0], channels, 3, 3)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_extract_patches_defaults_are_size_3_stride_1():
    features = rand(1, 3, 7, 6, seed=2)
    got = extract_patches(features)
    assert got.shape == (5 * 4, 3, 3, 3)
    torch.testing.assert_close(got, torch.stack(naive_patches(features, 3, 1)), rtol=0, atol=0)


def test_normalise_patches_unit_norm_and_zero_patch_stays_zero():
    patches = rand(6, 3, 3, 3, seed=3) * torch.tensor([1.0, 10.0, 0.1, 5.0, 0.0, 2.0]).view(
        -1, 1, 1, 1
    )
    got = normalise_patches(patches)
    for p, g in zip(patches, got, strict=True):
        norm = math.sqrt(sum(v * v for v in p.flatten().tolist()))
        if norm == 0:
            assert torch.all(g == 0) and torch.isfinite(g).all()
        else:
            torch.testing.assert_close(g, p / norm)


# ---------------------------------------------------------------------------------------
# match_patches
# ---------------------------------------------------------------------------------------


def test_match_patches_matches_brute_force_ncc():
    style_features = torch.randn(
        1, 3, 8, 7, generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    x_features = torch.randn(
        1, 3, 9, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    patches = extract_patches(style_features, 3, 1)
    style = naive_patches(style_features, 3, 1)
    got = match_patches(x_features, normalise_patches(patches), stride=2)
    want = naive_match(x_features, style, 3, 2)
    assert got.dtype == torch.long
    assert got.shape == (4 * 3,)
    assert got.tolist() == want


def test_match_patches_default_stride_is_2_on_uneven_grid():
    # H=7, W=6 with k=3, stride 2: a 3×2 grid that leaves a remainder column.
    style_features = rand(1, 3, 6, 6, seed=6)
    x_features = rand(1, 3, 7, 6, seed=7)
    style = naive_patches(style_features, 3, 1)
    got = match_patches(x_features, normalise_patches(extract_patches(style_features)))
    assert got.tolist() == naive_match(x_features, style, 3, 2)


def test_match_uses_normalised_cross_correlation_not_dot_or_l2():
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(1, 3, 3, 3, generator=gen, dtype=torch.float64)  # one x patch
    poor = x[0] + 3.0 * torch.randn(3, 3, 3, generator=gen, dtype=torch.float64)
    close = x[0] + 0.2 * torch.randn(3, 3, 3, generator=gen, dtype=torch.float64)
    style = [
        100.0 * poor,  # huge multiple of a poor match: best by plain dot product
        close,  # a near copy: best by L2 distance
        0.01 * x[0],  # exactly parallel but tiny: best by NCC (= 1)
    ]
    # The three criteria really disagree here.
    dots = [float((x[0] * s).sum()) for s in style]
    dists = [float(((x[0] - s) ** 2).sum()) for s in style]
    nccs = [naive_ncc(x[0], s) for s in style]
    assert int(np.argmax(dots)) == 0
    assert int(np.argmin(dists)) == 1
    assert int(np.argmax(nccs)) == 2

    patches = torch.stack(style)
    got = match_patches(x, normalise_patches(patches), stride=2)
    assert got.tolist() == [2]
    # And the energy is measured against the (unnormalised) matched patch.
    energy = mrf_energy(x, patches, normalise_patches(patches), stride=2)
    torch.testing.assert_close(energy, ((x[0] - 0.01 * x[0]) ** 2).mean())


def test_chunked_and_unchunked_matching_agree(monkeypatch):
    style_features = rand(1, 4, 9, 9, seed=9)  # 7×7 = 49 style patches
    x_features = rand(1, 4, 11, 10, seed=10)
    patches = extract_patches(style_features, 3, 1)
    assert patches.shape[0] == 49
    normalised = normalise_patches(patches)
    want = naive_match(x_features, naive_patches(style_features, 3, 1), 3, 2)
    results = {
        chunk: match_patches(x_features, normalised, stride=2, chunk=chunk).tolist()
        for chunk in (1, 3, 7, 48, 49, 1000, None)
    }
    for chunk, got in results.items():
        assert got == want, f"chunk={chunk}"
    # The automatic chunk size is used when it is small, too (3 style patches at a time).
    positions = len(want)
    monkeypatch.setattr(mrf, "CHUNK_BYTES", 4 * positions * 3)
    assert match_patches(x_features, normalised, stride=2).tolist() == want


def test_identical_features_match_themselves_with_zero_energy():
    features = rand(1, 5, 9, 8, seed=11)
    patches = extract_patches(features, 3, 1)  # style: stride 1
    normalised = normalise_patches(patches)
    index = match_patches(features, normalised, stride=2)  # x: stride 2
    x_patches = naive_patches(features, 3, 2)
    assert len(index) == len(x_patches) == 4 * 3
    for x, j in zip(x_patches, index.tolist(), strict=True):
        torch.testing.assert_close(patches[j], x, rtol=0, atol=1e-12)
    energy = mrf_energy(features, patches, normalised, stride=2)
    assert abs(float(energy)) <= 1e-12


# ---------------------------------------------------------------------------------------
# mrf_energy
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [None, 2])
def test_mrf_energy_and_gradient_match_naive_loop(chunk):
    style_features = rand(1, 3, 8, 8, seed=12)
    patches = extract_patches(style_features, 3, 1)
    normalised = normalise_patches(patches)
    style = naive_patches(style_features, 3, 1)
    base = rand(1, 3, 9, 7, seed=13)

    x = base.clone().requires_grad_(True)
    energy = mrf_energy(x, patches, normalised, stride=2, chunk=chunk)
    energy.backward()

    ref_x = base.clone().requires_grad_(True)
    index = naive_match(ref_x, style, 3, 2)  # held fixed
    ref = naive_energy(ref_x, style, index, 3, 2)
    ref.backward()

    assert energy.ndim == 0
    assert energy.item() > 0
    torch.testing.assert_close(energy.detach(), ref.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(x.grad, ref_x.grad, rtol=1e-10, atol=1e-14)


def test_mrf_energy_default_stride_is_2():
    style_features = rand(1, 2, 7, 7, seed=14)
    patches = extract_patches(style_features, 3, 1)
    style = naive_patches(style_features, 3, 1)
    x = rand(1, 2, 8, 9, seed=15)
    got = mrf_energy(x, patches, normalise_patches(patches))
    want = naive_energy(x, style, naive_match(x, style, 3, 2), 3, 2)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------
# style_variants
# ---------------------------------------------------------------------------------------

GREY = 128


def _inscribed_factor(width: int, height: int, degrees: float) -> float:
    """Largest centred same-aspect rectangle inside a w×h frame rotated by ``degrees``.

    The corners (±a·w/2, ±a·h/2) must stay inside the rotated frame:
    a·(w·cos + h·sin) ≤ w and a·(w·sin + h·cos) ≤ h.
    """
    c, s = math.cos(math.radians(abs(degrees))), math.sin(math.radians(abs(degrees)))
    return min(width / (width * c + height * s), height / (width * s + height * c))


@pytest.mark.parametrize("size", [(64, 48), (45, 70)])
def test_style_variants_count_order_and_sizes(size):
    w, h = size
    image = Image.new("RGB", size, (GREY, GREY, GREY))
    pairs = style_variants(image, rotations=1, scales=1)
    variants = [v for v, _ in pairs]
    assert len(variants) == 5
    assert pairs[0] == (image, 1.0)
    # Scaled copies are the image itself with its factor (resized once, per level).
    assert pairs[3] == (image, pytest.approx(1.05)) and pairs[4] == (image, pytest.approx(1 / 1.05))
    for rotated, relative in pairs[1:3]:
        factor = _inscribed_factor(w, h, 7.5)
        cw, ch = rotated.size
        assert abs(cw - w * factor) <= 1 and abs(ch - h * factor) <= 1
        assert relative == pytest.approx(max(cw, ch) / max(w, h))
    assert len(style_variants(image)) == 1
    assert len(style_variants(image, rotations=2, scales=3)) == 1 + 4 + 6


@pytest.mark.parametrize("size", [(64, 48), (45, 70), (40, 40)])
def test_rotated_variants_have_no_black_corner_fill(size):
    image = Image.new("RGB", size, (GREY, GREY, GREY))
    variants = [v for v, _ in style_variants(image, rotations=2, scales=0)]
    assert len(variants) == 5
    for rotated in variants[1:]:
        pixels = np.asarray(rotated.convert("RGB")).astype(int)
        deviation = np.abs(pixels - GREY).max(axis=2)
        assert (deviation <= 3).mean() > 0.99
        for corner in (pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]):
            assert np.abs(corner - GREY).max() <= 3, corner


def test_rotated_variants_turn_by_minus_then_plus_7_5_degrees_per_step():
    # A bright vertical bar on black; PIL's positive angle turns counter-clockwise, which
    # in image coordinates (y down) makes the bar's x grow with y at slope tan(angle).
    image = Image.new("RGB", (81, 61), (0, 0, 0))
    ImageDraw.Draw(image).rectangle((39, 0, 41, 60), fill=(255, 255, 255))
    variants = [v for v, _ in style_variants(image, rotations=2, scales=0)]
    expected = [-7.5, 7.5, -15.0, 15.0]
    for rotated, angle in zip(variants[1:], expected, strict=True):
        bright = np.asarray(rotated.convert("L")).astype(float)
        rows = [y for y in range(bright.shape[0]) if bright[y].sum() > 0]
        centres = [(bright[y] * np.arange(bright.shape[1])).sum() / bright[y].sum() for y in rows]
        slope = np.polyfit(rows, centres, 1)[0]
        assert slope == pytest.approx(math.tan(math.radians(angle)), abs=0.02), angle
