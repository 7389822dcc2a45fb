"""Paper §4.1, §4.2, §4.4, §4.5: gradient masking, amplified activations, content-aware
Gram matrices, Gram cubes, their presets, and the memory check, against naive references."""

from __future__ import annotations

import os
import re

import pytest
import torch
from conftest import DATA, error_line
from typer.testing import CliRunner

import neuralart.statistics as statistics
from neuralart.cli import app
from neuralart.cli.running import overrides
from neuralart.config import Config, ContentConfig, StyleConfig, config_from_dict
from neuralart.errors import NeuralartError
from neuralart.losses import Objective
from neuralart.memory import ENVIRONMENT, available, check_memory, estimate
from neuralart.presets import list_presets, resolve
from neuralart.statistics import content_aware_gram, gram, gram_cube, upsample_nearest
from neuralart.weighting import mask_keep, reweight_gradient, top_fraction_mask

runner = CliRunner()
EXPERIMENTAL = ["amplified-activations", "content-aware", "gram-cubes", "masked-gradients"]
CLASSIC = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]


# ---------------------------------------------------------------- masking and amplifying


def test_the_mask_keeps_exactly_the_top_fraction_despite_ties_and_zeros():
    # 100 entries: 60 zeros, then 40 positive values in 4 tied groups of 10.
    values = torch.cat([torch.zeros(60), torch.tensor([1.0, 2.0, 3.0, 4.0]).repeat(10)])
    features = values[torch.randperm(100, generator=torch.Generator().manual_seed(1))]
    features = features.reshape(1, 4, 5, 5)
    mask = top_fraction_mask(features, 0.25)
    assert mask.sum().item() == 25
    kept, dropped = features[mask == 1], features[mask == 0]
    assert kept.min() >= dropped.max()  # the 25 largest: all 4s, all 3s, five 2s
    assert sorted(kept.tolist()) == [2.0] * 5 + [3.0] * 10 + [4.0] * 10
    # More than the positive entries asked for: only the 40 positive ones, never a zero.
    mask = top_fraction_mask(features, 0.8)
    assert mask.sum().item() == 40 and bool((features[mask == 1] > 0).all())
    assert top_fraction_mask(torch.zeros(1, 2, 3, 3), 0.5).sum().item() == 0


def test_mask_fractions_follow_the_paper_by_block_unless_named():
    style = StyleConfig(gradient_weighting="mask")
    assert [mask_keep(style, n) for n in CLASSIC] == [0.5, 0.25, 0.1, 0.05, 0.01]
    assert mask_keep(style, "conv3_4") == 0.1
    style = StyleConfig(gradient_weighting="mask", mask_keep=(("conv3_1", 0.3),))
    assert mask_keep(style, "conv3_1") == 0.3 and mask_keep(style, "conv3_2") == 0.1


def test_reweighted_gradient_is_the_weighted_gradient_and_the_value_is_unchanged():
    gen = torch.Generator().manual_seed(0)
    features = torch.rand(1, 6, 5, 4, generator=gen, dtype=torch.float64)
    weights = (torch.rand(1, 6, 5, 4, generator=gen) > 0.5).double() * 1.7
    target = torch.rand(1, 6, 6, generator=gen, dtype=torch.float64)

    def loss(f):
        return (gram(f, -1.0) - target).pow(2).mean()

    f1 = features.clone().requires_grad_(True)
    value = loss(reweight_gradient(f1, weights))
    value.backward()
    f2 = features.clone().requires_grad_(True)
    plain = loss(f2)
    (reference,) = torch.autograd.grad(plain, f2)
    assert value.item() == pytest.approx(plain.item(), rel=0, abs=0)
    torch.testing.assert_close(f1.grad, weights * reference)


def _objective(network, content, style_image, weighting, **style_keys):
    style = StyleConfig(
        layers=("conv1_1", "conv3_1", "conv4_2"),
        weight=7.0,
        gradient_weighting=weighting,
        **style_keys,
    )
    return Objective(
        network,
        ContentConfig(layers=("conv4_2",), weight=2.0),
        style,
        content_image=content,
        style_images=[style_image],
    )


