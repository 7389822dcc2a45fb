"""The iteration as a CUDA graph: used only where it can be, and equal to the eager one.

On the CPU the evaluator is the objective itself (the eager path unchanged, the same
picture with the switch on or off); on CUDA (skipped without it) the replayed objective
and gradient equal the eager ones at several pictures, and a whole run gives the same
picture as an eager run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuralart.graphs import SWITCH, CapturedObjective, captured, wanted
from neuralart.images import image_to_tensor, load_image, resize_to
from neuralart.losses import Objective
from neuralart.presets import resolve
from neuralart.transfer import transfer
from neuralart.vgg import load_vgg19

CUDA = torch.device("cuda")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _objective(network, preset, content_path, style_path, size=(96, 64)):
    config, _ = resolve(preset)
    device = next(network.parameters()).device
    conv = network.convention
    content = conv.to_network(image_to_tensor(resize_to(load_image(content_path), size)))
    style = conv.to_network(image_to_tensor(resize_to(load_image(style_path), size)))
    objective = Objective(
        network,
        config.content,
        config.style,
        content_image=content.to(device),
        style_images=[style.to(device)],
        tv_weight=config.tv_weight,
        pixel_scale=conv.pixel_scale(),
    )
    return objective, content.to(device)


def test_only_whole_fp32_levels_on_cuda_are_captured(monkeypatch):
    monkeypatch.delenv(SWITCH, raising=False)
    assert wanted(CUDA, "fp32", tiled=False)
    assert not wanted(torch.device("cpu"), "fp32", tiled=False)
    assert not wanted(torch.device("mps"), "fp32", tiled=False)
    assert not wanted(CUDA, "bf16", tiled=False)  # autocast's weight cache
    assert not wanted(CUDA, "fp32", tiled=True)  # tiles call back between tiles
    monkeypatch.setenv(SWITCH, "off")
    assert not wanted(CUDA, "fp32", tiled=False)


def test_on_the_cpu_the_evaluator_is_the_objective_itself(network, content_path, style_path):
    objective, content = _objective(network, "chain-blurred", content_path, style_path)
    assert captured(objective, content, "fp32", tiled=False) is objective


def test_on_the_cpu_a_run_is_the_same_with_the_switch_on_or_off(
    network, content_path, style_path, monkeypatch
):
    config, _ = resolve("classic", {"size": 48, "seed": 3, "optimizer": {"iterations": 6}})
    pictures = []
    for switch in ("auto", "off"):
        monkeypatch.setenv(SWITCH, switch)
        result = transfer(content_path, [style_path], config, network=network)
        pictures.append(np.asarray(result.image))
    assert np.array_equal(*pictures)


@pytest.fixture(scope="module")
def cuda_network():
    return load_vgg19("embedded", pooling="average", normalize=True, device="cuda")


@needs_cuda
@pytest.mark.parametrize("preset", ["classic", "chain-blurred", "sliced-wasserstein"])
def test_the_replayed_objective_equals_the_eager_one(
    cuda_network, preset, content_path, style_path
):
    objective, content = _objective(cuda_network, preset, content_path, style_path)
    graph = CapturedObjective(objective, content)
    generator = torch.Generator(device="cuda").manual_seed(0)
    for scale in (5.0, 20.0, 40.0):  # several pictures through the one graph
        x = content + scale * torch.randn(content.shape, device="cuda", generator=generator)
        terms, total, grad = objective.value_and_grad(x)
        g_terms, g_total, g_grad = graph.value_and_grad(x)
        torch.testing.assert_close(g_total, total, rtol=1e-5, atol=0)
        for name in terms:
            torch.testing.assert_close(g_terms[name], terms[name], rtol=1e-5, atol=0)
        scale_of_grad = grad.abs().max()
        assert (g_grad - grad).abs().max() <= 1e-5 * scale_of_grad


@needs_cuda
def test_a_captured_run_gives_the_eager_runs_picture(content_path, style_path, monkeypatch):
    config, _ = resolve(
        "chain-blurred", {"size": 96, "seed": 0, "device": "cuda", "optimizer": {"iterations": 20}}
    )
    pictures = []
    for switch in ("auto", "off"):
        monkeypatch.setenv(SWITCH, switch)
        result = transfer(content_path, [style_path], config)
        pictures.append(np.asarray(result.image, dtype=np.int16))
    assert np.abs(pictures[0] - pictures[1]).mean() < 1.0


@needs_cuda
def test_a_capture_that_fails_runs_eagerly_after_one_warning(
    cuda_network, content_path, style_path
):
    objective, content = _objective(cuda_network, "classic", content_path, style_path)

    class Syncing:  # reads a number on the host in every evaluation: not capturable
        def value_and_grad(self, x):
            terms, total, grad = objective.value_and_grad(x)
            float(total)
            return terms, total, grad

        def value(self, x):
            return objective.value(x)

    evaluator = Syncing()
    with pytest.warns(UserWarning, match="running it eagerly"):
        assert captured(evaluator, content, "fp32", tiled=False) is evaluator
