"""The distribution statistics (sliced Wasserstein, Gaussian W2, histograms) against naive
numpy references, their gradients, blends, refusals, and one short run of each preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuralart import cpucache
from neuralart.config import StyleConfig
from neuralart.errors import NeuralartError
from neuralart.layers import LAYER_NAMES
from neuralart.presets import list_presets, resolve
from neuralart.stats import REGISTRY, Term, statistic_for
from neuralart.stats.distribution import (
    COVARIANCE_RIDGE,
    GaussianTarget,
    GaussianW2,
    HistogramLoss,
    SlicedWasserstein,
    matched,
    matrix_sqrt,
    quantiles,
    trace_sqrt,
)

NAMES = ("sliced-wasserstein", "gaussian-w2", "histogram")
TERM = Term("conv1_1", ("conv1_1",), 1.0)


def _maps(channels: int, height: int, width: int, seed: int) -> torch.Tensor:
    """A (1, C, H, W) float64 map of non-negative values (as after a ReLU)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, channels, height, width, generator=generator, dtype=torch.float64)


def _style(name: str, **keys: object) -> StyleConfig:
    return StyleConfig(statistic=name, layers=("conv1_1",), **keys)  # type: ignore[arg-type]


def _quantile_np(sorted_values: np.ndarray, count: int) -> np.ndarray:
    """The quantile function of n ascending values (level (k + 0.5)/n each) at the levels
    (j + 0.5)/count, by np.interp."""
    n = len(sorted_values)
    return np.interp((np.arange(count) + 0.5) / count, (np.arange(n) + 0.5) / n, sorted_values)