@pytest.mark.parametrize("weighting", ["mask", "amplify"])
def test_only_the_style_gradient_is_reweighted_at_the_image(network, weighting):
    """conv4_2 is a content and a style layer: content must see the plain map there."""
    gen = torch.Generator().manual_seed(3)
    content = torch.rand(1, 3, 40, 32, generator=gen) * 200 - 100
    style_image = torch.rand(1, 3, 40, 32, generator=gen) * 200 - 100
    x = content + 20 * torch.randn(1, 3, 40, 32, generator=gen)
    plain = _objective(network, content, style_image, "none")
    weighted = _objective(network, content, style_image, weighting, amplify_power=2.0)

    x1 = x.clone().requires_grad_(True)
    terms = weighted.terms(x1)
    weighted.total(terms).backward()
    # The reference: style gradients of the plain objective at each map, multiplied by
    # weights computed here from the content image, pushed back through the network.
    x2 = x.clone().requires_grad_(True)
    feats = network(x2, plain.layers)
    reference_terms = plain.terms(x2)
    assert terms["style"].item() == pytest.approx(reference_terms["style"].item(), rel=1e-6)
    assert terms["content"].item() == pytest.approx(reference_terms["content"].item(), rel=1e-6)
    names = ["conv1_1", "conv3_1", "conv4_2"]
    leaves = [feats[n].detach().requires_grad_(True) for n in names]
    style_value = plain.style_weight * sum(
        t.weight * plain.style_loss(dict(zip(names, leaves, strict=True)), t)
        for t in plain.style_terms
    )
    style_grads = torch.autograd.grad(style_value, leaves)
    with torch.no_grad():
        content_feats = network(content, names)
    if weighting == "mask":
        keep = {"conv1_1": 0.5, "conv3_1": 0.1, "conv4_2": 0.05}
        masks = [top_fraction_mask(content_feats[n], keep[n]) for n in names]
    else:
        masks = [content_feats[n] ** 2 for n in names]
    content_value = plain.content_weight * reference_terms["content"]
    (content_grad,) = torch.autograd.grad(content_value, x2, retain_graph=True)
    (style_grad,) = torch.autograd.grad(
        [feats[n] for n in names],
        x2,
        grad_outputs=[m * g for m, g in zip(masks, style_grads, strict=True)],
    )
    expected = content_grad + style_grad  # float32 sums in another order: loose tolerance
    torch.testing.assert_close(x1.grad, expected, rtol=2e-3, atol=1e-4 * expected.abs().max())
    # And the weighting does change the gradient.
    x3 = x.clone().requires_grad_(True)
    plain.total(plain.terms(x3)).backward()
    assert not torch.allclose(x1.grad, x3.grad, rtol=1e-3)


def test_gradient_weighting_needs_a_content_image(network):
    with pytest.raises(NeuralartError, match="needs a content image"):
        _objective(network, None, torch.zeros(1, 3, 32, 32), "mask")


# ------------------------------------------------------- content-aware Gram, Gram cube


def _naive_three_way(a, c):
    """Σ_p a_ip a_jp c_kp / M by an explicit loop over k."""
    m = a.shape[-1]
    out = torch.stack([(a * c[:, k : k + 1]) @ a.transpose(1, 2) for k in range(c.shape[1])])
    return out.permute(1, 2, 3, 0) / m  # (B, N, N, K)


