"""Every Table 2 preset: its pairs and weights pinned, and each one runs on the real network."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from neuralart.losses import content_terms
from neuralart.presets import bundled_names, list_presets, resolve
from neuralart.stats import style_terms as registry_terms
from neuralart.transfer import transfer

GRAM_PRESETS = [
    "classic",
    "classic-shifted",
    "classic-dense",
    "all-to-content",
    "chain",
    "chain-uniform",
    "chain-unshifted",
    "chain-blurred",
    "chain-extended",
]
ALL16 = [
    f"conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4)) for i in range(1, n + 1)
]
# The paper's list (§3.5), deepest pair first.
CHAIN = [
    ("conv5_4", "conv5_3"), ("conv5_3", "conv5_2"), ("conv5_2", "conv5_1"),
    ("conv5_1", "conv4_4"), ("conv4_4", "conv4_3"), ("conv4_3", "conv4_2"),
    ("conv4_2", "conv4_1"), ("conv4_1", "conv3_4"), ("conv3_4", "conv3_3"),
    ("conv3_3", "conv3_2"), ("conv3_2", "conv3_1"), ("conv3_1", "conv2_2"),
    ("conv2_2", "conv2_1"), ("conv2_1", "conv1_2"), ("conv1_2", "conv1_1"),
]  # fmt: skip


# Every bundled preset's resolved configuration, captured before the presets were rewritten
# to hold only what they change (extends:): the rewrite changed no value. Changed since by
# hand only where a value was meant to change: the chain presets' style weights after the
# defaults check (docs/defaults-check.md).
RESOLVED_BEFORE = Path(__file__).with_name("presets_resolved.json")


@pytest.mark.parametrize("name", bundled_names())
def test_every_bundled_preset_resolves_as_before_extends(name):
    expected = json.loads(RESOLVED_BEFORE.read_text(encoding="utf-8"))
    assert resolve(name)[0].to_dict() == expected[name]


def test_no_bundled_preset_went_missing():
    expected = json.loads(RESOLVED_BEFORE.read_text(encoding="utf-8"))
    assert sorted(bundled_names()) == sorted(expected)


def test_all_nine_gram_presets_are_bundled_in_table_order():
    assert bundled_names()[:9] == GRAM_PRESETS
    rows = {info.name: info.paper_row for info in list_presets()}
    assert rows["chain-blurred"] == "Chain Blurred" and rows["all-to-content"] == "All-To-Content"


class Pair(NamedTuple):
    """A style term as the layers it correlates: a Gram of one layer is the pair (l, l)."""

    a: str
    b: str
    weight: float


def style_terms(style):
    return [Pair(t.layers[0], t.layers[-1], t.weight) for t in registry_terms(style)]


def _terms(name):
    config, _ = resolve(name)
    return config, style_terms(config.style), content_terms(config.content)


@pytest.mark.parametrize("name", ["chain", "chain-unshifted", "chain-blurred", "chain-extended"])
def test_chain_presets_use_the_15_adjacent_pairs_with_geometric_weights(name):
    _config, terms, content = _terms(name)
    assert {frozenset(p) for p in CHAIN} == {frozenset((t.a, t.b)) for t in terms}
    assert len(terms) == 15
    # Ranked by the shallower layer: conv1_1-conv1_2 first, weight 2^14 / (2^15 - 1).
    assert (terms[0].a, terms[0].b) == ("conv1_1", "conv1_2")
    assert terms[0].weight == pytest.approx(16384 / 32767)
    assert (terms[-1].a, terms[-1].b) == ("conv5_3", "conv5_4")
    assert terms[-1].weight == pytest.approx(1 / 32767)
    assert [t.weight for t in terms] == pytest.approx(
        [2.0 ** (15 - d) / 32767 for d in range(1, 16)]
    )
    # Content: all 16 layers, 2^d / (2^17 - 2).
    assert [n for n, _ in content] == ALL16
    assert content[0][1] == pytest.approx(2 / 131070) and content[-1][1] == pytest.approx(
        65536 / 131070
    )


def test_chain_variants_differ_only_where_the_paper_says():
    chain = resolve("chain")[0].style
    assert (chain.shift, chain.blur, chain.adjacent, chain.weighting) == (
        -1,
        False,
        False,
        "geometric",
    )
    assert resolve("chain-unshifted")[0].style.shift == 0
    assert resolve("chain-blurred")[0].style.blur is True
    assert resolve("chain-extended")[0].style.adjacent is True
    uniform = style_terms(resolve("chain-uniform")[0].style)
    assert [t.weight for t in uniform] == pytest.approx([1 / 15] * 15)


def test_all_to_content_pairs_every_layer_with_conv4_2():
    config, terms, _content = _terms("all-to-content")
    assert len(terms) == 16
    assert [t.a if t.b == "conv4_2" else t.b for t in terms] == ALL16
    assert all("conv4_2" in (t.a, t.b) for t in terms)
    assert terms[0].weight == pytest.approx(2**15 / 65535)
    assert terms[9].a == terms[9].b == "conv4_2"
    assert config.style.shift == -1 and config.style.weighting == "geometric"


def test_classic_dense_uses_the_gram_of_all_16_layers():
    config, terms, content = _terms("classic-dense")
    assert [(t.a, t.b) for t in terms] == [(n, n) for n in ALL16]
    assert terms[0].weight == pytest.approx(2**15 / 65535)
    assert config.style.shift == -1 and [n for n, _ in content] == ALL16


@pytest.mark.parametrize("name", ["classic", "classic-shifted"])
def test_classic_weights_are_uniform(name):
    _config, terms, content = _terms(name)
    assert [t.a for t in terms] == ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
    assert all(t.a == t.b and t.weight == pytest.approx(0.2) for t in terms)
    assert content == [("conv4_2", 1.0)]


@pytest.mark.parametrize("name", GRAM_PRESETS)
def test_every_preset_runs_and_lowers_its_objective(network, content_path, style_path, name):
    config, _ = resolve(name, {"size": 48, "optimizer": {"iterations": 5}, "seed": 0})
    result = transfer(content_path, [style_path], config, network=network)
    initial, final = result.initial_losses, result.final_losses
    assert result.iterations == 5
    assert final["total"] < initial["total"]
    assert final["style"] < initial["style"]


def test_a_yaml_variant_runs_without_code(tmp_path, network, content_path, style_path):
    variant = tmp_path / "my-chain.yaml"
    variant.write_text(
        "content:\n  layers: [conv3_1, conv4_1]\n  weighting: geometric\n"
        "style:\n  pairs: [[conv2_1, conv1_1], [conv3_1, conv2_1]]\n  shift: -1\n  blur: true\n"
        "  weighting: geometric\n  weight: 50\n"
        "size: 40\noptimizer:\n  iterations: 4\n"
    )
    config, _ = resolve(str(variant))
    terms = style_terms(config.style)
    assert [(t.a, t.b) for t in terms] == [("conv1_1", "conv2_1"), ("conv2_1", "conv3_1")]
    assert [t.weight for t in terms] == pytest.approx([2 / 3, 1 / 3])
    content = content_terms(config.content)
    assert [name for name, _ in content] == ["conv3_1", "conv4_1"]
    assert [w for _, w in content] == pytest.approx([1 / 3, 2 / 3])
    result = transfer(content_path, [style_path], config, network=network)
    assert result.final_losses["total"] < result.initial_losses["total"]


def test_cnn_mrf_runs_its_three_levels_coarse_to_fine(content_path, style_path):
    from neuralart.transfer import NetworkCache

    preset, _ = resolve("cnn-mrf", {})
    assert preset.optimizer.iterations == (100, 100, 100) and preset.optimizer.levels == 3
    config, _ = resolve("cnn-mrf", {"size": 160, "optimizer": {"iterations": [3, 3, 3]}, "seed": 0})
    assert config.network.pooling == "max" and not config.network.normalize
    assert config.optimizer.history == 25
    assert config.style.statistic == "mrf" and config.style.layers == ("conv3_1", "conv4_1")
    events = []
    network = NetworkCache(torch.device("cpu")).get(config)
    result = transfer(content_path, [style_path], config, network=network, callback=events.append)
    assert [level.size for level in result.levels] == [(40, 27), (80, 53), (160, 106)]
    assert [level.iterations for level in result.levels] == [3, 3, 3]
    assert result.image.size == (160, 106) and result.iterations == 9
    assert [(e.level, e.iteration) for e in events] == [
        (lv, i) for lv in (1, 2, 3) for i in (1, 2, 3)
    ]
    assert all(e.levels == 3 for e in events)
    assert [e.completed for e in events] == list(range(1, 10)) and events[0].total == 9


def test_texture_without_content_has_the_requested_size(network, style_path):
    config, _ = resolve("classic", {"optimizer": {"iterations": 3}, "seed": 4})
    result = transfer(None, [style_path], config, network=network, output_size=(56, 40))
    assert result.image.size == (56, 40)
    assert "content" not in result.final_losses
    assert result.final_losses["style"] < result.initial_losses["style"]
    again = transfer(None, [style_path], config, network=network, output_size=(56, 40))
    assert again.image.tobytes() == result.image.tobytes()  # seeded noise
