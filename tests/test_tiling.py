"""Tile-by-tile evaluation against the whole picture: the same objective and gradient."""

from __future__ import annotations

import pytest
import torch

from neuralart.errors import NeuralartError
from neuralart.images import image_to_tensor, load_image, resize_to
from neuralart.losses import Objective
from neuralart.memory import tile_halo
from neuralart.presets import resolve
from neuralart.tiles import check_tile, halo_for, plan_tiles, receptive_radius
from neuralart.tiling import TiledObjective

SIZE = (96, 64)  # (width, height): multiples of 16


def _pictures(network, content_path, style_path, size=SIZE):
    conv = network.convention
    content = conv.to_network(image_to_tensor(resize_to(load_image(content_path), size)))
    style = conv.to_network(image_to_tensor(resize_to(load_image(style_path), size)))
    # A picture away from the content, so that every term has a gradient.
    x = content + 20.0 * torch.randn(content.shape, generator=torch.Generator().manual_seed(0))
    return content, style, x


def _objective(network, config, content, style):
    return Objective(
        network,
        config.content,
        config.style,
        content_image=content,
        style_images=[style],
        tv_weight=config.tv_weight,
        pixel_scale=network.convention.pixel_scale(),
    )


def _plan(height, width, tile, layers):
    return plan_tiles(height, width, (tile, tile), halo_for(layers)[0])


def _whole(objective, x):
    leaf = x.clone().requires_grad_(True)
    terms = objective.terms(leaf)
    total = objective.total(terms)
    (grad,) = torch.autograd.grad(total, leaf)
    return {k: v.detach() for k, v in terms.items()}, total.detach(), grad


def _assert_same(tiled, whole):
    terms, total, grad = tiled
    w_terms, w_total, w_grad = whole
    assert terms.keys() == w_terms.keys()
    for key in terms:
        torch.testing.assert_close(terms[key], w_terms[key], rtol=1e-4, atol=0)
    torch.testing.assert_close(total, w_total, rtol=1e-4, atol=0)
    scale = w_grad.abs().max()
    assert (grad - w_grad).abs().max() <= 1e-4 * scale


def test_the_halo_covers_the_receptive_field():
    # conv1_1 sees one pixel each side; conv5_4 sums 2·1 + 2·2 + 4·4 + 4·8 + 4·16 = 118.
    assert receptive_radius("conv1_1") == 1 and receptive_radius("conv5_4") == 118
    assert halo_for(["conv1_1", "conv5_4"]) == (144, 16)  # 118 + 16, up to a multiple of 16
    assert halo_for(["conv2_1", "conv3_1"]) == (16, 4)  # 10 + 4 -> 16


def test_tiles_cover_the_picture_once():
    tiles = _plan(64, 96, 32, ["conv3_1"])
    covered = torch.zeros(64, 96)
    for tile in tiles:
        y0, y1, x0, x1 = tile.interior
        covered[y0:y1, x0:x1] += 1
        ey0, ey1, ex0, ex1 = tile.extended
        assert ey0 <= y0 and ey1 >= y1 and ex0 <= x0 and ex1 >= x1
        assert ey0 % 4 == 0 and ex0 % 4 == 0
    assert torch.equal(covered, torch.ones(64, 96))
    with pytest.raises(NeuralartError, match=r"multiple of 4 px.*try 28 or 32"):
        check_tile(30, 4)