@pytest.mark.parametrize("chunk", [1, 100, 1 << 24])  # rows of one, of a few, all at once
@pytest.mark.parametrize("shift", [0.0, -1.0])
def test_three_way_statistics_match_naive_references_with_gradients(monkeypatch, chunk, shift):
    monkeypatch.setattr(statistics, "CHUNK_ELEMENTS", chunk)
    gen = torch.Generator().manual_seed(4)
    features = torch.rand(2, 5, 6, 7, generator=gen, dtype=torch.float64)
    content = torch.rand(2, 4, 3, 4, generator=gen, dtype=torch.float64)
    weights = torch.randn(2, 5, 5, 4, generator=gen, dtype=torch.float64)
    cube_weights = torch.randn(2, 5, 5, 5, generator=gen, dtype=torch.float64)

    f1, c1 = features.clone().requires_grad_(True), content.clone().requires_grad_(True)
    got = content_aware_gram(f1, c1, shift)
    (got * weights).sum().backward()
    f2, c2 = features.clone().requires_grad_(True), content.clone().requires_grad_(True)
    # Nearest resampling by hand: row i of 6 reads row i·3//6, column j of 7 reads j·4//7.
    rows, cols = [i * 3 // 6 for i in range(6)], [j * 4 // 7 for j in range(7)]
    resampled = c2[:, :, rows][:, :, :, cols].reshape(2, 4, 42)
    expected = _naive_three_way((f2 + shift).reshape(2, 5, 42), resampled)
    (expected * weights).sum().backward()
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(f1.grad, f2.grad)
    torch.testing.assert_close(c1.grad, c2.grad)

    f1.grad = None
    f2 = features.clone().requires_grad_(True)
    got = gram_cube(f1, shift)
    (got * cube_weights).sum().backward()
    shifted = (f2 + shift).reshape(2, 5, 42)
    expected = torch.einsum("bip,bjp,bkp->bijk", shifted, shifted, shifted) / 42
    (expected * cube_weights).sum().backward()
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(f1.grad, f2.grad)


def test_three_way_statistics_pass_gradcheck(monkeypatch):
    monkeypatch.setattr(statistics, "CHUNK_ELEMENTS", 30)
    gen = torch.Generator().manual_seed(5)
    f = torch.rand(1, 3, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    c = torch.rand(1, 2, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: content_aware_gram(a, b, -1.0), (f, c))
    assert torch.autograd.gradcheck(lambda a: gram_cube(a, 0.5), (f,))


def test_the_content_map_is_resampled_with_upsample_nearest():
    gen = torch.Generator().manual_seed(6)
    f, c = torch.rand(1, 3, 8, 6, generator=gen), torch.rand(1, 2, 2, 2, generator=gen)
    up = upsample_nearest(c, (8, 6)).reshape(1, 2, 48)
    torch.testing.assert_close(content_aware_gram(f, c), _naive_three_way(f.reshape(1, 3, 48), up))


def test_content_aware_objective_differentiates_through_both_factors(network):
    """The picture's own conv4_2 weights its Grams: the style gradient flows into it too."""
    gen = torch.Generator().manual_seed(7)
    image = torch.rand(1, 3, 32, 32, generator=gen) * 200 - 100
    style = StyleConfig(statistic="content-aware", layers=("conv3_1",), weight=1.0)
    objective = Objective(
        network,
        ContentConfig(weight=0.0),
        style,
        content_image=None,
        style_images=[image + 30 * torch.randn(1, 3, 32, 32, generator=gen)],
    )
    assert objective.layers == ["conv3_1", "conv4_2"]
    assert objective.style_targets["conv3_1"].shape == (1, 256, 256, 512)
    feats = {
        n: f.detach().requires_grad_(True) for n, f in network(image, objective.layers).items()
    }
    objective.style_loss(feats, objective.style_terms[0]).backward()
    assert feats["conv3_1"].grad.abs().sum() > 0 and feats["conv4_2"].grad.abs().sum() > 0


# -------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("style", "message"),
    [
        ({"statistic": "content-aware", "pairs": "chain"}, "statistic of single layers"),
        ({"statistic": "gram-cube", "blur": True}, "statistic of single layers"),
        ({"statistic": "content-aware", "content_layer": "conv4_9"}, "unknown layer"),
        ({"statistic": "mrf", "gradient_weighting": "mask"}, "not with statistic mrf"),
        ({"gradient_weighting": "masked"}, "'none' or 'mask' or 'amplify'"),
        ({"mask_keep": [["conv1_1", 0]]}, "above 0 and at most 1"),
        ({"mask_keep": [["conv9_1", 0.5]]}, "unknown layer"),
        ({"amplify_power": 0}, "amplify_power"),
    ],
)
def test_bad_experimental_settings_are_refused(style, message):
    with pytest.raises(NeuralartError, match=message):
        resolve("classic", {"style": style})


def test_command_line_flags_reach_the_style_configuration():
    flags = overrides(gradient_weighting="amplify", amplify_power=2.5)
    config, provenance = resolve("classic", flags)
    assert config.style.gradient_weighting == "amplify" and config.style.amplify_power == 2.5
    assert provenance["style.gradient_weighting"] == "flag"


def test_gradient_weighting_without_a_content_image_is_one_line(style_path):
    args = ["texture", str(style_path), "-p", "masked-gradients", "--size", "32", "-n", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "needs a content image" in error_line(result)


# ------------------------------------------------------------------------------- memory


def test_an_impossible_run_is_refused_before_the_network_loads(
    tmp_path, content_path, style_path, monkeypatch
):
    import neuralart.transfer
    import neuralart.vgg

    loads: list[object] = []

    def never(*args, **kwargs):
        loads.append(args)
        raise AssertionError("the network was loaded")

    monkeypatch.setattr(neuralart.transfer, "load_network", never)
    monkeypatch.setattr(neuralart.transfer, "load_vgg19", never, raising=False)
    monkeypatch.setattr(neuralart.vgg, "load_vgg19", never)
    out = tmp_path / "out.png"
    args = ["transfer", str(content_path), str(style_path), "-p", "gram-cubes", "-o", str(out)]
    result = runner.invoke(app, [*args, "--size", "64"], env={ENVIRONMENT: "2G"})
    assert loads == []
    assert result.exit_code == 1 and not out.exists()
    line = error_line(result)
    # By hand: Gram cubes of conv1_1..conv5_1 hold 64³ + 128³ + 256³ + 2·512³ entries; the
    # run keeps at least the targets and the picture's own cubes, in float32.
    cubes = 64**3 + 128**3 + 256**3 + 2 * 512**3
    at_least = 2 * cubes * 4 / (1 << 30)  # 2.14 GiB: more than the 2 GiB free
    found = re.search(r"needs about (\d+\.\d) GiB", line)
    assert found is not None, line
    assert at_least - 0.05 <= float(found.group(1)) < 16
    assert "2.0 GiB free" in line and "--size" in line
    bad = runner.invoke(app, [*args, "--size", "64"], env={ENVIRONMENT: "lots"})
    assert bad.exit_code == 1 and ENVIRONMENT in error_line(bad)
    assert loads == []


def test_gram_cubes_of_all_layers_at_a_large_size_cannot_fit_in_24_gib():
    config = config_from_dict({"style": {"statistic": "gram-cube", "layers": "all"}})
    total, statistics_bytes, largest = estimate(config, (4096, 3072))
    assert statistics_bytes > 10 << 30 and total > 24 << 30 and largest == "conv4_1"


def test_the_papers_content_aware_setting_at_128_px_fits_in_8_gib_but_not_in_1(monkeypatch):
    config, _ = resolve("content-aware", {"size": 128})
    # By hand: conv1_1..conv4_1 against conv4_2's 512 channels, (64² + 128² + 256² + 512²)·512
    # float32 entries (0.66 GiB) for the targets, and as many for the picture's statistics.
    entries = (64**2 + 128**2 + 256**2 + 512**2) * 512
    total, statistics_bytes, largest = estimate(config, (128, 96))
    assert statistics_bytes >= 2 * entries * 4 and total >= statistics_bytes
    assert largest.startswith("conv4_1")  # 512² · 512 entries, the largest of the four
    monkeypatch.setenv(ENVIRONMENT, "8G")
    check_memory(config, (128, 96), torch.device("cpu"))
    monkeypatch.setenv(ENVIRONMENT, "1G")
    with pytest.raises(NeuralartError, match=r"1\.0 GiB free"):
        check_memory(config, (128, 96), torch.device("cpu"))


def test_the_estimate_grows_with_the_picture_but_three_way_statistics_do_not():
    for name in ("classic", "content-aware"):
        config, _ = resolve(name)
        small, statistics_small, _ = estimate(config, (128, 96))
        large, statistics_large, _ = estimate(config, (512, 384))
        assert large > small
        # N²·K entries, whatever the picture's size; Gram matrices are N² (tiny) too.
        assert statistics_large == statistics_small


def test_without_the_variable_the_free_memory_is_the_machines(monkeypatch):
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    free = available(torch.device("cpu"))
    if free is None:
        pytest.skip("this system does not say how much memory is free")
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < free <= physical
    monkeypatch.setenv(ENVIRONMENT, "3.5G")
    assert available(torch.device("cpu")) == int(3.5 * (1 << 30))


def test_gram_statistics_are_small_next_to_the_network():
    for name in ("classic", "chain-blurred", "masked-gradients"):
        config, _ = resolve(name)
        total, statistics_bytes, _ = estimate(config, (512, 384))
        assert statistics_bytes < 32 << 20 < total


# ------------------------------------------------------------------------------ presets


def test_experimental_presets_are_listed_as_experimental():
    infos = {info.name: info for info in list_presets()}
    assert all(infos[name].experimental for name in EXPERIMENTAL)
    assert not infos["classic"].experimental
    result = runner.invoke(app, ["presets", "list"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    for name in EXPERIMENTAL:
        assert f"{name} (experimental)" in " ".join(result.stdout.split())


def test_experimental_presets_hold_the_papers_settings():
    configs: dict[str, Config] = {name: resolve(name)[0] for name in EXPERIMENTAL}
    for name in ("masked-gradients", "amplified-activations", "gram-cubes"):
        assert list(configs[name].style.layers) == CLASSIC
    assert configs["masked-gradients"].style.gradient_weighting == "mask"
    assert configs["amplified-activations"].style.gradient_weighting == "amplify"
    assert configs["amplified-activations"].style.amplify_power == 1.0
    aware = configs["content-aware"].style
    assert aware.statistic == "content-aware" and aware.content_layer == "conv4_2"
    assert list(aware.layers) == CLASSIC[:4]
    assert configs["gram-cubes"].style.statistic == "gram-cube"
    for config in configs.values():
        assert list(config.content.layers) == ["conv4_2"]


@pytest.mark.parametrize("name", EXPERIMENTAL)
def test_experimental_presets_run_end_to_end(tmp_path, name):
    out = tmp_path / f"{name}.png"
    content = DATA / "china.jpg"
    style = DATA / "starry_night.jpg"
    args = ["transfer", str(content), str(style), "-p", name, "--size", "32", "-n", "1"]
    result = runner.invoke(app, [*args, "--seed", "0", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert out.exists()
