"""Tiled runs end to end: memory plans, the command line, coarse to fine, Ctrl-C."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import error_line
from PIL import Image
from typer.testing import CliRunner

from neuralart.cli import app
from neuralart.errors import NeuralartError
from neuralart.memory import (
    ENVIRONMENT,
    MIN_TILED_HISTORY,
    estimate,
    history_for,
    plan_memory,
    tile_halo,
    tiled_estimate,
)
from neuralart.presets import resolve
from neuralart.tiles import plan_cost, plan_tiles
from neuralart.transfer import transfer

runner = CliRunner()
CPU = torch.device("cpu")
GIB = 1 << 30
# Shallow layers: a 16-px halo, so that tiles of a small picture really are smaller.
SHALLOW = {
    "content": {"layers": ["conv2_2"]},
    "style": {"layers": ["conv1_1", "conv2_1"], "weight": 50.0},
}


def _psnr(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    mse = float(((x - y) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ---------------------------------------------------------------------------- plans


def test_a_run_that_fits_runs_whole(monkeypatch):
    config, _ = resolve("chain-blurred")
    monkeypatch.setenv(ENVIRONMENT, "24G")
    plan = plan_memory(config, (1024, 768), CPU)
    assert plan.tile is None and plan.count == 1
    assert plan.needed == estimate(config, (1024, 768))[0] <= 24 * GIB


@pytest.mark.parametrize(("size", "budget"), [((2048, 1536), 3), ((4096, 3072), 12)])
def test_a_run_that_does_not_fit_is_planned_in_tiles_within_the_budget(monkeypatch, size, budget):
    config, _ = resolve("chain-blurred")
    monkeypatch.setenv(ENVIRONMENT, f"{budget}G")
    assert estimate(config, size)[0] > budget * GIB  # whole, it would not fit
    plan = plan_memory(config, size, CPU)
    assert plan.tile is not None and plan.count > 1
    assert plan.needed <= budget * GIB
    assert plan.halo == tile_halo(config)[1] == 144  # exact by default
    assert plan.tile[0] % 16 == 0 and plan.tile[1] % 16 == 0  # on conv5's grid
    assert MIN_TILED_HISTORY <= plan.history <= history_for(config, size)
    width, height = size
    tiles = plan.tiles(height, width)
    assert tiles is not None and len(tiles) == plan.count
    covered = np.zeros((height, width), dtype=np.int8)
    for tile in tiles:
        y0, y1, x0, x1 = tile.interior
        covered[y0:y1, x0:x1] += 1
    assert (covered == 1).all()


def test_the_cheapest_tiles_are_chosen_among_those_that_fit(monkeypatch):
    """No other tile shape that fits the same budget runs the network on fewer pixels."""
    config, _ = resolve("chain-blurred")
    monkeypatch.setenv(ENVIRONMENT, "6G")
    width, height = 4096, 3072
    plan = plan_memory(config, (width, height), CPU)
    assert plan.tile is not None
    cost, _ = plan_cost(height, width, plan.tile, plan.halo)
    free = 6 * GIB
    for rows in range(256, height + 1, 256):
        for cols in range(256, width + 1, 256):
            other, _ = plan_cost(height, width, (rows, cols), plan.halo)
            ext = (min(width, cols + 2 * plan.halo), min(height, rows + 2 * plan.halo))
            if tiled_estimate(config, (width, height), ext, plan.history) <= free:
                assert cost <= other, (rows, cols)


def test_a_tight_budget_shortens_the_automatic_history(monkeypatch):
    config, _ = resolve("chain-blurred")
    size = (2048, 1536)
    monkeypatch.setenv(ENVIRONMENT, "16G")
    roomy = plan_memory(config, size, CPU)
    monkeypatch.setenv(ENVIRONMENT, "3G")
    tight = plan_memory(config, size, CPU)
    assert roomy.history == history_for(config, size) > tight.history >= MIN_TILED_HISTORY
    # A history the user set is kept as it is.
    monkeypatch.setenv(ENVIRONMENT, "6G")
    fixed, _ = resolve("chain-blurred", {"optimizer": {"history": 20}})
    assert plan_memory(fixed, size, CPU).history == 20


def test_forced_tiles_and_refusals(monkeypatch):
    config, _ = resolve("chain-blurred", {"tile": 512})
    monkeypatch.setenv(ENVIRONMENT, "24G")
    plan = plan_memory(config, (2048, 1536), CPU)
    assert plan.tile == (512, 512) and plan.count == 12
    assert plan_memory(config, (512, 384), CPU).tile is None  # no larger than one tile
    off, _ = resolve("chain-blurred", {"tile": "off"})
    monkeypatch.setenv(ENVIRONMENT, "4G")
    with pytest.raises(NeuralartError, match="--tile auto"):
        plan_memory(off, (2048, 1536), CPU)
    monkeypatch.setenv(ENVIRONMENT, "1G")
    with pytest.raises(NeuralartError, match="even in the smallest tiles"):
        plan_memory(resolve("chain-blurred")[0], (4096, 3072), CPU)
    # 2 GiB at 2048 px: the exact 144-px halos leave room for tiny tiles only, whose halos
    # the network runs on many times over; a smaller halo is far cheaper.
    monkeypatch.setenv(ENVIRONMENT, "2G")
    exact = plan_memory(resolve("chain-blurred")[0], (2048, 1536), CPU)
    smaller = plan_memory(resolve("chain-blurred", {"tile_halo": 64})[0], (2048, 1536), CPU)
    assert exact.needed <= 2 * GIB and smaller.needed <= 2 * GIB and smaller.halo == 64
    assert exact.overhead > 10 * smaller.overhead
    with pytest.raises(NeuralartError, match="multiple of 16 px"):
        plan_memory(resolve("chain-blurred", {"tile": 500})[0], (2048, 1536), CPU)
    with pytest.raises(NeuralartError, match=r"multiple of 16 px.*exact halo is 144"):
        plan_memory(resolve("chain-blurred", {"tile_halo": 20})[0], (2048, 1536), CPU)


def test_a_smaller_halo_is_used_as_given(monkeypatch):
    config, _ = resolve("chain-blurred", {"tile": 256, "tile_halo": 64})
    monkeypatch.setenv(ENVIRONMENT, "24G")
    plan = plan_memory(config, (1024, 768), CPU)
    assert plan.halo == 64
    tiles = plan.tiles(768, 1024)
    assert tiles == plan_tiles(768, 1024, (256, 256), 64)


# ----------------------------------------------------------------- the command line


def _run(tmp_path, content_path, style_path, name, *flags, env=None):
    out = tmp_path / name
    args = ["transfer", str(content_path), str(style_path), "-o", str(out), "--json"]
    args += ["--size", "96", "--levels", "1", "--seed", "0", "--device", "cpu", *flags]
    result = runner.invoke(app, args, env=env)
    return result, out


def test_a_tiled_run_makes_the_untiled_picture(tmp_path, content_path, style_path):
    """Five iterations of classic in 32-px tiles: conv5_1 sees 70 px on each side, plus
    one 16-px cell, is a 96-px halo; the 96x64 picture is 3 x 2 tiles."""
    whole, whole_out = _run(tmp_path, content_path, style_path, "whole.png", "-n", "5")
    tiled, tiled_out = _run(
        tmp_path, content_path, style_path, "tiled.png", "-n", "5", "--tile", "32"
    )
    assert whole.exit_code == 0 and tiled.exit_code == 0, tiled.output
    line = json.loads(tiled.stdout.strip().splitlines()[-1])
    assert line["tiles"] == {"count": 6, "size": [32, 32], "halo": 96}
    assert "tiles" not in json.loads(whole.stdout.strip().splitlines()[-1])
    assert _psnr(Image.open(whole_out), Image.open(tiled_out)) >= 40


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tile", "30"], "--tile 30: tiles must be a multiple of 16 px"),
        (["--tile", "0"], "tile must be auto, off or a number of pixels"),
        (["--tile", "4096"], "--tile 4096 is larger than the 96x"),
        (["--tile", "big"], "--tile must be auto, off or a tile size"),
        (["--tile-halo", "20"], "--tile-halo 20: the halo must be a multiple of 16 px"),
    ],
)
def test_bad_tile_settings_are_one_line(tmp_path, content_path, style_path, flags, message):
    result, out = _run(tmp_path, content_path, style_path, "out.png", "-n", "1", *flags)
    assert result.exit_code == 1
    assert message in error_line(result)
    assert not out.exists()


def _budget_between(config, small, large):
    """Bytes that fit a whole run at ``small`` (width, height) but not at ``large``, where
    ``large`` fits in tiles."""
    low, high = estimate(config, small)[0], estimate(config, large)[0]
    assert low < high
    return (low + high) // 2


def test_auto_tiles_a_run_that_does_not_fit(tmp_path, content_path, style_path, monkeypatch):
    preset = tmp_path / "shallow.yaml"
    preset.write_text(
        "extends: classic\n"
        "content: {layers: [conv2_2]}\n"
        "style: {layers: [conv1_1, conv2_1], weight: 50.0}\n",
        encoding="utf-8",
    )
    config, _ = resolve(str(preset), {"size": 96, "optimizer": {"iterations": 2, "levels": 1}})
    budget = _budget_between(config, (48, 32), (96, 64))
    monkeypatch.setenv(ENVIRONMENT, str(budget))
    plan = plan_memory(config, (96, 64), CPU)
    assert plan.tile is not None and plan.count > 1
    env = {ENVIRONMENT: str(budget)}
    result, out = _run(
        tmp_path, content_path, style_path, "auto.png", "-n", "2", "-p", str(preset), env=env
    )
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["tiles"] == {"count": plan.count, "size": list(plan.tile), "halo": plan.halo}
    assert Image.open(out).size == (96, 64)


def test_coarse_levels_run_whole_and_the_fine_level_in_tiles(content_path, style_path, monkeypatch):
    config, _ = resolve(
        "classic", {**SHALLOW, "size": 96, "seed": 0, "optimizer": {"iterations": [4, 3]}}
    )
    budget = _budget_between(config, (48, 32), (96, 64))
    monkeypatch.setenv(ENVIRONMENT, str(budget))
    tiled = transfer(content_path, [style_path], config)
    assert [level.tile is not None for level in tiled.levels] == [False, True]
    assert tiled.levels[1].tiles > 1
    assert tiled.record(timings=False)["levels"][1]["tiles"] == tiled.levels[1].tiles
    monkeypatch.setenv(ENVIRONMENT, "64G")
    whole = transfer(content_path, [style_path], config)
    assert all(level.tile is None for level in whole.levels)
    assert _psnr(whole.image, tiled.image) >= 40


def test_ctrl_c_within_a_tiled_iteration_keeps_the_last_complete_picture(content_path, style_path):
    config, _ = resolve(
        "classic", {**SHALLOW, "size": 96, "seed": 0, "tile": 32, "optimizer": {"levels": 1}}
    )
    seen: list[tuple[int, int]] = []
    iterations: list[int] = []

    def on_tile(done: int, total: int) -> None:
        seen.append((done, total))
        if len(iterations) == 3 and done == 2:  # the 4th iteration, midway
            raise KeyboardInterrupt

    result = transfer(
        content_path,
        [style_path],
        config,
        callback=lambda event: iterations.append(event.iteration),
        on_tile=on_tile,
    )
    assert result.interrupted and result.iterations == 3
    total = seen[0][1]
    assert total == 2 * 6 - 1  # 3 x 2 tiles of 32 px, the last one's graph kept
    assert result.image.size == (96, 64)
    assert result.final_losses["total"] <= result.initial_losses["total"]


def test_the_progress_shows_tiles_once_an_iteration_takes_a_while(monkeypatch, capsys):
    import neuralart.cli.output as output

    clock = [100.0]
    monkeypatch.setattr(output.time, "monotonic", lambda: clock[0])
    progress = output.Progress(quiet=False)
    progress.tty, progress.bar = False, None  # plain lines, as in a log
    progress.desc = "optimising level 2/2"
    progress.tile(1, 7)
    clock[0] += 1.0
    progress.tile(2, 7)  # one second into the iteration: nothing yet
    assert capsys.readouterr().err == ""
    clock[0] += 12.0
    progress.tile(3, 7)
    assert capsys.readouterr().err.strip() == "optimising level 2/2: tile 3/7 of this iteration"
    quiet = output.Progress(quiet=True)
    clock[0] += 60.0
    quiet.tile(1, 7)
    quiet.tile(2, 7)
    assert capsys.readouterr().err == ""


def test_a_statistic_that_is_not_a_sum_is_never_tiled(monkeypatch):
    """A statistic that needs every position at once (no partial sums, no local loss)
    runs whole or is refused, in one line that says why."""
    from neuralart.stats import REGISTRY, Memory
    from neuralart.stats.gram import single_layer_terms
    from neuralart.stats.moments import MomentStatistic

    class Sorted(MomentStatistic):
        name = "sorted"
        sum_over_positions = False

        def terms(self, style):
            return single_layer_terms(style)

        def memory(self, style, term, height, width):
            return Memory(64, 0)

    monkeypatch.setitem(REGISTRY, "sorted", Sorted())
    overrides = {"style": {"statistic": "sorted", "layers": ["conv1_1"]}}
    config, _ = resolve("classic", overrides)
    monkeypatch.setenv(ENVIRONMENT, "64G")
    assert plan_memory(config, (2048, 1536), CPU).tile is None
    monkeypatch.setenv(ENVIRONMENT, "3G")
    with pytest.raises(NeuralartError, match="cannot be evaluated tile by tile"):
        plan_memory(config, (2048, 1536), CPU)
    forced, _ = resolve("classic", {**overrides, "tile": 512})
    with pytest.raises(NeuralartError, match="--tile 512: statistic sorted cannot"):
        plan_memory(forced, (2048, 1536), CPU)
