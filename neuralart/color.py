"""Keeping the photograph's colours (Gatys et al., "Preserving Color in Neural Artistic
Style Transfer", 2016): transfer on luminance only, or match the style's colours first.

All functions work on (1, 3, H, W) RGB tensors in [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor

# ITU-R BT.601 luma Y, and the colour differences U = 0.492 (B - Y), V = 0.877 (R - Y),
# built from Y so that a grey pixel has exactly no chrominance.
_LUMA = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
_TO_YUV = torch.stack(
    [
        _LUMA,
        0.492 * (torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64) - _LUMA),
        0.877 * (torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64) - _LUMA),
    ]
)


def rgb_to_yuv(rgb: Tensor) -> Tensor:
    m = _TO_YUV.to(rgb.device, rgb.dtype)
    return torch.einsum("ij,bjhw->bihw", m, rgb)


def yuv_to_rgb(yuv: Tensor) -> Tensor:
    m = torch.linalg.inv(_TO_YUV).to(yuv.device, yuv.dtype)
    return torch.einsum("ij,bjhw->bihw", m, yuv)


def luminance(rgb: Tensor) -> Tensor:
    """The luma Y as a grey RGB image (Y, Y, Y)."""
    y = rgb_to_yuv(rgb)[:, :1]
    return y.expand(-1, 3, -1, -1).contiguous()


def match_luminance(style_y: Tensor, content_y: Tensor) -> Tensor:
    """Shift and scale the style's luma to the content's mean and standard deviation."""
    s_mean, s_std = style_y.mean(), style_y.std().clamp_min(1e-6)
    return (style_y - s_mean) / s_std * content_y.std() + content_y.mean()


def with_chrominance(y_image: Tensor, content: Tensor) -> Tensor:
    """The luma of ``y_image`` (its mean over channels) with the content's U and V."""
    yuv = rgb_to_yuv(content)
    y = rgb_to_yuv(y_image)[:, :1]
    return yuv_to_rgb(torch.cat([y, yuv[:, 1:]], dim=1))


def _sqrt_psd(matrix: Tensor, inverse: bool = False) -> Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    values = values.clamp_min(1e-8)
    power = -0.5 if inverse else 0.5
    return vectors @ torch.diag(values**power) @ vectors.T


def match_colors(style: Tensor, content: Tensor) -> Tensor:
    """Map the style's pixel colours so their mean and covariance become the content's.

    x' = C_c^½ C_s^-½ (x − μ_s) + μ_c (the symmetric square roots), per pixel.
    """
    s = style[0].reshape(3, -1).double()  # (3, N)
    c = content[0].reshape(3, -1).double()
    mu_s, mu_c = s.mean(dim=1, keepdim=True), c.mean(dim=1, keepdim=True)
    cov_s = torch.cov(s) + 1e-6 * torch.eye(3, dtype=s.dtype)
    cov_c = torch.cov(c) + 1e-6 * torch.eye(3, dtype=c.dtype)
    transform = _sqrt_psd(cov_c) @ _sqrt_psd(cov_s, inverse=True)
    out = transform @ (s - mu_s) + mu_c
    return out.reshape_as(style[0]).unsqueeze(0).to(style.dtype)
