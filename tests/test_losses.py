"""Layer weights and the objective, against a naive computation."""

from __future__ import annotations

import pytest
import torch

from neuralart.config import ContentConfig, StyleConfig
from neuralart.layers import normalised_weights
from neuralart.losses import Objective, content_terms, tv_loss
from neuralart.presets import resolve
from neuralart.stats import style_terms
from neuralart.stats.gram import style_pairs


def test_classic_weights_are_uniform_and_sum_to_one():
    config, _ = resolve("classic")
    terms = style_terms(config.style)
    assert [t.layers for t in terms] == [(n, n) for n in config.style.layers]
    assert [t.weight for t in terms] == pytest.approx([0.2] * 5)
    assert content_terms(config.content) == [("conv4_2", 1.0)]


def test_geometric_weights_follow_the_paper():
    # D = 4: style 2^(D-d) = 8, 4, 2, 1; content 2^d = 2, 4, 8, 16 (then normalised).
    assert normalised_weights(4, "geometric", "style") == pytest.approx(
        [8 / 15, 4 / 15, 2 / 15, 1 / 15]
    )
    assert normalised_weights(4, "geometric", "content") == pytest.approx(
        [2 / 30, 4 / 30, 8 / 30, 16 / 30]
    )
    assert sum(normalised_weights(16, "geometric", "style")) == pytest.approx(1.0)


def test_pairs_patterns():
    chain = style_pairs(StyleConfig(pairs="chain"))
    assert (
        len(chain) == 15
        and chain[0] == ("conv1_1", "conv1_2")
        and chain[-1] == ("conv5_3", "conv5_4")
    )
    to_content = style_pairs(StyleConfig(pairs="all-to-conv4_2"))
    assert len(to_content) == 16 and ("conv4_2", "conv4_2") in to_content
    assert all("conv4_2" in p for p in to_content)
    assert style_pairs(StyleConfig(pairs=(("conv3_1", "conv1_1"),))) == [("conv1_1", "conv3_1")]


def _naive_gram(f: torch.Tensor, s: float) -> torch.Tensor:
    c = f.shape[1]
    flat = f[0].reshape(c, -1) + s
    return flat @ flat.T / flat.shape[1]


@pytest.mark.parametrize("shift", [0.0, -1.0])
def test_objective_matches_a_naive_computation(network, shift):
    torch.manual_seed(0)
    content = torch.randn(1, 3, 40, 48) * 50
    style = torch.randn(1, 3, 36, 44) * 50
    x = torch.randn(1, 3, 40, 48) * 50
    layers = ("conv1_1", "conv2_1", "conv3_1")
    objective = Objective(
        network,
        ContentConfig(layers=("conv2_2",), weight=2.0),
        StyleConfig(layers=layers, shift=shift, weight=30.0),
        content_image=content,
        style_images=[style],
        tv_weight=0.5,
        pixel_scale=255.0,
    )
    terms = objective.terms(x)
    with torch.no_grad():
        fx = network(x, ["conv1_1", "conv2_1", "conv2_2", "conv3_1"])
        fc = network(content, ["conv2_2"])
        fs = network(style, list(layers))
    c_ref = ((fx["conv2_2"] - fc["conv2_2"]) ** 2).sum() / fx["conv2_2"].numel()
    s_ref = sum(
        ((_naive_gram(fx[n], shift) - _naive_gram(fs[n], shift)) ** 2).mean() / 3 for n in layers
    )
    dy = ((x[:, :, 1:] - x[:, :, :-1]) / 255).pow(2).mean()
    dx = ((x[..., 1:] - x[..., :-1]) / 255).pow(2).mean()
    torch.testing.assert_close(terms["content"], c_ref, rtol=1e-4, atol=0)
    torch.testing.assert_close(terms["style"], s_ref, rtol=1e-4, atol=0)
    torch.testing.assert_close(terms["tv"], dx + dy, rtol=1e-5, atol=0)
    total = objective.total(terms)
    torch.testing.assert_close(
        total, 2.0 * c_ref + 30.0 * s_ref + 0.5 * (dx + dy), rtol=1e-4, atol=0
    )


def test_blend_of_one_and_zero_equals_the_single_style(network):
    torch.manual_seed(1)
    a, b, x = (torch.randn(1, 3, 32, 32) * 50 for _ in range(3))
    style = StyleConfig(layers=("conv1_1", "conv2_1"), shift=-1.0)
    content = ContentConfig()
    single = Objective(network, content, style, content_image=None, style_images=[a])
    blended = Objective(
        network, content, style, content_image=None, style_images=[a, b], blend=[1.0, 0.0]
    )
    torch.testing.assert_close(single.terms(x)["style"], blended.terms(x)["style"])
    assert "content" not in single.terms(x)


def test_tv_loss_of_a_constant_image_is_zero():
    assert float(tv_loss(torch.full((1, 3, 8, 8), 3.0), 1.0)) == 0.0
    assert float(tv_loss(torch.arange(16.0).view(1, 1, 4, 4), 1.0)) > 0
