"""Statistics that match the distribution of a layer's activations, not only its Gram matrix.

* :class:`SlicedWasserstein` (``style.statistic: sliced-wasserstein``; Heitz, Vanhoey,
  Chambon & Belcour, CVPR 2021): the picture's and the style's feature vectors projected
  on C fixed random unit directions, each projection's sorted values compared.
* :class:`GaussianW2` (``style.statistic: gaussian-w2``): the Wasserstein-2 distance
  between the Gaussians of the two activation distributions' means and covariances.
* :class:`HistogramLoss` (``style.statistic: histogram``; Risser, Wilmot & Barnes 2017):
  each channel's activations histogram-matched to the style's, plus the layer's Gram term.

All three read single layers and are unchanged by the activation shift (it moves the
picture's and the style's activations alike), so they refuse a nonzero ``style.shift``.
A distribution is kept as its quantile function: ascending values q_0..q_{n-1} with q_k at
the level (k + 0.5)/n, linear in between and constant beyond (:func:`quantiles`). Several
style images blend into the weighted average of their quantile functions, the 1-D
Wasserstein barycentre. Only the Gaussian statistic is a sum over positions (tiled runs);
the sorted ones need the whole picture at once.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from neuralart.errors import NeuralartError
from neuralart.layers import LAYERS, MIN_EDGE
from neuralart.stats import Grids, Memory, Part, Term
from neuralart.stats.gram import check_single_layers, single_layer_terms
from neuralart.stats.moments import MomentStatistic

if TYPE_CHECKING:
    from PIL import Image
    from torch import Tensor

    from neuralart.config import StyleConfig

# Steps of the Newton–Schulz square root: eigenvalues down to about 2.25^-k of the
# matrix's Frobenius norm converge, the smaller ones come out too small.
SQRT_ITERATIONS = 20
# The ridge added to both covariances, as a fraction of the style's mean squared activation.
COVARIANCE_RIDGE = 1e-4


def check_unshifted(style: StyleConfig, reason: str) -> None:
    """Refuse ``style.shift`` where it would change nothing (one line, with ``reason``)."""
    if style.shift:
        raise NeuralartError(
            f"style.shift {style.shift:g} does not apply to statistic {style.statistic}: "
            f"{reason}; leave style.shift at 0"
        )


def quantiles(values: Tensor, count: int) -> Tensor:
    """Ascending rows (..., n) -> (..., count): each row's quantile function at the levels
    (j + 0.5)/count, interpolated linearly between the levels (k + 0.5)/n of its values and
    constant beyond them. A row is returned as it is when count = n."""
    import torch

    n = values.shape[-1]
    if n == count:
        return values
    at = ((torch.arange(count, dtype=torch.float64) + 0.5) * (n / count) - 0.5).clamp(0, n - 1)
    low = at.floor().long()
    high = (low + 1).clamp(max=n - 1)
    frac = (at - low).to(device=values.device, dtype=values.dtype)
    low, high = low.to(values.device), high.to(values.device)
    below = values.index_select(-1, low)
    return below + (values.index_select(-1, high) - below) * frac


def barycentre(rows: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """The weighted average of quantile functions (ascending rows, (..., n_i) each), all
    resampled to the longest n: per row, the 1-D Wasserstein barycentre."""
    count = max(row.shape[-1] for row in rows)
    total: Tensor | None = None
    for row, weight in zip(rows, weights, strict=True):
        part = quantiles(row, count) * weight
        total = part if total is None else total + part
    assert total is not None
    return total


def matched(values: Tensor, target: Tensor) -> Tensor:
    """(..., K, M) values -> the same shape, each row's values replaced rank by rank with
    the target's quantiles ((K, n) ascending rows) at (k + 0.5)/M: the row histogram-matched
    to the target, without a gradient. Σ (values − matched)² is Σ (sorted values − target
    quantiles)², and so is its gradient wherever no two values of a row tie.

    Ranks come from a stable sort (ties in position order), on the CPU from the native
    extension's radix sort where it is built (:func:`neuralart.cpucache.native`, three to
    four times faster than torch's sort there); the numbers are the same either way."""
    import torch

    from neuralart import cpucache

    with torch.no_grad():
        levels = quantiles(target, values.shape[-1])
        module = cpucache.native() if values.device.type == "cpu" else None
        if (
            module is not None
            and values.dtype == levels.dtype == torch.float32
            and levels.dim() == 2
            and values.dim() >= 2
            and values.shape[-2] == levels.shape[0]
        ):
            out: Tensor = module.match_rows(values, levels)
            return out
        order = torch.sort(values, dim=-1, stable=True).indices
        return torch.empty_like(values).scatter_(-1, order, levels.expand_as(values))


