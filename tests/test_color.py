"""Colour preservation: luminance-only transfer and colour matching, in float."""

from __future__ import annotations

import torch

from neuralart.color import (
    luminance,
    match_colors,
    match_luminance,
    rgb_to_yuv,
    with_chrominance,
    yuv_to_rgb,
)


def _image(seed: int, h: int = 9, w: int = 11) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g, dtype=torch.float64)


def test_yuv_round_trip_and_luma_weights():
    rgb = _image(0)
    torch.testing.assert_close(yuv_to_rgb(rgb_to_yuv(rgb)), rgb)
    y = rgb_to_yuv(rgb)[:, 0]
    torch.testing.assert_close(y, 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])
    grey = luminance(rgb)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    assert rgb_to_yuv(grey)[:, 1:].abs().max() < 1e-12  # a grey image has no chrominance


def test_with_chrominance_keeps_the_content_colour_exactly():
    content, painted = _image(1), luminance(_image(2))
    out = with_chrominance(painted, content)
    torch.testing.assert_close(rgb_to_yuv(out)[:, 1:], rgb_to_yuv(content)[:, 1:])
    torch.testing.assert_close(rgb_to_yuv(out)[:, 0], rgb_to_yuv(painted)[:, 0])


def test_match_luminance_moves_mean_and_std():
    style_y, content_y = _image(3)[:, :1] * 0.3, _image(4)[:, :1] * 0.8 + 0.1
    out = match_luminance(style_y, content_y)
    torch.testing.assert_close(out.mean(), content_y.mean())
    torch.testing.assert_close(out.std(), content_y.std())


def test_match_colors_moves_the_style_statistics_to_the_content():
    style = _image(5, 20, 30) ** 2
    content = _image(6, 24, 16) * torch.tensor([0.2, 0.9, 0.5], dtype=torch.float64).view(
        1, 3, 1, 1
    )
    out = match_colors(style, content)
    o, c = out[0].reshape(3, -1), content[0].reshape(3, -1)
    torch.testing.assert_close(o.mean(dim=1), c.mean(dim=1))
    torch.testing.assert_close(torch.cov(o), torch.cov(c), atol=1e-5, rtol=1e-4)
    assert out.shape == style.shape