def _sqrtm_np(a: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(a)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


# ------------------------------------------------------------------------ registry


def test_the_three_statistics_are_registered_and_their_presets_bundled():
    assert isinstance(REGISTRY["sliced-wasserstein"], SlicedWasserstein)
    assert isinstance(REGISTRY["gaussian-w2"], GaussianW2)
    assert isinstance(REGISTRY["histogram"], HistogramLoss)
    infos = {info.name: info for info in list_presets()}
    for name in NAMES:
        config, _ = resolve(name)
        assert config.style.statistic == name and config.style.weight > 0
        assert infos[name].extends == "classic" and infos[name].experimental
    assert not REGISTRY["sliced-wasserstein"].sum_over_positions
    assert not REGISTRY["histogram"].sum_over_positions
    assert REGISTRY["gaussian-w2"].sum_over_positions
    assert not any(REGISTRY[name].local for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_all_layers_with_geometric_weights(name):
    style = StyleConfig(statistic=name, layers="all", weighting="geometric")
    terms = statistic_for(style).terms(style)
    assert [t.layers for t in terms] == [(n,) for n in LAYER_NAMES]
    assert sum(t.weight for t in terms) == pytest.approx(1.0)
    assert terms[0].weight == pytest.approx(2**15 / (2**16 - 1))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("keys", "words"),
    [
        ({"shift": -1}, "style.shift -1 does not apply"),
        ({"pairs": "chain"}, "single layers"),
        ({"blur": True}, "single layers"),
        ({"adjacent": True}, "single layers"),
    ],
)
def test_shift_and_pairs_are_refused_in_one_line(name, keys, words):
    with pytest.raises(NeuralartError, match=words) as caught:
        resolve(name, {"style": keys})
    assert "\n" not in str(caught.value)


def test_gradient_weighting_and_a_negative_histogram_weight_are_refused():
    for name in ("sliced-wasserstein", "histogram"):
        with pytest.raises(NeuralartError, match=f"not with statistic {name}"):
            resolve(name, {"style": {"gradient_weighting": "mask"}})
    with pytest.raises(NeuralartError, match=r"style\.histogram_weight must be a finite number"):
        resolve("histogram", {"style": {"histogram_weight": -1.0}})
    assert resolve("histogram", {"style": {"histogram_weight": 0}})[0].style.histogram_weight == 0


@pytest.mark.parametrize("name", NAMES)
def test_memory_entries_and_style_copies(name):
    style = _style(name)
    statistic = statistic_for(style)
    (term,) = statistic.terms(style)
    small = statistic.memory(style, term, 64, 64)
    large = statistic.memory(style, term, 128, 128)
    assert small.statistic >= 64 * 64 and small.copies > 0
    if name == "gaussian-w2":  # moments: the picture's size does not matter
        assert large == small
    else:  # sorted values and matched copies of the map: 4x the positions
        assert large.statistic - 64 * 64 == 4 * (small.statistic - 64 * 64)
        assert large.copies == 4 * small.copies
    image = object()
    assert statistic.style_copies(image, style) == [(image, 1.0)]  # type: ignore[arg-type]
    assert statistic.min_edge(style) == 16


# ------------------------------------------------------------------------ quantiles


def test_quantiles_interpolate_like_numpy():
    generator = torch.Generator().manual_seed(1)
    rows = torch.rand(3, 7, generator=generator, dtype=torch.float64).sort(dim=-1).values
    for count in (1, 4, 7, 11, 30):
        got = quantiles(rows, count).numpy()
        expected = np.stack([_quantile_np(row, count) for row in rows.numpy()])
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert quantiles(rows, 7) is rows


def _matched_reference(values: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Row by row in Python: positions ranked by (value, position), -0 equal to +0 and
    NaN last, and rank j given level j of the row's levels."""
    flat = values.reshape(-1, values.shape[-1]).tolist()
    table = levels.tolist()
    out = []
    for r, row in enumerate(flat):
        ranked = sorted(range(len(row)), key=lambda i: (row[i] != row[i], row[i], i))
        placed = [0.0] * len(row)
        for j, i in enumerate(ranked):
            placed[i] = table[r % len(table)][j]
        out.append(placed)
    return torch.tensor(out, dtype=values.dtype).reshape(values.shape)


def _awkward_rows(seed: int) -> torch.Tensor:
    """(2, 3, 257) float32 rows with ties, ±0, ±inf, subnormals and NaN."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(2, 3, 257, generator=generator)
    values[..., ::5] = torch.round(values[..., ::5])  # many ties, -0 among them
    values[0, 0, :4] = torch.tensor([0.0, -0.0, float("inf"), float("-inf")])
    values[0, 1, 7] = float("nan")
    values[1, 2, :3] = torch.tensor([1e-42, -1e-42, 0.0])
    return values


@pytest.mark.parametrize("seed", [0, 1])
def test_matched_ranks_rows_stably_with_or_without_the_extension(monkeypatch, seed):
    """Histogram matching: each row's levels placed by the stable ranks of its values,
    the same numbers from the native radix sort and from torch's sort, against a Python
    reference."""
    values = _awkward_rows(seed)
    target = torch.randn(3, 100, generator=torch.Generator().manual_seed(9)).sort(-1).values
    levels = quantiles(target, values.shape[-1])
    expected = _matched_reference(values, levels)
    native = matched(values, target)
    monkeypatch.setattr(cpucache, "native", lambda: None)
    plain = matched(values, target)
    torch.testing.assert_close(plain, expected, rtol=0, atol=0)
    torch.testing.assert_close(native, expected, rtol=0, atol=0)


@pytest.mark.skipif(
    cpucache.native() is None, reason="the native extension is not built (make install builds it)"
)
def test_native_match_rows_on_long_rows_and_bad_shapes():
    """The radix sort itself on rows longer than its 8-bit digits separate in one pass,
    and its one-line refusals."""
    from neuralart import cpucache

    module = cpucache.native()
    generator = torch.Generator().manual_seed(3)
    values = torch.randn(1, 4, 70_000, generator=generator) * 1e3
    levels = torch.randn(4, 70_000, generator=generator).sort(-1).values
    order = torch.sort(values, dim=-1, stable=True).indices
    expected = torch.empty_like(values).scatter_(-1, order, levels.expand_as(values))
    assert torch.equal(module.match_rows(values, levels), expected)
    with pytest.raises(RuntimeError, match="float32"):
        module.match_rows(values.double(), levels)
    with pytest.raises(RuntimeError, match="repeat"):
        module.match_rows(values, levels[:3])


# ------------------------------------------------------------------------ sliced Wasserstein


def _sw_reference(picture: torch.Tensor, style: torch.Tensor, directions: np.ndarray) -> float:
    f = picture[0].reshape(picture.shape[1], -1).numpy()
    s = style[0].reshape(style.shape[1], -1).numpy()
    m = f.shape[1]
    total = 0.0
    for d in directions:
        projected = np.sort(d @ f)
        target = _quantile_np(np.sort(d @ s), m)
        total += float(np.sum((projected - target) ** 2))
    return total / (len(directions) * m)


@pytest.mark.parametrize("style_shape", [(4, 5), (3, 7), (6, 6)])
def test_sliced_wasserstein_against_numpy(style_shape):
    statistic = SlicedWasserstein()
    style = _style("sliced-wasserstein")
    picture, painting = _maps(6, 4, 5, 0), _maps(6, *style_shape, 1)
    torch.manual_seed(3)
    target = statistic.combine([statistic.target({"conv1_1": painting}, TERM, style)], [1.0])
    got = statistic.loss({"conv1_1": picture}, TERM, target, style)
    directions = target.directions.numpy()
    assert directions.shape == (6, 6)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0, rtol=1e-12)
    assert float(got) == pytest.approx(_sw_reference(picture, painting, directions), rel=1e-5)
    assert float(statistic.loss({"conv1_1": painting}, TERM, target, style)) == pytest.approx(
        0.0, abs=1e-20
    )


def test_sliced_wasserstein_directions_follow_the_seed_and_the_label():
    statistic = SlicedWasserstein()
    style = _style("sliced-wasserstein")
    a, b = _maps(5, 4, 4, 0), _maps(5, 6, 3, 1)
    torch.manual_seed(7)
    first = statistic.target({"conv1_1": a}, TERM, style).directions
    torch.rand(10)  # drawing numbers does not change the directions: the seed does
    assert torch.equal(statistic.target({"conv1_1": b}, TERM, style).directions, first)
    other_layer = Term("conv1_2", ("conv1_2",), 1.0)
    assert not torch.equal(statistic.target({"conv1_2": a}, other_layer, style).directions, first)
    torch.manual_seed(8)
    assert not torch.equal(statistic.target({"conv1_1": a}, TERM, style).directions, first)
    torch.manual_seed(7)
    assert torch.equal(statistic.target({"conv1_1": b}, TERM, style).directions, first)


def test_sliced_wasserstein_gradient():
    statistic = SlicedWasserstein()
    style = _style("sliced-wasserstein")
    torch.manual_seed(0)
    target = statistic.combine([statistic.target({"conv1_1": _maps(3, 3, 3, 1)}, TERM, style)], [1])
    picture = _maps(3, 2, 3, 2).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: statistic.loss({"conv1_1": x}, TERM, target, style), (picture,)
    )


def test_sliced_wasserstein_blends_are_barycentres():
    statistic = SlicedWasserstein()
    style = _style("sliced-wasserstein")
    torch.manual_seed(0)
    one = statistic.target({"conv1_1": _maps(4, 5, 4, 1)}, TERM, style)  # 20 positions
    two = statistic.target({"conv1_1": _maps(4, 3, 4, 2)}, TERM, style)  # 12 positions
    alone = statistic.combine([one], [1.0])
    torch.testing.assert_close(statistic.combine([one, one], [0.5, 0.5]).quantiles, one.quantiles)
    torch.testing.assert_close(statistic.combine([one, two], [1.0, 0.0]).quantiles, one.quantiles)
    blended = statistic.combine([one, two], [0.25, 0.75])
    expected = [
        0.25 * row_one + 0.75 * _quantile_np(row_two, 20)
        for row_one, row_two in zip(one.quantiles.numpy(), two.quantiles.numpy(), strict=True)
    ]
    np.testing.assert_allclose(blended.quantiles.numpy(), np.stack(expected), rtol=1e-12)
    picture = {"conv1_1": _maps(4, 4, 4, 3)}
    assert float(statistic.loss(picture, TERM, statistic.combine([two, one], [0, 1]), style)) == (
        pytest.approx(float(statistic.loss(picture, TERM, alone, style)), rel=1e-12)
    )


# ------------------------------------------------------------------------ histograms


def _histogram_reference(picture: torch.Tensor, style: torch.Tensor, weight: float) -> float:
    f = picture[0].reshape(picture.shape[1], -1).numpy()
    s = style[0].reshape(style.shape[1], -1).numpy()
    m = f.shape[1]
    squared = 0.0
    for channel in range(f.shape[0]):
        ranks = np.argsort(np.argsort(f[channel]))
        remapped = np.interp(
            (ranks + 0.5) / m, (np.arange(s.shape[1]) + 0.5) / s.shape[1], np.sort(s[channel])
        )
        squared += float(np.sum((f[channel] - remapped) ** 2))
    histogram = squared / f.size
    gram = np.mean((f @ f.T / m - s @ s.T / s.shape[1]) ** 2)
    return float(gram + weight * histogram)


@pytest.mark.parametrize(("style_shape", "weight"), [((4, 5), 1.0), ((3, 7), 0.5), ((8, 8), 3)])
def test_histogram_loss_against_numpy(style_shape, weight):
    statistic = HistogramLoss()
    style = _style("histogram", histogram_weight=weight)
    picture, painting = _maps(5, 4, 5, 0), _maps(5, *style_shape, 1)
    target = statistic.combine([statistic.target({"conv1_1": painting}, TERM, style)], [1.0])
    got = statistic.loss({"conv1_1": picture}, TERM, target, style)
    assert float(got) == pytest.approx(_histogram_reference(picture, painting, weight), rel=1e-5)
    no_histogram = _style("histogram", histogram_weight=0.0)
    assert float(statistic.loss({"conv1_1": picture}, TERM, target, no_histogram)) == (
        pytest.approx(_histogram_reference(picture, painting, 0.0), rel=1e-5)
    )


def test_histogram_gradient():
    statistic = HistogramLoss()
    style = _style("histogram", histogram_weight=2.0)
    target = statistic.combine([statistic.target({"conv1_1": _maps(3, 3, 3, 1)}, TERM, style)], [1])
    picture = _maps(3, 2, 3, 2).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: statistic.loss({"conv1_1": x}, TERM, target, style), (picture,)
    )


def test_histogram_blends_average_quantiles_and_grams():
    statistic = HistogramLoss()
    style = _style("histogram")
    one = statistic.target({"conv1_1": _maps(4, 5, 4, 1)}, TERM, style)
    two = statistic.target({"conv1_1": _maps(4, 3, 4, 2)}, TERM, style)
    same = statistic.combine([one, one], [0.5, 0.5])
    torch.testing.assert_close(same.quantiles, one.quantiles)
    torch.testing.assert_close(same.gram, one.gram)
    first = statistic.combine([one, two], [1.0, 0.0])
    torch.testing.assert_close(first.quantiles, one.quantiles)
    torch.testing.assert_close(first.gram, one.gram)
    blended = statistic.combine([one, two], [0.25, 0.75])
    torch.testing.assert_close(blended.gram, 0.25 * one.gram + 0.75 * two.gram)
    expected = [
        0.25 * a + 0.75 * _quantile_np(b, 20)
        for a, b in zip(one.quantiles.numpy(), two.quantiles.numpy(), strict=True)
    ]
    np.testing.assert_allclose(blended.quantiles.numpy(), np.stack(expected), rtol=1e-12)


# ------------------------------------------------------------------------ matrix square root


def _spd(batch: int, n: int, condition: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, n, n) symmetric positive definite matrices of the given condition number,
    and their exact square roots."""
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randn(batch, n, n, generator=generator, dtype=torch.float64)
    q, _ = torch.linalg.qr(raw)
    values = torch.logspace(0, -np.log10(condition), n, dtype=torch.float64) * 3.0
    a = (q * values) @ q.transpose(-2, -1)
    return a, torch.from_numpy(np.stack([_sqrtm_np(m) for m in a.numpy()]))


@pytest.mark.parametrize(
    ("condition", "dtype", "tolerance"),
    [
        (10.0, torch.float64, 1e-12),
        (1e4, torch.float64, 1e-12),
        (1e6, torch.float64, 1e-6),
        (1e2, torch.float32, 1e-5),
        (1e6, torch.float32, 1e-4),
    ],
)
def test_matrix_sqrt_against_the_eigendecomposition(condition, dtype, tolerance):
    a, exact = _spd(4, 7, condition, seed=int(condition))
    got = matrix_sqrt(a.to(dtype)).double()
    error = torch.linalg.matrix_norm(got - exact) / torch.linalg.matrix_norm(exact)
    assert float(error.max()) < tolerance
    # A random SPD matrix (not of a chosen spectrum), and the zero matrix.
    x = torch.randn(2, 6, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spd = x @ x.transpose(-2, -1) / 9
    expected = torch.from_numpy(np.stack([_sqrtm_np(m) for m in spd.numpy()]))
    torch.testing.assert_close(matrix_sqrt(spd), expected, rtol=1e-10, atol=1e-10)
    assert torch.equal(matrix_sqrt(torch.zeros(3, 3)), torch.zeros(3, 3))


def test_matrix_sqrt_gradient():
    a, _ = _spd(2, 3, 20.0, seed=0)
    assert torch.autograd.gradcheck(lambda m: matrix_sqrt(m).sum(), (a.requires_grad_(True),))


@pytest.mark.parametrize("condition", [3.0, 300.0])
def test_trace_sqrt_value_and_gradient_against_the_eigendecomposition(condition):
    """tr(A^½) and its gradient ½·A^-½, both from numpy's eigendecomposition."""
    a, _ = _spd(3, 6, condition, seed=7)
    x = a.clone().requires_grad_(True)
    value = trace_sqrt(x)
    (value * torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)).sum().backward()
    for i, m in enumerate(a.numpy()):
        w, v = np.linalg.eigh(m)
        assert float(value[i].detach()) == pytest.approx(np.sqrt(w).sum(), rel=1e-10)
        expected = 0.5 * [1.0, 2.0, -0.5][i] * (v / np.sqrt(w)) @ v.T
        np.testing.assert_allclose(x.grad[i].numpy(), expected, rtol=1e-8, atol=1e-10)
    # the same through autograd's own check (float64, finite differences)
    y = _spd(1, 4, 10.0, seed=1)[0].requires_grad_(True)
    sym = lambda m: trace_sqrt(0.5 * (m + m.transpose(-2, -1))).sum()  # noqa: E731
    assert torch.autograd.gradcheck(sym, (y,))


# ------------------------------------------------------------------------ Gaussian W2


def _w2_reference(picture: torch.Tensor, style: torch.Tensor) -> float:
    f = picture[0].reshape(picture.shape[1], -1).numpy()
    s = style[0].reshape(style.shape[1], -1).numpy()
    c = f.shape[0]
    mean_f, mean_s = f.mean(axis=1), s.mean(axis=1)
    cov_f = (f - mean_f[:, None]) @ (f - mean_f[:, None]).T / f.shape[1]
    cov_s = (s - mean_s[:, None]) @ (s - mean_s[:, None]).T / s.shape[1]
    ridge = COVARIANCE_RIDGE * np.sum(s**2) / s.size  # of the mean squared activation
    cov_f, cov_s = cov_f + ridge * np.eye(c), cov_s + ridge * np.eye(c)
    root = _sqrtm_np(cov_s)
    cross = _sqrtm_np(root @ cov_f @ root)
    w2 = np.sum((mean_f - mean_s) ** 2) + np.trace(cov_f + cov_s - 2 * cross)
    return float(w2 / c)


@pytest.mark.parametrize("style_shape", [(4, 8), (5, 6), (8, 8)])
def test_gaussian_w2_against_numpy(style_shape):
    statistic = GaussianW2()
    style = _style("gaussian-w2")
    picture, painting = _maps(5, 6, 7, 0), 1.5 * _maps(5, *style_shape, 1) ** 2
    target = statistic.combine([statistic.target({"conv1_1": painting}, TERM, style)], [1.0])
    assert isinstance(target, GaussianTarget)
    got = statistic.loss({"conv1_1": picture}, TERM, target, style)
    assert float(got) == pytest.approx(_w2_reference(picture, painting), rel=1e-5)
    itself = statistic.loss({"conv1_1": painting}, TERM, target, style)
    assert float(itself) == pytest.approx(0.0, abs=1e-10)
    # The packed moments alone are finished on the fly.
    raw = statistic.target({"conv1_1": painting}, TERM, style)
    assert float(statistic.loss({"conv1_1": picture}, TERM, raw, style)) == pytest.approx(
        float(got), rel=1e-12
    )


def test_gaussian_w2_gradient():
    statistic = GaussianW2()
    style = _style("gaussian-w2")
    target = statistic.combine([statistic.target({"conv1_1": _maps(3, 3, 4, 1)}, TERM, style)], [1])
    picture = _maps(3, 3, 3, 2).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: statistic.loss({"conv1_1": x}, TERM, target, style), (picture,)
    )


def test_gaussian_w2_partial_sums_add_up():
    statistic = GaussianW2()
    style = _style("gaussian-w2")
    feats = {"conv1_1": _maps(6, 7, 5, 0)}
    whole = statistic.partial_sum(feats, TERM, style)
    assert whole.shape == (1, 6, 7)
    top = torch.zeros(1, 1, 7, 5, dtype=torch.float64)
    top[..., :3, :] = 1.0
    parts = [
        statistic.partial_sum(feats, TERM, style, window=w, divisor=35) for w in (top, 1 - top)
    ]
    torch.testing.assert_close(parts[0] + parts[1], whole, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(statistic.join(parts), whole, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(parts[0], whole)
    f = feats["conv1_1"][0].reshape(6, -1)
    torch.testing.assert_close(whole[0, :, 6], f.mean(dim=1))
    torch.testing.assert_close(whole[0, :, :6], f @ f.T / 35)


def test_gaussian_w2_blends_average_means_and_second_moments():
    statistic = GaussianW2()
    style = _style("gaussian-w2")
    one = statistic.target({"conv1_1": _maps(4, 5, 4, 1)}, TERM, style)
    two = statistic.target({"conv1_1": 2.0 * _maps(4, 3, 4, 2)}, TERM, style)
    alone = statistic.combine([one], [1.0])
    for blend in (statistic.combine([one, one], [0.5, 0.5]), statistic.combine([one, two], [1, 0])):
        for got, expected in zip(blend, alone, strict=True):
            torch.testing.assert_close(got, expected)
    blended = statistic.combine([one, two], [0.25, 0.75])
    torch.testing.assert_close(blended.moments, 0.25 * one + 0.75 * two)
    np.testing.assert_allclose(
        (blended.root @ blended.root).numpy(),
        statistic._covariance(blended.moments).numpy() + float(blended.ridge) * np.eye(4),
        rtol=1e-8,
        atol=1e-12,
    )


# ------------------------------------------------------------------------ real runs


@pytest.mark.parametrize("name", NAMES)
def test_each_preset_lowers_its_style_loss(name, network, content_path, style_path):
    from neuralart.transfer import transfer

    config, _ = resolve(name, {"size": 40, "seed": 0, "optimizer": {"iterations": 5}})
    result = transfer(content_path, [style_path], config, network=network)
    assert result.final_losses["style"] < 0.8 * result.initial_losses["style"]


def test_gaussian_w2_in_tiles_gives_the_whole_objective_and_gradient(
    network, content_path, style_path
):
    """Shallow layers on a 96×64 picture in 32-px tiles (a 16-px halo): the tiles' moments
    add up, and the objective and its gradient are the whole picture's; the style target
    built tile by tile is the whole image's. The sorted statistics are never tiled."""
    from neuralart.images import image_to_tensor, load_image, resize_to
    from neuralart.losses import Objective
    from neuralart.tiles import halo_for, plan_tiles, style_targets
    from neuralart.tiling import TiledObjective

    conv = network.convention

    def picture(path):
        return conv.to_network(image_to_tensor(resize_to(load_image(path), (96, 64))))

    content, painting = picture(content_path), picture(style_path)
    x = content + 20.0 * torch.randn(content.shape, generator=torch.Generator().manual_seed(0))
    layers = {"layers": ["conv1_1", "conv2_1"]}
    config, _ = resolve("gaussian-w2", {"content": {"layers": ["conv2_2"]}, "style": layers})
    objective = Objective(
        network, config.content, config.style, content_image=content, style_images=[painting]
    )
    tiles = plan_tiles(64, 96, (32, 32), halo_for(objective.layers)[0])
    assert len(tiles) == 6 and any(tile.extended != (0, 64, 0, 96) for tile in tiles)
    leaf = x.clone().requires_grad_(True)
    whole = objective.total(objective.terms(leaf))
    (whole_grad,) = torch.autograd.grad(whole, leaf)
    _, total, grad = TiledObjective(objective, tiles).value_and_grad(x)
    torch.testing.assert_close(total, whole.detach(), rtol=1e-4, atol=0)
    # float32: W2 is a difference of traces, which magnifies the sums' rounding a little
    assert (grad - whole_grad).abs().max() <= 1e-3 * whole_grad.abs().max()
    statistic = objective.statistic
    parts = style_targets(network, painting, statistic, objective.style_terms, config.style, tiles)
    for term in objective.style_terms:
        built = statistic.combine([parts[term.label]], [1.0])
        torch.testing.assert_close(
            built.moments, objective.style_targets[term.label].moments, rtol=1e-4, atol=1e-5
        )
    for name in ("sliced-wasserstein", "histogram"):
        config, _ = resolve(name, {"style": layers})
        sorted_objective = Objective(
            network, config.content, config.style, content_image=content, style_images=[painting]
        )
        with pytest.raises(NeuralartError, match="cannot be evaluated tile by tile"):
            TiledObjective(sorted_objective, tiles)