def matrix_sqrt(a: Tensor, iterations: int = SQRT_ITERATIONS) -> Tensor:
    """The square root of each symmetric positive semi-definite matrix of a (..., n, n)
    batch, by the coupled Newton–Schulz iteration on the matrix divided by its Frobenius
    norm ν: Y₀ = A/ν, Z₀ = I, T = (3I − Z·Y)/2, Y ← Y·T, Z ← T·Z; Y·√ν → A^½ (and
    Z/√ν → A^-½). Matrix products only (any device, float32 or float64), differentiable
    by autograd."""
    import torch

    norm = torch.linalg.matrix_norm(a, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    return _coupled(a / norm, iterations)[0] * norm.sqrt()


def _newton_schulz(a: Tensor, iterations: int) -> tuple[Tensor, Tensor]:
    """(A^½, A^-½) of a batch of symmetric positive definite matrices by the coupled
    Newton–Schulz iteration, without a graph."""
    import torch

    with torch.no_grad():
        norm = torch.linalg.matrix_norm(a, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
        root, inverse = _coupled(a / norm, iterations)
        return root * norm.sqrt(), inverse / norm.sqrt()


def _coupled(a: Tensor, iterations: int) -> tuple[Tensor, Tensor]:
    """The coupled iterates (Y, Z) → (A^½, A^-½) for A of norm at most 1."""
    import torch

    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
    y, z = a, eye
    for _ in range(iterations):
        t = 0.5 * (3.0 * eye - z @ y)
        y, z = y @ t, t @ z
    return y, z


def trace_sqrt(a: Tensor) -> Tensor:
    """tr(A^½) of each symmetric positive definite matrix of a (..., n, n) batch by
    :func:`matrix_sqrt`'s iteration, with the gradient ½·A^-½ taken from the same
    iteration's second iterate: no graph through the 20 steps, a third of their cost.
    (The exact gradient of an eigendecomposition is no cheaper on a GPU and, steep along
    the smallest eigenvalues, slows L-BFGS down several times.)"""
    import torch

    class _TraceSqrt(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, matrices: Tensor) -> Tensor:
            root, inverse = _newton_schulz(matrices, SQRT_ITERATIONS)
            ctx.save_for_backward(inverse)
            return root.diagonal(dim1=-2, dim2=-1).sum(-1)

        @staticmethod
        def backward(ctx: Any, grad: Tensor) -> Tensor:
            (inverse,) = ctx.saved_tensors
            return 0.5 * grad[..., None, None] * inverse

    return _TraceSqrt.apply(a)


def _directions(label: str, channels: int) -> Tensor:
    """(C, C) rows of unit length: random directions drawn from a generator seeded with
    torch's initial seed and the term's label, the same for every style image and level."""
    import torch

    # One hash of both: the CPU generator keeps only the low 32 bits of its seed.
    seed = zlib.crc32(f"{torch.initial_seed()}:{label}".encode())
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randn(channels, channels, generator=generator, dtype=torch.float64)
    return draws / draws.norm(dim=1, keepdim=True)


def _flat(features: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, M)."""
    return features.reshape(*features.shape[:2], -1)


def _positions(style: StyleConfig, term: Term, height: int, width: int) -> tuple[int, int, int]:
    """(C, M of the picture, M of the style image) on the term's layer."""
    layer = LAYERS[term.layers[0]]
    h, w = layer.grid(height, width)
    return layer.channels, h * w, max(1, round(h * w * style.image_scale**2))


class _WholePicture:
    """What the two sorted statistics share: single layers, no shift, the style image
    alone, and a target that needs the whole picture at once (no tiles)."""

    name = ""
    sum_over_positions = False
    local = False
    supports_gradient_weighting = False
    unshifted = ""  # why the shift changes nothing, for the refusal

    def validate(self, style: StyleConfig) -> None:
        check_single_layers(style)
        check_unshifted(style, self.unshifted)

    def terms(self, style: StyleConfig) -> list[Term]:
        return single_layer_terms(style)

    def min_edge(self, style: StyleConfig) -> int:
        return MIN_EDGE

    def style_copies(
        self, image: Image.Image, style: StyleConfig
    ) -> list[tuple[Image.Image, float]]:
        return [(image, 1.0)]

    def partial_target(
        self,
        features: dict[str, Tensor],
        term: Term,
        style: StyleConfig,
        part: Part,
        grids: Grids = None,
    ) -> Any:
        raise NeuralartError(
            f"statistic {self.name} sorts the whole picture's activations; its target "
            "cannot be built tile by tile"
        )

    def join(self, parts: Sequence[Any]) -> Any:
        raise NeuralartError(f"statistic {self.name} has no tiles' parts to join")


class Slices(NamedTuple):
    """A sliced-Wasserstein target: the directions (K, C) and, per direction, the style's
    sorted projections (K, n): their quantile function."""

    directions: Tensor
    quantiles: Tensor


class SlicedWasserstein(_WholePicture):
    """Per layer, the feature vectors F (C × M) projected on C random unit directions d_k
    (fixed by the seed and the layer's name), each projection sorted and compared with the
    quantile function Q_k of the style's: mean_{k, j} (sort(d_k·F)_j − Q_k((j + 0.5)/M))².
    Several style images: the average of their quantile functions per direction (the
    Wasserstein barycentre of the projected distributions)."""

    name = "sliced-wasserstein"
    unshifted = "it moves the picture's and the style's projections alike"

    def target(self, features: dict[str, Tensor], term: Term, style: StyleConfig) -> Slices:
        f = _flat(features[term.layers[0]])[0]  # (C, M_s)
        directions = _directions(term.label, f.shape[0]).to(f)
        return Slices(directions, (directions @ f).sort(dim=-1).values.detach())

    def combine(self, targets: Sequence[Any], weights: Sequence[float]) -> Slices:
        import torch

        directions = targets[0].directions
        if any(not torch.equal(t.directions, directions) for t in targets[1:]):
            raise ValueError("sliced-wasserstein targets of one term drew different directions")
        return Slices(directions, barycentre([t.quantiles for t in targets], weights))

    def loss(
        self, features: dict[str, Tensor], term: Term, target: Any, style: StyleConfig
    ) -> Tensor:
        import torch.nn.functional as F

        projected = target.directions @ _flat(features[term.layers[0]])  # (B, K, M)
        return F.mse_loss(projected, matched(projected, target.quantiles))

    def memory(self, style: StyleConfig, term: Term, height: int, width: int) -> Memory:
        """The directions and the style's sorted projections; the picture's projections
        and their matched values kept for the backward pass; the sorting order (int64)
        and the resampled quantiles while they are formed."""
        c, m, m_style = _positions(style, term, height, width)
        return Memory(c * c + c * m_style, 2 * c * m, 3 * c * m)


class HistogramTarget(NamedTuple):
    """A histogram target: each channel's quantile function (C, n) and the Gram matrix
    (1, C, C) of the same layer."""

    quantiles: Tensor
    gram: Tensor


class HistogramLoss(_WholePicture):
    """Per layer, gram + ``style.histogram_weight`` × histogram: the mean squared
    difference of the Gram matrices F·Fᵀ/M, and the mean squared distance from the
    activations to their histogram-matched copy (rank k of a channel's M values takes the
    style's quantile at (k + 0.5)/M; held constant). Several style images: the average of
    their quantile functions per channel, and of their Grams."""

    name = "histogram"
    unshifted = "its histograms move alike and its Gram term is unshifted"

    def target(
        self, features: dict[str, Tensor], term: Term, style: StyleConfig
    ) -> HistogramTarget:
        from neuralart.statistics import gram

        f = features[term.layers[0]]
        return HistogramTarget(_flat(f)[0].sort(dim=-1).values.detach(), gram(f[:1]).detach())

    def combine(self, targets: Sequence[Any], weights: Sequence[float]) -> HistogramTarget:
        grams = targets[0].gram * weights[0]
        for other, weight in zip(targets[1:], weights[1:], strict=True):
            grams = grams + other.gram * weight
        return HistogramTarget(barycentre([t.quantiles for t in targets], weights), grams)

    def loss(
        self, features: dict[str, Tensor], term: Term, target: Any, style: StyleConfig
    ) -> Tensor:
        import torch.nn.functional as F

        from neuralart.statistics import gram

        f = features[term.layers[0]]
        flat = _flat(f)
        histogram = F.mse_loss(flat, matched(flat, target.quantiles))
        return F.mse_loss(gram(f), target.gram.expand(f.shape[0], -1, -1)) + (
            style.histogram_weight * histogram
        )

    def memory(self, style: StyleConfig, term: Term, height: int, width: int) -> Memory:
        """The Gram and the style's sorted activations; the matched copy of the map kept
        for the backward pass; the sorting order (int64) and the resampled quantiles
        while it is formed."""
        c, m, m_style = _positions(style, term, height, width)
        return Memory(c * c + c * m_style, c * m, 3 * c * m)


class GaussianTarget(NamedTuple):
    """A Gaussian target: the packed moments (B, C, C + 1) of :meth:`GaussianW2.partial_sum`,
    the ridged covariance's square root (B, C, C), its trace (B,) and the ridge."""

    moments: Tensor
    root: Tensor
    trace: Tensor
    ridge: Tensor


class GaussianW2(MomentStatistic):
    """Per layer, the squared Wasserstein-2 distance between N(μ, Σ) of the picture's
    activations and N(μ_s, Σ_s) of the style's, divided by the channels C:

        (‖μ − μ_s‖² + tr(Σ + Σ_s − 2 (Σ_s^½ Σ Σ_s^½)^½)) / C,

    with the ridge ε·I added to both covariances (ε: COVARIANCE_RIDGE × the style's mean
    squared activation). Σ_s^½ comes from :func:`matrix_sqrt`, the trace of the product's
    root from :func:`trace_sqrt`, its gradient ½·(Σ_s^½ Σ Σ_s^½)^-½ from the same
    iteration. μ and S = Σ_p F_p F_pᵀ / M
    are sums over positions, packed as (C, C + 1) = [S | μ], so tiles add up; Σ = S − μμᵀ.
    Several style images average their μ and S; Σ_s^½ is formed once, when they are
    combined."""

    name = "gaussian-w2"

    def validate(self, style: StyleConfig) -> None:
        check_single_layers(style)
        check_unshifted(style, "it moves the picture's and the style's means alike")

    def terms(self, style: StyleConfig) -> list[Term]:
        return single_layer_terms(style)

    def partial_sum(
        self,
        features: dict[str, Tensor],
        term: Term,
        style: StyleConfig,
        window: Tensor | None = None,
        divisor: float = 0.0,
        grids: Grids = None,
    ) -> Tensor:
        import torch

        from neuralart.statistics import gram

        f = features[term.layers[0]]
        m = divisor or f.shape[-2] * f.shape[-1]
        inside = f if window is None else f * window
        mean = _flat(inside).sum(dim=-1, keepdim=True) / m  # (B, C, 1)
        return torch.cat([gram(f, window=window, divisor=divisor), mean], dim=-1)

    def combine(self, targets: Sequence[Any], weights: Sequence[float]) -> GaussianTarget:
        return self._finish(super().combine(targets, weights))

    def _finish(self, moments: Tensor) -> GaussianTarget:
        """The target of blended moments: Σ_s + εI, its square root and trace."""
        covariance = self._covariance(moments)
        channels = moments.shape[-2]
        ridge = COVARIANCE_RIDGE * moments.diagonal(dim1=-2, dim2=-1).sum(-1) / channels
        ridged = covariance + ridge[..., None, None] * self._eye(moments)
        root = matrix_sqrt(ridged)
        trace = ridged.diagonal(dim1=-2, dim2=-1).sum(-1)
        return GaussianTarget(moments, root, trace, ridge)

    @staticmethod
    def _eye(moments: Tensor) -> Tensor:
        import torch

        return torch.eye(moments.shape[-2], dtype=moments.dtype, device=moments.device)

    @staticmethod
    def _covariance(moments: Tensor) -> Tensor:
        """Σ = S − μμᵀ, symmetrised, from packed moments."""
        channels = moments.shape[-2]
        second, mean = moments[..., :channels], moments[..., channels:]
        covariance = second - mean @ mean.transpose(-2, -1)
        return 0.5 * (covariance + covariance.transpose(-2, -1))

    def distance(self, value: Tensor, target: Any) -> Tensor:
        """The W2 distance above between packed moments and a :class:`GaussianTarget` (or
        the packed moments of one, finished here)."""
        if not isinstance(target, GaussianTarget):
            target = self._finish(target)
        channels = value.shape[-2]
        ridge = target.ridge[..., None, None]
        covariance = self._covariance(value) + ridge * self._eye(value)
        product = target.root @ covariance @ target.root
        product = 0.5 * (product + product.transpose(-2, -1))
        cross = trace_sqrt(product)
        means = (value[..., channels] - target.moments[..., channels]).pow(2).sum(-1)
        own = covariance.diagonal(dim1=-2, dim2=-1).sum(-1)
        return ((means + own + target.trace - 2.0 * cross) / channels).mean()

    def memory(self, style: StyleConfig, term: Term, height: int, width: int) -> Memory:
        """The packed moments and Σ_s^½; Σ, the product Σ_s^½ Σ Σ_s^½ and its inverse
        root kept for the backward pass; a few C × C iterates while the root is formed."""
        c = LAYERS[term.layers[0]].channels
        return Memory(c * (c + 1) + c * c, 4 * c * c, 5 * c * c)
