"""The statistic protocol: registry, terms, partial sums, memory entries, style copies."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from neuralart.config import StyleConfig
from neuralart.errors import NeuralartError
from neuralart.layers import LAYERS
from neuralart.presets import resolve
from neuralart.stats import REGISTRY, statistic_for, style_terms, term_layers

# One configuration per way a sum statistic can be formed: plain and shifted Grams,
# cross-layer pairs across a pool (with and without blur), adjacent correlations, and the
# two three-way statistics.
SUM_CASES = {
    "gram": StyleConfig(layers=("conv1_1", "conv2_1"), shift=-1.0),
    "cross": StyleConfig(pairs=(("conv1_2", "conv2_1"),), shift=-1.0),
    "cross-blur": StyleConfig(pairs=(("conv1_2", "conv2_1"),), shift=-1.0, blur=True),
    "same-grid-blur": StyleConfig(pairs=(("conv1_1", "conv1_2"),), blur=True),
    "adjacent": StyleConfig(pairs=(("conv1_2", "conv2_1"),), shift=-1.0, adjacent=True),
    "adjacent-blur": StyleConfig(pairs=(("conv1_1", "conv1_2"),), adjacent=True, blur=True),
    "content-aware": StyleConfig(
        statistic="content-aware", layers=("conv2_1",), content_layer="conv2_2", shift=-1.0
    ),
    "gram-cube": StyleConfig(statistic="gram-cube", layers=("conv1_1",), shift=-0.5),
}


def _features(style: StyleConfig, height: int = 12, width: int = 10) -> dict[str, torch.Tensor]:
    """Random non-negative maps of the right channels and grids for every layer read."""
    generator = torch.Generator().manual_seed(0)
    feats = {}
    for name in term_layers(style_terms(style)):
        layer = LAYERS[name]
        h, w = layer.grid(height, width)
        channels = min(layer.channels, 12)  # few channels: the three-way kinds stay small
        feats[name] = torch.rand(1, channels, h, w, generator=generator, dtype=torch.float64)
    return feats


def test_every_statistic_name_is_registered_and_unknown_names_are_one_line_errors():
    assert set(REGISTRY) >= {"gram", "content-aware", "gram-cube", "mrf"}
    with pytest.raises(NeuralartError, match="did you mean 'gram'"):
        statistic_for(StyleConfig(statistic="gramm"))
    with pytest.raises(NeuralartError, match="unknown statistic"):
        resolve("classic", {"style": {"statistic": "nonsense"}})


@pytest.mark.parametrize("case", list(SUM_CASES))
def test_partial_sums_over_a_split_picture_add_up_to_the_statistic(case):
    """Σ over two disjoint windows (top rows, the rest) with the whole picture's M equals
    the statistic of the whole: what tiling relies on."""
    style = SUM_CASES[case]
    statistic = statistic_for(style)
    assert statistic.sum_over_positions
    feats = _features(style)
    for term in statistic.terms(style):
        whole = statistic.partial_sum(feats, term, style)
        h, w = feats[term.layers[0]].shape[-2:]
        top = torch.zeros(1, 1, h, w, dtype=torch.float64)
        top[..., : h // 3, :] = 1.0
        m = h * w
        assert statistic.positions(term, 12, 10) == m
        parts = statistic.partial_sum(
            feats, term, style, window=top, divisor=m
        ) + statistic.partial_sum(feats, term, style, window=1.0 - top, divisor=m)
        torch.testing.assert_close(parts, whole, rtol=1e-10, atol=1e-12)
        # A window is not a no-op: the top part alone is not the whole.
        alone = statistic.partial_sum(feats, term, style, window=top, divisor=m)
        assert not torch.allclose(alone, whole)


def test_a_top_window_of_the_gram_equals_the_gram_of_those_rows():
    """Independent check of one partial sum: the rows' own Gram, summed (not averaged)."""
    style = StyleConfig(layers=("conv1_1",), shift=-1.0)
    statistic = statistic_for(style)
    feats = _features(style)
    f = feats["conv1_1"]
    window = torch.zeros(1, 1, *f.shape[-2:], dtype=torch.float64)
    window[..., :4, :] = 1.0
    (term,) = statistic.terms(style)
    got = statistic.partial_sum(feats, term, style, window=window, divisor=1.0)
    rows = (f[0, :, :4, :] - 1.0).reshape(f.shape[1], -1)
    torch.testing.assert_close(got[0], rows @ rows.T)


def test_terms_name_the_layers_each_statistic_reads():
    chain = resolve("chain-blurred")[0].style
    terms = style_terms(chain)
    assert len(terms) == 15 and all(len(t.layers) == 2 for t in terms)
    assert sum(t.weight for t in terms) == pytest.approx(1.0)
    aware = StyleConfig(statistic="content-aware", layers=("conv1_1", "conv3_1"))
    assert [t.layers for t in style_terms(aware)] == [
        ("conv1_1", "conv4_2"),
        ("conv3_1", "conv4_2"),
    ]
    assert term_layers(style_terms(aware)) == ["conv1_1", "conv3_1", "conv4_2"]
    assert style_terms(StyleConfig(weight=0.0)) == []


