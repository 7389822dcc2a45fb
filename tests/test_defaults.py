"""The defaults check in small: every bundled Gram preset and distribution preset, at its
default weights, keeps the photograph's structure within SSIM_MARGIN of classic's and moves
it at least STYLE_PROGRESS towards the painting, on a bundled portrait × painting pair
(benchmarks/defaults.py runs the same check on every shared pair at 128 px); and the check
refuses weights that break either rule."""

from __future__ import annotations

import pytest
from conftest import DATA

from neuralart.images import load_image
from neuralart.presets import resolve
from neuralart.score import SSIM_MARGIN, STYLE_PROGRESS, Scorer, style_progress
from neuralart.transfer import transfer

SIZE = 64
ITERATIONS = 60
CONTENT = DATA / "grace_hopper.jpg"
STYLE = DATA / "shipwreck.jpg"
PRESETS = [
    "classic-dense",
    "classic-shifted",
    "all-to-content",
    "chain",
    "chain-unshifted",
    "chain-uniform",
    "chain-extended",
    "chain-blurred",
    "sliced-wasserstein",
    "gaussian-w2",
    "histogram",
]


@pytest.fixture(scope="module")
def scored(network):
    """preset, style weight (None: its default), start -> (score, the photograph's score)."""
    scorer = Scorer(network, size=SIZE, seed=0)
    target = scorer.style_target([load_image(STYLE)])
    cache: dict[tuple[str, float | None, str], tuple] = {}

    def run(preset: str, weight: float | None = None, init: str = "content"):
        key = (preset, weight, init)
        if key not in cache:
            flags = {
                "size": SIZE,
                "seed": 0,
                "optimizer": {"iterations": ITERATIONS, "init": init},
            }
            if weight is not None:
                flags["style"] = {"weight": weight}
            config, _ = resolve(preset, flags)
            result = transfer(CONTENT, [STYLE], config, network=network)
            picture = scorer.prepare(result.image)
            own = scorer.content_target(load_image(CONTENT), picture, preset)
            cache[key] = (
                scorer.score(picture, own, target),
                scorer.score(own.rgb, own, target),
            )
        return cache[key]

    return run


def meets(
    scored, preset: str, weight: float | None = None, init: str = "content"
) -> tuple[bool, bool]:
    classic, _ = scored("classic")
    result, photograph = scored(preset, weight, init)
    return (
        result.ssim >= classic.ssim - SSIM_MARGIN,
        style_progress(result, photograph) >= STYLE_PROGRESS,
    )


def test_classic_moves_towards_the_style(scored):
    result, photograph = scored("classic")
    assert style_progress(result, photograph) >= STYLE_PROGRESS


@pytest.mark.parametrize("preset", PRESETS)
def test_default_weights_keep_the_photograph_and_move_towards_the_style(scored, preset):
    kept, moved = meets(scored, preset)
    assert kept, f"{preset}: ssim more than {SSIM_MARGIN} below classic's"
    assert moved, f"{preset}: moved less than {STYLE_PROGRESS} towards the style"


def test_the_check_refuses_pictures_that_break_it(scored):
    """A picture grown from noise has lost the photograph's structure; a style weight a
    thousand times below the default leaves the photograph as it was."""
    kept, _ = meets(scored, "chain-blurred", init="noise")
    assert not kept
    _, moved = meets(scored, "classic", 0.003)
    assert not moved
