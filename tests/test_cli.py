"""The command line, through Typer's CliRunner and as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES as REPO_EXAMPLES
from conftest import error_line
from typer.testing import CliRunner

from neuralart.cli import app
from neuralart.images import read_metadata

runner = CliRunner()


def test_help_and_version():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "transfer" in result.stdout and "presets" in result.stdout
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("neuralart ")
    result = runner.invoke(app, ["transfer", "-h"])
    assert result.exit_code == 0 and "--style-weight" in result.stdout


def test_presets_list_and_show():
    result = runner.invoke(app, ["presets", "list"])
    assert result.exit_code == 0
    assert "classic-shifted" in result.stdout and "Classic Shifted" in result.stdout
    result = runner.invoke(app, ["presets", "show", "classic-shifted"])
    assert result.exit_code == 0 and "shift: -1" in result.stdout
    result = runner.invoke(app, ["presets", "show", "clasic"])
    assert result.exit_code == 1 and "did you mean 'classic'" in error_line(result)


def test_missing_input_is_exit_1_with_one_line(tmp_path, style_path):
    result = runner.invoke(app, ["transfer", str(tmp_path / "nope.jpg"), str(style_path)])
    assert result.exit_code == 1
    assert "content image not found" in error_line(result)


def test_unknown_preset_is_exit_1(content_path, style_path):
    result = runner.invoke(app, ["transfer", str(content_path), str(style_path), "-p", "chian"])
    assert result.exit_code == 1 and "unknown preset 'chian'" in error_line(result)


def test_malformed_preset_file_is_exit_1(tmp_path, content_path, style_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("style: {weight: [1, 2\n")
    result = runner.invoke(app, ["transfer", str(content_path), str(style_path), "-p", str(bad)])
    assert result.exit_code == 1 and "malformed preset" in error_line(result)


def test_bad_values_and_output_are_exit_1(tmp_path, content_path, style_path):
    args = ["transfer", str(content_path), str(style_path)]
    result = runner.invoke(app, [*args, "--size", "0"])
    assert result.exit_code == 1 and "size must be a positive" in error_line(result)
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "out.xyz")])
    assert result.exit_code == 1 and ".xyz" in error_line(result)
    assert not (tmp_path / "out.xyz").exists()


def test_usage_errors_are_exit_2(content_path, style_path):
    assert runner.invoke(app, ["transfer", str(content_path)]).exit_code == 2
    result = runner.invoke(
        app, ["transfer", str(content_path), str(style_path), "--pooling", "mean"]
    )
    assert result.exit_code == 2


def test_transfer_writes_png_with_resolved_config(tmp_path, content_path, style_path):
    out = tmp_path / "result.png"
    args = ["transfer", str(content_path), str(style_path), "-p", "classic-shifted"]
    args += ["--size", "48", "-n", "3", "--style-weight", "50", "--seed", "5", "-o", str(out)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["output"] == str(out) and summary["seed"] == 5 and summary["iterations"] == 3
    meta = read_metadata(out)
    assert meta is not None
    assert meta["config"]["style"]["shift"] == -1.0
    assert (
        meta["config"]["style"]["weight"] == 50.0 and meta["provenance"]["style.weight"] == "flag"
    )
    assert meta["config"]["seed"] == 5 and meta["preset"] == "classic-shifted"


def test_default_output_name(tmp_path, content_path, style_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app, ["transfer", str(content_path), str(style_path), "--size", "32", "-n", "1", "-q"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "chelsea_starry_night_classic.png").is_file()
    assert result.stdout == ""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    return env


def test_real_subprocess_run(tmp_path, content_path, style_path):
    out = tmp_path / "sub.png"
    cmd = [sys.executable, "-m", "neuralart", "transfer", str(content_path), str(style_path)]
    cmd += ["--size", "40", "-n", "2", "--seed", "1", "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and out.is_file()
    assert "iteration 2/2" in proc.stderr  # plain progress lines when not a terminal
    assert read_metadata(out)["seed"] == 1

    missing = subprocess.run(
        [sys.executable, "-m", "neuralart", "transfer", str(tmp_path / "no.jpg"), str(style_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "Traceback" not in missing.stderr


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["transfer", "--help"]])
def test_help_does_not_import_torch(argv):
    code = (
        "import sys\n"
        f"sys.argv = ['neuralart', *{argv!r}]\n"
        "from neuralart.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().endswith("NO-TORCH"), proc.stdout + proc.stderr


def test_presets_list_shows_all_nine_gram_presets():
    result = runner.invoke(app, ["presets", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in (
        "classic-dense",
        "all-to-content",
        "chain-uniform",
        "chain-blurred",
        "chain-extended",
    ):
        assert name in result.stdout


def test_compare_writes_one_labelled_sheet(tmp_path, content_path, style_path):
    out = tmp_path / "grid.png"
    args = ["compare", str(content_path), str(style_path), "--presets", "classic,chain-blurred"]
    result = runner.invoke(
        app, [*args, "--size", "40", "-n", "2", "--seed", "3", "-o", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [line["preset"] for line in lines] == ["classic", "chain-blurred"]
    from PIL import Image

    with Image.open(out) as sheet:
        assert sheet.width > 4 * 40 and sheet.height > 27  # four cells of up to 40x27 in one row
    meta = read_metadata(out)
    assert set(meta["presets"]) == {"classic", "chain-blurred"}
    assert meta["presets"]["chain-blurred"]["config"]["style"]["blur"] is True


def test_compare_checks_every_preset_before_running(tmp_path, content_path, style_path):
    out = tmp_path / "grid.png"
    args = [
        "compare",
        str(content_path),
        str(style_path),
        "--presets",
        "classic,chian",
        "-o",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "unknown preset 'chian'" in error_line(result)
    assert not out.exists()


def test_texture_command_writes_the_requested_size(tmp_path, style_path):
    out = tmp_path / "tex.png"
    args = ["texture", str(style_path), "--size", "48x32", "-n", "2", "--seed", "1", "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    from PIL import Image

    with Image.open(out) as image:
        assert image.size == (48, 32)
    assert read_metadata(out)["texture"] is True
    bad = runner.invoke(app, ["texture", str(style_path), "--size", "48by32", "-o", str(out)])
    assert bad.exit_code == 1 and "--size must be N or WxH" in error_line(bad)


def test_too_many_levels_for_the_size_is_a_clear_error(content_path, style_path, tmp_path):
    args = ["transfer", str(content_path), str(style_path), "-p", "cnn-mrf", "--size", "64"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "fewer --scales" in error_line(result)


def test_ctrl_c_saves_the_picture_so_far_marked_partial_and_exits_130(
    tmp_path, content_path, style_path
):
    import signal

    out = tmp_path / "partial.png"
    cmd = [sys.executable, "-u", "-m", "neuralart", "transfer", str(content_path), str(style_path)]
    cmd += ["--size", "40", "-n", "100000", "-o", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=_env())
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until the optimisation has started
        if "iteration 1/" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130
    assert "interrupted" in rest and "Traceback" not in rest
    meta = read_metadata(out)  # a complete PNG with its metadata
    assert meta is not None and meta["partial"] is True
    assert 1 <= meta["record"]["iterations"] < 100000
    from PIL import Image

    with Image.open(out) as image:
        image.load()
        assert image.size == (40, 27)


def test_ctrl_c_before_the_optimisation_writes_nothing(
    tmp_path, content_path, style_path, monkeypatch
):
    import neuralart.transfer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(neuralart.transfer, "transfer", interrupted)
    out = tmp_path / "never.png"
    result = runner.invoke(app, ["transfer", str(content_path), str(style_path), "-o", str(out)])
    assert result.exit_code == 130
    assert "interrupted" in error_line(result)
    assert not out.exists()


def test_two_seeded_cpu_runs_give_identical_files(tmp_path, content_path, style_path):
    outs = [tmp_path / "a.png", tmp_path / "b.png"]
    for out in outs:
        args = ["transfer", str(content_path), str(style_path), "--size", "40", "-n", "4"]
        result = runner.invoke(app, [*args, "--seed", "9", "--device", "cpu", "-o", str(out)])
        assert result.exit_code == 0, result.output
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert read_metadata(outs[0])["seed"] == 9


def test_a_random_seed_is_recorded_and_reproduces_the_picture(tmp_path, content_path, style_path):
    args = [
        "transfer",
        str(content_path),
        str(style_path),
        "--size",
        "40",
        "-n",
        "3",
        "--init",
        "noise",
    ]
    first = tmp_path / "first.png"
    assert runner.invoke(app, [*args, "-o", str(first)]).exit_code == 0
    seed = read_metadata(first)["seed"]
    again = tmp_path / "again.png"
    assert runner.invoke(app, [*args, "--seed", str(seed), "-o", str(again)]).exit_code == 0
    from PIL import Image

    with Image.open(first) as a, Image.open(again) as b:
        assert a.tobytes() == b.tobytes()


def test_style_blend_of_one_and_zero_equals_the_single_style(tmp_path, content_path, style_path):
    other = REPO_EXAMPLES / "chelsea.jpg"
    base = ["transfer", str(content_path), "--size", "40", "-n", "3", "--seed", "2"]
    single, blended = tmp_path / "single.png", tmp_path / "blend.png"
    assert (
        runner.invoke(app, [*base[:2], str(style_path), *base[2:], "-o", str(single)]).exit_code
        == 0
    )
    args = [*base[:2], str(style_path), str(other), *base[2:], "--style-blend", "1,0"]
    result = runner.invoke(app, [*args, "-o", str(blended)])
    assert result.exit_code == 0, result.output
    from PIL import Image

    with Image.open(single) as a, Image.open(blended) as b:
        assert a.tobytes() == b.tobytes()
    assert read_metadata(blended)["config"]["style"]["blend"] == [1.0, 0.0]
    bad = runner.invoke(app, [*args[:-1], "0.5,0.3,0.2", "-o", str(tmp_path / "x.png")])
    assert bad.exit_code == 1 and "3 weights but there are 2 style images" in error_line(bad)
    bad = runner.invoke(app, [*args[:-1], "a,b", "-o", str(tmp_path / "x.png")])
    assert bad.exit_code == 1 and "--style-blend must be numbers" in error_line(bad)


def test_style_scale_changes_the_picture(tmp_path, content_path, style_path):
    from PIL import Image

    outs = []
    for scale in ("1", "0.5"):
        out = tmp_path / f"s{scale}.png"
        args = ["transfer", str(content_path), str(style_path), "--size", "64", "-n", "4"]
        result = runner.invoke(app, [*args, "--seed", "1", "--style-scale", scale, "-o", str(out)])
        assert result.exit_code == 0, result.output
        with Image.open(out) as image:
            outs.append(image.tobytes())
    assert outs[0] != outs[1]
    tiny = runner.invoke(app, [*args, "--style-scale", "0.1", "-o", str(tmp_path / "t.png")])
    assert tiny.exit_code == 1 and "needs at least 16" in error_line(tiny)


def test_save_every_writes_numbered_frames(tmp_path, content_path, style_path):
    out = tmp_path / "final.png"
    args = ["transfer", str(content_path), str(style_path), "--size", "40", "-n", "7"]
    result = runner.invoke(app, [*args, "--save-every", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    frames = sorted(p.name for p in (tmp_path / "final_frames").iterdir())
    assert frames == ["frame-00003.png", "frame-00006.png"]
    from PIL import Image

    with Image.open(tmp_path / "final_frames" / "frame-00006.png") as frame:
        assert frame.size == (40, 27)
    custom = tmp_path / "frames"
    result = runner.invoke(
        app, [*args, "--save-every", "7", "--frames-dir", str(custom), "-o", str(out)]
    )
    assert result.exit_code == 0 and [p.name for p in custom.iterdir()] == ["frame-00007.png"]


def test_preserve_color_luminance_keeps_the_photographs_colours(tmp_path, content_path, style_path):
    import numpy as np
    import torch
    from PIL import Image

    from neuralart.color import rgb_to_yuv
    from neuralart.images import image_to_tensor, load_image, resize_long_edge

    out = tmp_path / "lum.png"
    args = ["transfer", str(content_path), str(style_path), "--size", "48", "-n", "12"]
    args += ["--seed", "0", "--style-weight", "30"]
    result = runner.invoke(app, [*args, "--preserve-color", "luminance", "-o", str(out)])
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        got = rgb_to_yuv(image_to_tensor(image.convert("RGB")).double())
    ref = rgb_to_yuv(image_to_tensor(resize_long_edge(load_image(content_path), 48)).double())
    chroma_error = (got[:, 1:] - ref[:, 1:]).abs()
    assert float(torch.quantile(chroma_error.flatten(), 0.99)) <= 2 / 255  # 8-bit rounding only
    assert float((got[:, 0] - ref[:, 0]).abs().mean()) > 0.02  # the luma was repainted
    plain = tmp_path / "plain.png"
    assert runner.invoke(app, [*args, "-o", str(plain)]).exit_code == 0
    with Image.open(plain) as image:
        plain_chroma = rgb_to_yuv(image_to_tensor(image.convert("RGB")).double())[:, 1:]
    assert float((plain_chroma - ref[:, 1:]).abs().mean()) > 5 * float(chroma_error.mean())
    hist = tmp_path / "hist.png"
    result = runner.invoke(app, [*args, "--preserve-color", "histogram", "-o", str(hist)])
    assert result.exit_code == 0, result.output
    with Image.open(hist) as a, Image.open(plain) as b:
        assert np.asarray(a).tolist() != np.asarray(b).tolist()
    assert read_metadata(hist)["config"]["preserve_color"] == "histogram"


def test_batch_over_a_folder_continues_past_a_bad_file(tmp_path, content_path, style_path):
    import shutil

    folder = tmp_path / "frames"
    folder.mkdir()
    shutil.copy(content_path, folder / "a.jpg")
    shutil.copy(content_path, folder / "c.jpg")
    (folder / "b.png").write_bytes(b"not an image at all")
    out_dir = tmp_path / "out"
    args = ["transfer", str(folder), str(style_path), "--size", "32", "-n", "2", "--seed", "1"]
    result = runner.invoke(app, [*args, "--out-dir", str(out_dir), "--json"])
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [Path(line["output"]).name for line in lines] == [
        "a_starry_night_classic.png",
        "c_starry_night_classic.png",
    ]
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "a_starry_night_classic.png",
        "c_starry_night_classic.png",
    ]
    assert "b.png" in result.stderr and "Traceback" not in result.stderr
    assert "1 of 3 content images failed" in result.stderr

    before = (out_dir / "a_starry_night_classic.png").read_bytes()
    (folder / "b.png").unlink()
    again = runner.invoke(app, [*args, "--out-dir", str(out_dir), "--skip-existing", "--json"])
    assert again.exit_code == 0, again.output
    assert all(json.loads(line)["skipped"] for line in again.stdout.strip().splitlines())
    assert (out_dir / "a_starry_night_classic.png").read_bytes() == before


def test_batch_from_a_quoted_glob(tmp_path, content_path, style_path):
    import shutil

    for name in ("x1.jpg", "x2.jpg", "y.jpg"):
        shutil.copy(content_path, tmp_path / name)
    out_dir = tmp_path / "out"
    args = ["transfer", str(tmp_path / "x*.jpg"), str(style_path), "--size", "32", "-n", "1"]
    result = runner.invoke(app, [*args, "--out-dir", str(out_dir), "-q"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "x1_starry_night_classic.png",
        "x2_starry_night_classic.png",
    ]
    with_o = runner.invoke(app, [*args, "-o", str(tmp_path / "one.png")])
    assert with_o.exit_code == 1 and "--out-dir" in error_line(with_o)


def test_scales_and_per_level_iterations_from_the_command_line(tmp_path, content_path, style_path):
    out = tmp_path / "levels.png"
    args = ["transfer", str(content_path), str(style_path), "--size", "64", "--seed", "0"]
    result = runner.invoke(app, [*args, "--scales", "2", "-n", "3,2", "--json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    record = read_metadata(out)["record"]
    assert [level["size"] for level in record["levels"]] == [[32, 22], [64, 43]]
    assert [level["iterations"] for level in record["levels"]] == [3, 2]
    # One number: that many at the first level, half as many at the next.
    result = runner.invoke(app, [*args, "--scales", "2", "-n", "4", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert [lv["iterations"] for lv in read_metadata(out)["record"]["levels"]] == [4, 2]
    # auto: one level at this size.
    result = runner.invoke(app, [*args, "--scales", "auto", "-n", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    record = read_metadata(out)["record"]
    assert "levels" not in record and record["iterations"] == 2
    for bad, message in (
        (["--scales", "two"], "--scales must be auto or a number"),
        (["--scales", "3", "-n", "3,2"], "2 iteration counts were given for 3 levels"),
        (["-n", "3,x"], "--iterations must be a whole number"),
    ):
        result = runner.invoke(app, [*args, *bad, "-o", str(out)])
        assert result.exit_code == 1 and message in error_line(result)


def test_bf16_precision_runs_and_is_recorded(tmp_path, content_path, style_path):
    out = tmp_path / "bf16.png"
    args = ["transfer", str(content_path), str(style_path), "--size", "48", "-n", "3"]
    result = runner.invoke(app, [*args, "--precision", "bf16", "--device", "cpu", "-o", str(out)])
    assert result.exit_code == 0, result.output
    meta = read_metadata(out)
    assert meta["config"]["precision"] == "bf16" and meta["record"]["precision"] == "bf16"
    losses = meta["record"]["final_losses"]
    assert losses["total"] < meta["record"]["initial_losses"]["total"]
