"""Several pictures optimised together (`--batch-size`): each gets what it gets alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, error_line
from PIL import Image
from typer.testing import CliRunner

from neuralart.batch import (
    BatchedObjective,
    batch_size,
    compare_batch_size,
    run_lbfgs_batch,
    transfer_batch,
)
from neuralart.cli import app
from neuralart.errors import NeuralartError
from neuralart.images import image_to_tensor, load_image, read_metadata, resize_to, save_image
from neuralart.losses import Objective
from neuralart.optimize import run_lbfgs
from neuralart.presets import resolve
from neuralart.transfer import transfer

runner = CliRunner()
STYLE = DATA / "starry_night.jpg"
PHOTOS = ["china", "flower", "raccoon"]


@pytest.fixture(scope="module")
def same_size(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("same")
    paths = []
    for name in PHOTOS:
        path = folder / f"{name}.png"
        save_image(resize_to(load_image(DATA / f"{name}.jpg"), (64, 48)), path)
        paths.append(path)
    return paths


def _objective(network, config, content_path) -> Objective:
    conv = network.convention
    content = conv.to_network(image_to_tensor(load_image(content_path)))
    style = conv.to_network(image_to_tensor(resize_to(load_image(STYLE), (64, 48))))
    return Objective(
        network,
        config.content,
        config.style,
        content_image=content,
        style_images=[style],
        tv_weight=config.tv_weight,
        pixel_scale=conv.pixel_scale(),
    )


@pytest.mark.parametrize("preset", ["classic", "chain-blurred"])
def test_one_pass_over_the_batch_gives_each_pictures_own_terms_and_gradient(
    network, same_size, preset
):
    config, _ = resolve(preset)
    objectives = [_objective(network, config, p) for p in same_size]
    generator = torch.Generator().manual_seed(0)
    xs = torch.cat([o.content_image for o in objectives])
    xs = xs + 20.0 * torch.randn(xs.shape, generator=generator)
    terms, totals, grad = BatchedObjective(objectives).value_and_grad(xs)
    for b, objective in enumerate(objectives):  # each alone, the naive way
        alone_terms, alone_total, alone_grad = objective.value_and_grad(xs[b : b + 1])
        torch.testing.assert_close(totals[b], alone_total, rtol=1e-5, atol=0)
        for name, value in alone_terms.items():
            torch.testing.assert_close(terms[b][name], value, rtol=1e-5, atol=1e-9)
        error = (grad[b : b + 1] - alone_grad).abs().max() / alone_grad.abs().max()
        assert error < 1e-5


class Bowl:
    """A quadratic per picture, f_b(x) = s_b·|x − t_b|², with its exact gradient; the
    picture ``broken`` turns non-finite from the evaluation ``breaks_at`` on."""

    def __init__(self, targets, scales, broken=None, breaks_at=0):
        self.targets, self.scales = targets, scales
        self.broken, self.breaks_at, self.calls = broken, breaks_at, 0

    def _one(self, x, b):
        total = self.scales[b] * ((x - self.targets[b]) ** 2).sum()
        if b == self.broken and self.calls >= self.breaks_at:
            total = total * float("nan")
        return total

    def value_and_grad(self, xs):
        self.calls += 1
        totals = torch.stack([self._one(xs[b], b) for b in range(len(xs))])
        grad = torch.stack([2 * self.scales[b] * (xs[b] - self.targets[b]) for b in range(len(xs))])
        return [{"style": t} for t in totals], totals, grad

    def value(self, xs):
        totals = torch.stack([self._one(xs[b], b) for b in range(len(xs))])
        return [{"style": t} for t in totals], totals


class AlonePicture:
    """One picture of a Bowl, as run_lbfgs sees it (the Evaluator protocol)."""

    def __init__(self, bowl, b):
        self.bowl, self.b = bowl, b

    def value_and_grad(self, x):
        self.bowl.calls += 1
        total = self.bowl._one(x[0], self.b)
        return (
            {"style": total},
            total,
            2 * self.bowl.scales[self.b] * (x - self.bowl.targets[self.b]),
        )

    def value(self, x):
        total = self.bowl._one(x[0], self.b)
        return {"style": total}, total


def test_each_picture_keeps_its_own_lbfgs_and_its_own_stop():
    generator = torch.Generator().manual_seed(1)
    targets = torch.randn(3, 3, 8, 8, generator=generator, dtype=torch.float64)
    # Bowls of different curvature, so the pictures' L-BFGS states truly differ.
    scales = [0.5, 3.0, 40.0]
    x0 = torch.zeros(3, 3, 8, 8, dtype=torch.float64)
    args = {"iterations": 12, "history": 5, "learning_rate": 1.0, "first_step": 0.1}
    together = run_lbfgs_batch(Bowl(targets, scales, broken=1, breaks_at=5), x0, **args)
    for b in range(3):
        bowl = Bowl(targets, scales, broken=1, breaks_at=5)
        alone = run_lbfgs(AlonePicture(bowl, b), x0[b : b + 1], **args)
        assert together[b].iterations == alone.iterations
        assert together[b].best_iteration == alone.best_iteration
        assert together[b].losses == pytest.approx(alone.losses, rel=1e-12)
        torch.testing.assert_close(together[b].image, alone.image, rtol=1e-12, atol=1e-12)
        assert (together[b].stopped is None) == (alone.stopped is None)
    assert together[1].stopped is not None and together[1].iterations == 4
    assert together[0].iterations == together[2].iterations == 12


def test_each_picture_has_its_own_iterations_history_and_rate():
    """Per-picture settings (compare's presets): each picture runs as run_lbfgs runs it
    alone with its own iteration count, history and learning rate."""
    generator = torch.Generator().manual_seed(2)
    targets = torch.randn(3, 3, 8, 8, generator=generator, dtype=torch.float64)
    scales = [0.5, 3.0, 40.0]
    x0 = torch.zeros(3, 3, 8, 8, dtype=torch.float64)
    counts, histories, rates = [3, 9, 6], [2, 5, 4], [1.0, 0.5, 1.0]
    together = run_lbfgs_batch(Bowl(targets, scales), x0, iterations=counts,
                               history=histories, learning_rate=rates, first_step=0.1)  # fmt: skip
    for b in range(3):
        alone = run_lbfgs(AlonePicture(Bowl(targets, scales), b), x0[b : b + 1],
                          iterations=counts[b], history=histories[b],
                          learning_rate=rates[b], first_step=0.1)  # fmt: skip
        assert together[b].iterations == alone.iterations == counts[b]
        assert together[b].losses == pytest.approx(alone.losses, rel=1e-12)
        torch.testing.assert_close(together[b].image, alone.image, rtol=1e-12, atol=1e-12)


class Interrupted(Bowl):
    """A Bowl where Ctrl-C arrives during the evaluation ``at``."""

    def __init__(self, targets, scales, at):
        super().__init__(targets, scales)
        self.at = at

    def value_and_grad(self, xs):
        if self.calls + 1 == self.at:
            raise KeyboardInterrupt
        return super().value_and_grad(xs)


def test_ctrl_c_hands_back_every_pictures_best_so_far():
    generator = torch.Generator().manual_seed(4)
    targets = torch.randn(3, 3, 8, 8, generator=generator, dtype=torch.float64)
    x0 = torch.zeros(3, 3, 8, 8, dtype=torch.float64)
    args = {"iterations": 10, "history": 5, "learning_rate": 1.0, "first_step": 0.1}
    results = run_lbfgs_batch(Interrupted(targets, [0.5, 3.0, 40.0], at=5), x0, **args)
    for b, r in enumerate(results):
        assert r.interrupted and r.stopped == "interrupted after 4 iterations"
        assert r.iterations == 4 and len(r.losses) == 4
        assert r.final["total"] == pytest.approx(min(r.losses), rel=1e-12)
        bowl = Bowl(targets, [0.5, 3.0, 40.0])
        torch.testing.assert_close(bowl.value(r.image.expand(3, -1, -1, -1))[1][b],
                                   torch.tensor(r.final["total"], dtype=torch.float64))  # fmt: skip
    at_once = run_lbfgs_batch(Interrupted(targets, [0.5, 3.0, 40.0], at=1), x0, **args)
    assert all(r.interrupted and r.iterations == 0 for r in at_once)
    torch.testing.assert_close(torch.cat([r.image for r in at_once]), x0)


def test_ctrl_c_leaves_a_picture_that_had_all_its_iterations_finished():
    generator = torch.Generator().manual_seed(5)
    targets = torch.randn(3, 3, 8, 8, generator=generator, dtype=torch.float64)
    scales = [0.5, 3.0, 40.0]
    x0 = torch.zeros(3, 3, 8, 8, dtype=torch.float64)
    args = {"history": 5, "learning_rate": 1.0, "first_step": 0.1}
    results = run_lbfgs_batch(Interrupted(targets, scales, at=5), x0, iterations=[2, 9, 9],
                              **args)  # fmt: skip
    alone = run_lbfgs(AlonePicture(Bowl(targets, scales), 0), x0[:1], iterations=2, **args)
    assert not results[0].interrupted and results[0].stopped is None
    assert results[0].final["total"] == pytest.approx(alone.final["total"], rel=1e-12)
    torch.testing.assert_close(results[0].image, alone.image, rtol=1e-12, atol=1e-12)
    assert all(r.interrupted and r.iterations == 4 for r in results[1:])


def test_the_callback_hears_each_iteration_with_the_mean_over_the_running_pictures():
    generator = torch.Generator().manual_seed(3)
    targets = torch.randn(3, 3, 8, 8, generator=generator, dtype=torch.float64)
    scales = [0.5, 3.0, 40.0]
    x0 = torch.zeros(3, 3, 8, 8, dtype=torch.float64)
    args = {"iterations": 9, "history": 5, "learning_rate": 1.0, "first_step": 0.1}
    events = []
    bowl = Bowl(targets, scales, broken=1, breaks_at=5)
    results = run_lbfgs_batch(bowl, x0, **args, callback=events.append, level=2, levels=3,
                              schedule=(4, 9, 6))  # fmt: skip
    assert [e.iteration for e in events] == list(range(1, 10))
    assert [e.completed for e in events] == list(range(5, 14)) and events[0].total == 19
    assert all(e.level == 2 and e.levels == 3 and e.image.shape == x0.shape for e in events)
    for e in events:  # picture 1 turns NaN at its 5th evaluation and drops out of the mean
        running = [b for b in range(3) if e.iteration <= results[b].iterations]
        expected = np.mean([results[b].losses[e.iteration - 1] for b in running])
        assert e.loss == pytest.approx(expected, rel=1e-12)
        assert e.terms["style"] == pytest.approx(expected, rel=1e-12)
    assert results[1].iterations == 4


def test_the_command_shows_the_iterations_of_a_batch(same_size, tmp_path):
    args = ["transfer", str(same_size[0].parent), str(STYLE), "--out-dir", str(tmp_path)]
    args += ["--size", "64", "-n", "2", "--seed", "0", "--batch-size", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "optimising 3 together: iteration 1/2" in result.stderr
    assert "optimising 3 together: iteration 2/2" in result.stderr
    assert len(list(tmp_path.glob("*.png"))) == 3


@pytest.mark.parametrize(("preset", "iterations"), [("classic", 10), ("chain-blurred", 4)])
def test_a_batch_of_three_gives_the_one_at_a_time_pictures(network, same_size, preset, iterations):
    config, _ = resolve(preset, {"size": 64, "seed": 2, "optimizer": {"iterations": iterations}})
    alone = [transfer(p, [STYLE], config, network=network) for p in same_size]
    together = transfer_batch(same_size, [STYLE], config, network=network)
    for a, b in zip(alone, together, strict=True):
        assert b.iterations == a.iterations and b.seed == a.seed == 2
        assert b.final_losses["total"] == pytest.approx(a.final_losses["total"], rel=2e-3)
        difference = np.abs(np.asarray(a.image, float) - np.asarray(b.image, float))
        assert difference.mean() < 0.5  # 8-bit levels


def test_auto_is_one_on_the_cpu_and_a_number_is_kept():
    config, _ = resolve("classic")
    assert batch_size("auto", config, (512, 341), torch.device("cpu")) == 1
    assert batch_size(4, config, (512, 341), torch.device("cpu")) == 4
    configs = [resolve(name)[0] for name in ("classic", "chain-blurred")]
    cpu = torch.device("cpu")
    assert compare_batch_size("auto", DATA / "china.jpg", configs, cpu) == 1
    assert compare_batch_size(3, DATA / "china.jpg", configs, cpu) == 3


def test_compare_s_auto_on_cuda_asks_each_preset_at_the_content_s_size(monkeypatch, tmp_path):
    """The fewest pictures any preset allows, at the size the content comes out; a file
    that is no picture is a one-line error, not a traceback. (The device is only named:
    the memory plan is replaced.)"""
    import neuralart.batch

    asked = []

    def plan(_, config, size, device):
        asked.append((config.name, size))
        return {"classic": 6, "chain-blurred": 4}[config.name]

    monkeypatch.setattr(neuralart.batch, "batch_size", plan)
    configs = [resolve(name, {"size": 128})[0] for name in ("classic", "chain-blurred")]
    cuda = torch.device("cuda")
    assert compare_batch_size("auto", DATA / "china.jpg", configs, cuda) == 4
    width, height = load_image(DATA / "china.jpg").size
    expected = (128, round(128 * height / width))
    assert asked == [("classic", expected), ("chain-blurred", expected)]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    with pytest.raises(NeuralartError, match="not an image file"):
        compare_batch_size("auto", broken, configs, cuda)


def test_the_command_batches_pictures_of_one_size_and_runs_the_rest_alone(same_size, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in same_size:
        (folder / p.name).write_bytes(p.read_bytes())
    tall = resize_to(load_image(DATA / "shipwreck.jpg"), (40, 64))  # another size
    save_image(tall, folder / "tall.png")
    (folder / "broken.png").write_bytes(b"not a picture")
    outputs = {}
    for size in ("3", "1"):
        out = tmp_path / f"out-{size}"
        args = ["transfer", str(folder), str(STYLE), "--out-dir", str(out), "--size", "64"]
        args += ["-n", "6", "--seed", "0", "--preset", "classic", "--json", "--batch-size", size]
        result = runner.invoke(app, args)
        assert result.exit_code == 1  # the broken picture, alone
        assert "broken.png" in result.stderr
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(lines) == 4
        outputs[size] = out
    for p in sorted(outputs["1"].glob("*.png")):
        a = np.asarray(Image.open(p), dtype=float)
        b = np.asarray(Image.open(outputs["3"] / p.name), dtype=float)
        assert np.abs(a - b).mean() < 0.5, p.name


@pytest.mark.parametrize("text", ["0", "-2", "many"])
def test_a_bad_batch_size_is_one_line(text, same_size, tmp_path):
    args = ["transfer", str(same_size[0].parent), str(STYLE), "--out-dir", str(tmp_path)]
    result = runner.invoke(app, [*args, "--batch-size", text])
    assert result.exit_code == 1
    assert "--batch-size must be auto or a number" in error_line(result)


# ------------------------------------------------------------------ compare's presets


def _configs(names, iterations, **extra):
    counts = iterations if isinstance(iterations, list) else [iterations] * len(names)
    return [
        resolve(name, {"size": 64, "seed": 3, "optimizer": {"iterations": n}, **extra})[0]
        for name, n in zip(names, counts, strict=True)
    ]


def _same_pictures(alone, together):
    for a, b in zip(alone, together, strict=True):
        assert b.config.name == a.config.name
        assert b.iterations == a.iterations and b.seed == a.seed == 3
        assert b.final_losses["total"] == pytest.approx(a.final_losses["total"], rel=2e-3)
        difference = np.abs(np.asarray(a.image, float) - np.asarray(b.image, float))
        assert difference.mean() < 0.5  # 8-bit levels


def test_presets_on_one_pair_together_give_the_one_at_a_time_pictures():
    """Three methods with different layers and statistics (classic's five Grams, the
    chain's sixteen layers, blurred pairs) and different iteration counts, in one
    network pass: each picture is the one it gets alone, and they did run as one group."""
    from neuralart.batch import compare

    configs = _configs(["classic", "chain", "chain-blurred"], [8, 4, 6])
    content = DATA / "china.jpg"
    groups = {1: [], 3: []}
    runs = {
        size: compare(content, [STYLE], configs, device=torch.device("cpu"), batch_size=size,
                      on_start=groups[size].append).results
        for size in (1, 3)
    }  # fmt: skip
    assert groups == {1: [[0], [1], [2]], 3: [[0, 1, 2]]}
    assert [r.iterations for r in runs[3]] == [8, 4, 6]
    _same_pictures(runs[1], runs[3])


def test_presets_that_cannot_share_a_pass_run_apart():
    """Another network (max pooling) starts a group of its own; a group whose levels
    differ in size falls back to one run at a time, with the same pictures."""
    from neuralart.batch import compare

    configs = _configs(["classic", "chain"], 3)
    pooled = resolve("classic", {"size": 64, "seed": 3, "optimizer": {"iterations": 3},
                                 "network": {"pooling": "max"}})[0]  # fmt: skip
    two_levels = resolve("chain", {"size": 64, "seed": 3,
                                   "optimizer": {"iterations": 3, "levels": 2}})[0]  # fmt: skip
    content = DATA / "china.jpg"
    calls = []
    done = compare(content, [STYLE], [configs[0], pooled, configs[1]],
                   device=torch.device("cpu"), batch_size=3, on_start=calls.append)  # fmt: skip
    assert calls == [[0], [1], [2]] and len(done.results) == 3
    calls.clear()
    done = compare(content, [STYLE], [configs[0], two_levels], device=torch.device("cpu"),
                   batch_size=2, on_start=calls.append)  # fmt: skip
    assert calls == [[0, 1], [0], [1]]
    assert [len(r.levels) for r in done.results] == [1, 2]


def _compare(out, presets, iterations, batch):
    """``neuralart compare`` of china.jpg × the painting at 64 px into ``out``."""
    args = ["compare", str(DATA / "china.jpg"), str(STYLE), "--presets", presets, "--size"]
    args += ["64", "-n", str(iterations), "--seed", "0", "--batch-size", batch, "-o", str(out)]
    return runner.invoke(app, args)


def test_the_compare_command_runs_presets_together(tmp_path):
    out = tmp_path / "sheet.png"
    result = _compare(out, "classic,chain,cnn-mrf", 2, "2")
    assert result.exit_code == 0, result.output
    assert "classic, chain (1-2/3): iteration 2/2" in result.stderr
    assert "cnn-mrf (3/3)" in result.stderr
    assert out.is_file()
    bad = _compare(out, "classic,chain,cnn-mrf", 2, "none")
    assert bad.exit_code == 1
    expected = "error: --batch-size must be auto or a number of 1 or more, got 'none'"
    assert error_line(bad) == expected


def _interrupt_the_batch_at(monkeypatch, call):
    """Ctrl-C during a batch's evaluation number ``call``."""
    real = BatchedObjective.value_and_grad
    calls = []

    def interrupted(self, xs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(self, xs)

    monkeypatch.setattr(BatchedObjective, "value_and_grad", interrupted)


def test_ctrl_c_in_a_batch_saves_every_picture_so_far(same_size, tmp_path, monkeypatch):
    _interrupt_the_batch_at(monkeypatch, 3)
    args = ["transfer", str(same_size[0].parent), str(STYLE), "--out-dir", str(tmp_path)]
    args += ["--size", "64", "-n", "6", "--seed", "0", "--batch-size", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 130, result.output
    written = sorted(tmp_path.glob("*.png"))
    assert len(written) == 3
    assert result.stderr.count("interrupted: saved the picture so far") == 3
    for path in written:
        meta = read_metadata(path)
        assert meta["partial"] is True and meta["record"]["iterations"] == 2
        assert meta["record"]["interrupted"] is True


def test_ctrl_c_in_compare_s_batch_saves_the_presets_so_far(tmp_path, monkeypatch):
    _interrupt_the_batch_at(monkeypatch, 2)
    out = tmp_path / "sheet.png"
    result = _compare(out, "classic,chain", 4, "2")
    assert result.exit_code == 130, result.output
    assert "2 of 2 presets" in result.stderr
    meta = read_metadata(out)
    assert meta["partial"] is True and set(meta["presets"]) == {"classic", "chain"}
    assert all(p["record"]["iterations"] == 1 for p in meta["presets"].values())