@pytest.mark.parametrize(
    "style",
    [
        {"layers": ["conv1_1", "conv2_1", "conv3_1"], "shift": -1.0},
        {"pairs": [["conv1_2", "conv2_1"], ["conv2_2", "conv3_1"]], "shift": -1.0, "blur": True},
        {"pairs": [["conv2_2", "conv3_1"]], "shift": -1.0, "adjacent": True},
        {"pairs": [["conv1_1", "conv1_2"]], "adjacent": True, "blur": True},
        {"layers": ["conv2_1"], "gradient_weighting": "mask"},
        {"statistic": "gram-cube", "layers": ["conv2_1"], "shift": -1.0},
    ],
    ids=["gram", "chain-blurred", "adjacent", "adjacent-blurred", "masked", "cube"],
)
def test_tiles_smaller_than_the_halo_give_the_whole_objective_and_gradient(
    network, content_path, style_path, style
):
    """Shallow layers (halo 16 px) on a 96×64 picture in 32-px tiles: each tile's network
    sees only part of the picture, and the sums still equal the whole picture's."""
    config, _ = resolve(
        "classic",
        {
            "content": {"layers": ["conv2_2"]},
            "style": {"weight": 50.0, **style},
            "tv_weight": 1.0,
        },
    )
    content, style_image, x = _pictures(network, content_path, style_path)
    objective = _objective(network, config, content, style_image)
    tiles = _plan(64, 96, 32, objective.layers)
    assert any(tile.extended != (0, 64, 0, 96) for tile in tiles)  # the halo truly cuts
    _assert_same(TiledObjective(objective, tiles).value_and_grad(x), _whole(objective, x))