def test_memory_entries_follow_the_statistics_sizes():
    """Independent arithmetic: N_a·N_b entries per pair (×9 adjacent), N²·K and N³."""
    h, w = 64, 48
    for style, expected in [
        (StyleConfig(pairs=(("conv3_4", "conv4_1"),)), 256 * 512),
        (StyleConfig(pairs=(("conv3_4", "conv4_1"),), adjacent=True), 9 * 256 * 512),
        (StyleConfig(statistic="content-aware", layers=("conv2_1",)), 128 * 128 * 512),
        (StyleConfig(statistic="gram-cube", layers=("conv2_1",)), 128**3),
    ]:
        statistic = statistic_for(style)
        (term,) = statistic.terms(style)
        assert statistic.memory(style, term, h, w).statistic == expected
    # A shifted chain pair across a pool keeps the shifted map (256·32·24 at conv3_4) and
    # the map reduced to conv4_1's grid (256·16·12).
    style = StyleConfig(pairs=(("conv3_4", "conv4_1"),), shift=-1.0)
    (term,) = statistic_for(style).terms(style)
    h3, w3 = 64 // 4, 48 // 4
    assert statistic_for(style).memory(style, term, h, w).copies == 256 * h3 * w3 + 256 * (
        h3 // 2
    ) * (w3 // 2)


def test_mrf_style_copies_keep_their_scale_relative_to_the_style_image():
    style = StyleConfig(statistic="mrf", layers=("conv3_1",), scaled_copies=2, rotated_copies=1)
    image = Image.new("RGB", (200, 100), "white")
    copies = statistic_for(style).style_copies(image, style)
    assert len(copies) == 1 + 2 + 4
    relative = sorted(round(r, 4) for _, r in copies)
    scaled = [round(1.05**k, 4) for k in (-2, -1, 1, 2)]
    assert all(s in relative for s in scaled) and 1.0 in relative
    rotated = [(copy, r) for copy, r in copies if copy is not image]
    assert len(rotated) == 2
    for copy, r in rotated:  # crops at the image's resolution: smaller, so r < 1
        assert 0.5 < r < 1.0 and r == pytest.approx(max(copy.size) / 200)


def test_statistic_specific_options_are_checked_by_their_statistic():
    with pytest.raises(NeuralartError, match="single layers"):
        resolve("classic", {"style": {"statistic": "gram-cube", "pairs": "chain"}})
    with pytest.raises(NeuralartError, match="patch_size"):
        resolve("cnn-mrf", {"style": {"patch_size": 0}})
    with pytest.raises(NeuralartError, match="not with statistic mrf"):
        resolve("cnn-mrf", {"style": {"gradient_weighting": "mask"}})


def test_renamed_keys_still_load_with_a_warning():
    from neuralart.errors import NeuralartWarning

    with pytest.warns(NeuralartWarning, match="style.scaled_copies"):
        config, _ = resolve("cnn-mrf", {"style": {"scales": 2}})
    assert config.style.scaled_copies == 2
    with pytest.raises(NeuralartError, match=r"give only style\.image_scale"):
        resolve("classic", {"style": {"scale": 2.0, "image_scale": 1.0}})


def test_a_new_statistic_needs_only_its_class_and_a_registry_line(
    monkeypatch, network, content_path, style_path
):
    """The extension point: a statistic of channel means, registered under a new name,
    runs through configuration, memory check, targets, loss and optimisation untouched."""
    import torch.nn.functional as F

    from neuralart.stats import Memory
    from neuralart.stats.gram import single_layer_terms
    from neuralart.stats.moments import MomentStatistic
    from neuralart.transfer import transfer

    class ChannelMeans(MomentStatistic):
        name = "channel-means"

        def terms(self, style):
            return single_layer_terms(style)

        def partial_sum(self, features, term, style, window=None, divisor=0.0):
            f = features[term.layers[0]] + style.shift
            if window is not None:
                f = f * window
            m = divisor or f.shape[-2] * f.shape[-1]
            return f.sum(dim=(2, 3)) / m  # (B, C)

        def memory(self, style, term, height, width):
            return Memory(LAYERS[term.layers[0]].channels, 0)

    monkeypatch.setitem(REGISTRY, "channel-means", ChannelMeans())
    config, _ = resolve(
        "classic",
        {
            "size": 40,
            "seed": 0,
            "optimizer": {"iterations": 8},
            "style": {"statistic": "channel-means", "weight": 1000.0},
        },
    )
    result = transfer(content_path, [style_path], config, network=network)
    assert result.final_losses["style"] < 0.5 * result.initial_losses["style"]
    # The loss is the mean squared difference of the channel means, as the class says.
    from neuralart.images import image_to_tensor, load_image, resize_long_edge

    conv = network.convention
    style_image = conv.to_network(image_to_tensor(resize_long_edge(load_image(style_path), 40)))
    content = conv.to_network(image_to_tensor(resize_long_edge(load_image(content_path), 40)))
    layers = list(config.style.layers)
    with torch.no_grad():
        s, c = network(style_image, layers), network(content, layers)
        expected = sum(
            F.mse_loss(c[n].mean(dim=(2, 3)), s[n].mean(dim=(2, 3))) / len(layers) for n in layers
        )
    assert result.initial_losses["style"] == pytest.approx(float(expected), rel=1e-4)


def test_resolving_every_preset_checks_its_statistic_without_importing_torch():
    """The statistics' own checks run before torch loads: resolving is fast and a bad
    option is refused before the network is read."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from neuralart.presets import bundled_names, resolve\n"
        "for name in bundled_names():\n"
        "    resolve(name)\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "NO-TORCH", proc.stdout + proc.stderr
