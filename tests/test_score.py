"""`neuralart score`: its figures against naive references, its references and ranking,
the batch naming rule, and its command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import error_line
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from neuralart.cli import app
from neuralart.cli.scoring import match_content
from neuralart.errors import NeuralartError
from neuralart.images import image_to_tensor, load_image, resize_long_edge, save_image
from neuralart.score import (
    CONTENT_LAYER,
    STYLE_LAYERS,
    Scorer,
    directions,
    fit_to,
    sliced_distance,
    sorted_projections,
)

runner = CliRunner()
SIZE = 64


def naive_sliced(dirs: np.ndarray, values: np.ndarray, style: np.ndarray) -> float:
    """Projections by loops over positions, sorted; the style's quantile function read at
    (j + 0.5)/M by interpolating between its values at (k + 0.5)/n (clamped beyond)."""
    total, count = 0.0, 0
    m, n = values.shape[1], style.shape[1]
    for d in dirs:
        mine = sorted(sum(d[c] * values[c, p] for c in range(len(d))) for p in range(m))
        theirs = sorted(sum(d[c] * style[c, p] for c in range(len(d))) for p in range(n))
        levels = (np.arange(m) + 0.5) / m
        known = (np.arange(n) + 0.5) / n
        target = np.interp(levels, known, theirs)
        total += sum((a - b) ** 2 for a, b in zip(mine, target, strict=True))
        count += m
    return float(np.sqrt(total / count))


@pytest.mark.parametrize(("m", "n"), [(7, 7), (5, 9), (11, 4)])
def test_sliced_distance_against_a_naive_reference(m, n):
    gen = torch.Generator().manual_seed(m * 100 + n)
    values = torch.randn(3, m, generator=gen, dtype=torch.float64)
    style = torch.randn(3, n, generator=gen, dtype=torch.float64) * 2 + 1
    dirs = directions(0, "test", 5, 3)
    got = sliced_distance(dirs, values, sorted_projections(dirs, style))
    assert got == pytest.approx(naive_sliced(dirs.numpy(), values.numpy(), style.numpy()), rel=1e-9)


def test_directions_depend_on_seed_and_name_only():
    torch.manual_seed(123)
    a = directions(0, "conv1_1", 8, 4)
    torch.manual_seed(456)
    assert torch.equal(a, directions(0, "conv1_1", 8, 4))
    assert not torch.equal(a, directions(1, "conv1_1", 8, 4))
    assert not torch.equal(a, directions(0, "conv2_1", 8, 4))
    torch.testing.assert_close(a.norm(dim=1), torch.ones(8, dtype=torch.float64))


@pytest.fixture(scope="module")
def scorer(network):
    return Scorer(network, size=SIZE, seed=0)


@pytest.fixture(scope="module")
def pair(content_path, style_path):
    return load_image(content_path), load_image(style_path)


def test_figures_against_naive_references(scorer, network, pair):
    """Each figure recomputed here from the network's features and skimage's SSIM."""
    from skimage.metrics import structural_similarity

    content, style = pair
    target = scorer.style_target([style])
    picture = scorer.prepare(resize_long_edge(content, SIZE).filter(ImageFilter.GaussianBlur(1.5)))
    own = scorer.content_target(content, picture, "blurred")
    score = scorer.score(picture, own, target)

    def features(rgb):
        with torch.no_grad():
            return network(network.convention.to_network(rgb), [*STYLE_LAYERS, CONTENT_LAYER])

    style_rgb = image_to_tensor(resize_long_edge(style, SIZE))
    mine, theirs = features(picture), features(style_rgb)
    per_layer = []
    for name in STYLE_LAYERS:
        c = mine[name].shape[1]
        f = mine[name][0].reshape(c, -1).double()
        s = theirs[name][0].reshape(c, -1).double()
        dirs = directions(0, name, c, c)
        # the reference sorts full projections with numpy (the loops are too slow here)
        p = np.sort(dirs.numpy() @ f.numpy(), axis=1)
        q = np.sort(dirs.numpy() @ s.numpy(), axis=1)
        levels = (np.arange(p.shape[1]) + 0.5) / p.shape[1]
        known = (np.arange(q.shape[1]) + 0.5) / q.shape[1]
        target_q = np.stack([np.interp(levels, known, row) for row in q])
        per_layer.append(np.sqrt(np.mean((p - target_q) ** 2)))
    assert score.style == pytest.approx(np.mean(per_layer), rel=1e-6)
    assert list(score.style_layers) == list(STYLE_LAYERS)

    rgb = picture[0].reshape(3, -1).double().numpy() * 255
    srgb = style_rgb[0].reshape(3, -1).double().numpy() * 255
    cdirs = directions(0, "rgb", 64, 3).numpy()
    p, q = np.sort(cdirs @ rgb, axis=1), np.sort(cdirs @ srgb, axis=1)
    levels = (np.arange(p.shape[1]) + 0.5) / p.shape[1]
    known = (np.arange(q.shape[1]) + 0.5) / q.shape[1]
    target_q = np.stack([np.interp(levels, known, row) for row in q])
    assert score.color == pytest.approx(np.sqrt(np.mean((p - target_q) ** 2)), rel=1e-6)

    weights = np.array([0.299, 0.587, 0.114])
    luma_mine = np.clip(np.tensordot(weights, picture[0].double().numpy(), 1), 0, 1)
    luma_own = np.clip(np.tensordot(weights, own.rgb[0].double().numpy(), 1), 0, 1)
    expected = structural_similarity(
        luma_mine,
        luma_own,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert score.ssim == pytest.approx(expected, abs=1e-6)
    assert score.ssim < 0.99  # the blur is seen

    a, b = mine[CONTENT_LAYER].double(), features(own.rgb)[CONTENT_LAYER].double()
    assert score.content == pytest.approx(float((a - b).norm() / b.norm()), rel=1e-6)


def test_the_photograph_is_its_own_perfect_content_and_the_style_its_own_style(scorer, pair):
    content, style = pair
    target = scorer.style_target([style])
    picture = scorer.prepare(content)
    own = scorer.content_target(content, picture, "content")
    plain = scorer.score(picture, own, target)
    assert plain.ssim == pytest.approx(1.0)
    assert plain.content == pytest.approx(0.0, abs=1e-9)
    # the painting against itself: its own quantiles, a distance of (almost) nothing
    painting = scorer.prepare(style)
    itself = scorer.score(painting, scorer.content_target(style, painting, "style"), target)
    assert itself.style < 1e-6 and itself.color < 1e-6
    assert plain.style > 0.5 and plain.color > 10


def test_a_stylised_result_ranks_between_the_style_and_the_unstylised(
    scorer, network, pair, content_path, style_path
):
    """A short real run scores closer to its style than the photograph and its colour
    transfer; the photograph ranks last."""
    from neuralart.presets import resolve
    from neuralart.transfer import transfer

    config, _ = resolve("classic", {"size": SIZE, "seed": 0, "optimizer": {"iterations": 30}})
    result = transfer(content_path, [style_path], config, network=network)
    content, style = pair
    target = scorer.style_target([style])
    picture = scorer.prepare(result.image)
    own = scorer.content_target(content, picture, "result")
    stylised = scorer.score(picture, own, target)
    plain = scorer.score(own.rgb, own, target)
    recoloured = scorer.score(scorer.color_transferred(own, [style]), own, target)
    assert stylised.style < recoloured.style < plain.style
    assert recoloured.color < plain.color
    assert 0.0 < stylised.ssim < 1.0
    assert stylised.content > 0.0


def test_several_styles_average_their_quantile_functions(scorer, pair):
    _, style = pair
    one = scorer.style_target([style])
    two = scorer.style_target([style, style])
    for name in STYLE_LAYERS:
        torch.testing.assert_close(one.layers[name][1], two.layers[name][1])
    dark = Image.eval(style, lambda v: v // 3)
    mixed = scorer.style_target([style, dark])
    expected = (one.color[1] + scorer.style_target([dark]).color[1]) / 2
    torch.testing.assert_close(mixed.color[1], expected)


def test_fit_to_resizes_the_content_and_refuses_another_shape(pair):
    content, _ = pair
    w, h = content.size
    small = (64, round(64 * h / w))
    assert fit_to(content, small, "r").size == small
    assert fit_to(content, (small[0], small[1] + 1), "r").size == (small[0], small[1] + 1)
    with pytest.raises(NeuralartError, match="not the same shape"):
        fit_to(content, (small[1], small[0]), "r")


def test_match_content_naming_rule(tmp_path):
    contents = [tmp_path / n for n in ("cat.jpg", "cat_b.jpg", "dog.png")]
    assert match_content(tmp_path / "cat_starry_classic.png", contents) == contents[0]
    assert match_content(tmp_path / "cat_b_starry_chain.png", contents) == contents[1]
    assert match_content(tmp_path / "cat.png", contents) == contents[0]
    assert match_content(tmp_path / "dog-other-tool.jpg", contents) == contents[2]
    assert match_content(tmp_path / "catalogue_x.png", contents) is None
    assert match_content(tmp_path / "bird.png", contents) is None


# ------------------------------------------------------------------------ command line


def _write(img: Image.Image, path):
    save_image(img, path)
    return path


def test_cli_table_json_and_references(tmp_path, content_path, style_path):
    content = load_image(content_path)
    result = _write(
        resize_long_edge(content, 48).filter(ImageFilter.GaussianBlur(1)), tmp_path / "r.png"
    )
    args = ["score", str(result), str(content_path), str(style_path), "--size", str(SIZE)]
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "reference: the photograph" in table.output
    assert "reference: its colour transfer" in table.output
    lines = runner.invoke(app, [*args, "--json"])
    assert lines.exit_code == 0, lines.output
    rows = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [r["role"] for r in rows] == ["content", "color-transfer", "result"]
    assert rows[2]["image"] == str(result) and rows[2]["content_image"] == str(content_path)
    assert rows[0]["ssim"] == pytest.approx(1.0) and rows[0]["content"] == 0.0
    assert rows[2]["size"][0] == SIZE
    alone = runner.invoke(app, [*args, "--json", "--no-references"])
    assert [json.loads(line)["role"] for line in alone.stdout.splitlines()] == ["result"]


def test_cli_batch_folder_matches_by_name_and_reports_strays(tmp_path, style_path):
    from conftest import DATA

    photos = tmp_path / "photos"
    photos.mkdir()
    results = tmp_path / "results"
    results.mkdir()
    for name in ("raccoon", "flower"):
        img = resize_long_edge(load_image(DATA / f"{name}.jpg"), 48)
        _write(img, photos / f"{name}.png")
        _write(img.filter(ImageFilter.GaussianBlur(1)), results / f"{name}_starry_classic.png")
    _write(resize_long_edge(load_image(DATA / "china.jpg"), 48), results / "china_x.png")
    run = runner.invoke(
        app, ["score", str(results), str(photos), str(style_path), "--size", "48", "--json"]
    )
    assert run.exit_code == 1
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    scored = {r["image"]: r["content_image"] for r in rows if r["role"] == "result"}
    assert scored == {
        str(results / "flower_starry_classic.png"): str(photos / "flower.png"),
        str(results / "raccoon_starry_classic.png"): str(photos / "raccoon.png"),
    }
    assert sum(r["role"] == "content" for r in rows) == 2
    assert "china_x.png" in run.stderr and "1 of 3 results could not be scored" in run.stderr


@pytest.mark.parametrize(
    "case", ["missing", "rotated", "folder-content", "tiny-size", "not-an-image"]
)
def test_cli_bad_input_is_one_line(tmp_path, content_path, style_path, case):
    content = load_image(content_path)
    result = tmp_path / "r.png"
    _write(resize_long_edge(content, 48), result)
    args = ["score", str(result), str(content_path), str(style_path)]
    if case == "missing":
        args[1] = str(tmp_path / "nope.png")
    elif case == "rotated":
        _write(resize_long_edge(content, 48).transpose(Image.Transpose.ROTATE_90), result)
    elif case == "folder-content":
        args[2] = str(tmp_path)
    elif case == "tiny-size":
        args += ["--size", "8"]
    else:
        result.write_bytes(b"not a picture")
    run = runner.invoke(app, args)
    assert run.exit_code == 1
    line = error_line(run)
    expected = {
        "missing": "result not found",
        "rotated": "not the same shape",
        "folder-content": "is a folder",
        "tiny-size": "at least 32 px",
        "not-an-image": "r.png",
    }[case]
    assert expected in line