TABLE_2 = [
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


@pytest.mark.parametrize("preset", TABLE_2)
def test_table_2_presets_tiled_equal_untiled(network, content_path, style_path, preset):
    """The presets' deepest layers need a 144-px halo: at 96×64 each tile runs on the
    whole picture and sums only its interior."""
    config, _ = resolve(preset)
    content, style_image, x = _pictures(network, content_path, style_path)
    objective = _objective(network, config, content, style_image)
    tiles = _plan(64, 96, 48, objective.layers)
    assert len(tiles) == 4
    _assert_same(TiledObjective(objective, tiles).value_and_grad(x), _whole(objective, x))


@pytest.mark.parametrize(
    "style",
    [
        {"pairs": [["conv1_2", "conv2_1"], ["conv2_2", "conv3_1"]], "shift": -1.0, "blur": True},
        {"pairs": [["conv2_2", "conv3_1"]], "shift": -1.0, "adjacent": True},
        {"pairs": [["conv1_1", "conv3_1"]], "adjacent": True, "blur": True},
        {"statistic": "content-aware", "layers": ["conv1_1"], "content_layer": "conv3_1"},
    ],
    ids=["chain-blurred", "adjacent", "adjacent-blurred", "content-aware"],
)
def test_odd_sizes_keep_the_whole_pictures_resampling(network, content_path, style_path, style):
    """90×70 px: the pools floor odd sizes (conv3_1 is 22×17 under conv2_2's 45×35), so
    the nearest mapping between grids is stretched over the whole picture; each tile
    reads it for its own rows and columns."""
    config, _ = resolve(
        "classic",
        {"content": {"layers": ["conv2_2"]}, "style": {"weight": 50.0, **style}},
    )
    content, style_image, x = _pictures(network, content_path, style_path, size=(90, 70))
    objective = _objective(network, config, content, style_image)
    tiles = _plan(70, 90, 32, objective.layers)
    assert any(tile.extended != (0, 70, 0, 90) for tile in tiles)
    _assert_same(TiledObjective(objective, tiles).value_and_grad(x), _whole(objective, x))


def test_chain_blurred_at_an_odd_size(network, content_path, style_path):
    config, _ = resolve("chain-blurred")
    content, style_image, x = _pictures(network, content_path, style_path, size=(90, 70))
    objective = _objective(network, config, content, style_image)
    tiles = _plan(70, 90, 48, objective.layers)
    _assert_same(TiledObjective(objective, tiles).value_and_grad(x), _whole(objective, x))


@pytest.mark.parametrize(
    "style", [{}, {"patch_stride": 1, "layers": ["conv3_1"]}], ids=["preset", "stride-1"]
)
def test_patch_matching_tiled_equals_untiled(network, content_path, style_path, style):
    """CNN-MRF's loss is local given the patch bank: one pass, each tile's patches (those
    starting in its interior) matched against the whole bank."""
    config, _ = resolve("cnn-mrf", {"style": {"rotated_copies": 0, "scaled_copies": 0, **style}})
    content, style_image, x = _pictures(network, content_path, style_path, size=(96, 80))
    objective = _objective(network, config, content, style_image)
    halo, _, _ = tile_halo(config)
    tiles = plan_tiles(80, 96, (32, 48), halo)
    tiled = TiledObjective(objective, tiles)
    assert tiled.passes == len(tiles) == 6
    _assert_same(tiled.value_and_grad(x), _whole(objective, x))


def test_the_value_alone_is_the_first_pass(network, content_path, style_path):
    config, _ = resolve("chain-blurred")
    content, style_image, x = _pictures(network, content_path, style_path)
    objective = _objective(network, config, content, style_image)
    tiled = TiledObjective(objective, _plan(64, 96, 48, objective.layers))
    calls = []
    tiled.on_tile = lambda done, total: calls.append((done, total))
    terms, total = tiled.value(x)
    w_terms, w_total, _ = _whole(objective, x)
    torch.testing.assert_close(total, w_total, rtol=1e-4, atol=0)
    assert terms.keys() == w_terms.keys()
    assert calls == [(1, 7), (2, 7), (3, 7), (4, 7)]  # 4 tiles; with a gradient, 7 runs
    calls.clear()
    tiled.value_and_grad(x)
    assert [done for done, _ in calls] == list(range(1, 8))


@pytest.mark.parametrize(("preset", "spill"), [("chain-blurred", True), ("cnn-mrf", False)])
def test_targets_built_tile_by_tile_equal_the_whole_images(
    network, content_path, style_path, preset, spill
):
    """A print-size style or content image never needs its whole feature stack: the
    content maps, gradient weights and style targets built in tiles are the same."""
    overrides = {"style": {"rotated_copies": 0, "scaled_copies": 0}} if "mrf" in preset else {}
    config, _ = resolve(preset, overrides)
    content, style_image, _ = _pictures(network, content_path, style_path, size=(96, 80))
    whole = _objective(network, config, content, style_image)
    halo, _, _ = tile_halo(config)
    planned = []

    def tiles(height, width):
        planned.append((height, width))
        return plan_tiles(height, width, (32, 48), halo)

    tiled = Objective(
        network,
        config.content,
        config.style,
        content_image=content,
        style_images=[style_image],
        pixel_scale=network.convention.pixel_scale(),
        tiles=tiles,
        spill=spill,
    )
    assert planned  # the tiles were used
    blocks = tiled.content_blocks
    assert blocks is not None and blocks.spill == spill and not tiled.content_targets
    for name, target in whole.content_targets.items():  # each tile's block of each map
        for index, tile in enumerate(blocks.tiles):
            y0, y1, x0, x1 = tile.part(name, 80, 96).interior
            block = blocks.get(index, "cpu")[name]
            torch.testing.assert_close(block, target[..., y0:y1, x0:x1], rtol=1e-4, atol=1e-4)
        assert blocks.numel[name] == target.numel()
    for label, target in whole.style_targets.items():
        got = tiled.style_targets[label]
        if isinstance(target, tuple):  # a patch bank: the same patches, in another order
            a, b = got[0].flatten(1), target[0].flatten(1)
            assert a.shape == b.shape
            nearest = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").min(
                dim=1
            )  # each patch has its twin in the bank
            assert nearest.values.max() <= 1e-4 * b.abs().max()
            assert len(set(nearest.indices.tolist())) == b.shape[0]
        else:
            scale = target.abs().max()
            assert (got - target).abs().max() <= 1e-4 * scale, label


def test_content_targets_on_disk_give_the_same_objective(network, content_path, style_path):
    config, _ = resolve("chain-blurred")
    content, style_image, x = _pictures(network, content_path, style_path)
    whole = _objective(network, config, content, style_image)
    tiles = _plan(64, 96, 48, whole.layers)
    spilled = Objective(
        network,
        config.content,
        config.style,
        content_image=content,
        style_images=[style_image],
        pixel_scale=network.convention.pixel_scale(),
        tiles=lambda height, width: tiles,
        spill=True,
    )
    assert spilled.content_blocks is not None and spilled.content_blocks.spill
    _assert_same(TiledObjective(spilled, tiles).value_and_grad(x), _whole(whole, x))
    other = _plan(64, 96, 32, whole.layers)
    with pytest.raises(ValueError, match="other tiles"):
        TiledObjective(spilled, other)
