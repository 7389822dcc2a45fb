"""The command line, through Typer's CliRunner and as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import EXAMPLES as REPO_EXAMPLES
from conftest import error_line
from typer.main import get_command
from typer.testing import CliRunner

import neuralart
from neuralart.cli import app, commands
from neuralart.cli.commands import HELP_DEFAULTS, PANELS
from neuralart.cli.output import reported_warnings
from neuralart.config import AUTO_LEVEL_EDGE, Config, OptimizerConfig
from neuralart.errors import NeuralartWarning
from neuralart.images import read_metadata
from neuralart.presets import bundled_names, preset_text, resolve

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


def test_compare_saves_the_finished_presets_on_ctrl_c(
    tmp_path, monkeypatch, content_path, style_path
):
    """Ctrl-C while the third preset starts: the sheet of the two finished ones is written,
    marked partial, and the command exits 130."""
    import neuralart.batch

    real = neuralart.batch.transfer
    calls = []

    def third_interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(neuralart.batch, "transfer", third_interrupted)
    out = tmp_path / "grid.png"
    presets = "classic,classic-shifted,chain"
    args = ["compare", str(content_path), str(style_path), "--presets", presets]
    result = runner.invoke(app, [*args, "--size", "40", "-n", "2", "-o", str(out)])
    assert result.exit_code == 130, result.output
    assert "2 of 3 presets" in result.stderr
    meta = read_metadata(out)
    assert meta["partial"] is True and set(meta["presets"]) == {"classic", "classic-shifted"}


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
    # Levels chosen on the command line are kept as asked (the preset's may be fitted).
    args = ["transfer", str(content_path), str(style_path), "-p", "cnn-mrf", "--size", "64"]
    result = runner.invoke(app, [*args, "--levels", "3", "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "fewer --levels" in error_line(result)


def test_cnn_mrf_at_96_px_runs_with_its_levels_fitted(content_path, style_path, tmp_path):
    out = tmp_path / "mrf.png"
    args = ["transfer", str(content_path), str(style_path), "-p", "cnn-mrf", "--size", "96"]
    result = runner.invoke(app, [*args, "-n", "2", "--seed", "0", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 coarsest dropped" in result.stderr
    levels = read_metadata(out)["record"]["levels"]
    assert [level["size"] for level in levels] == [[48, 32], [96, 64]]


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


def test_levels_and_per_level_iterations_from_the_command_line(tmp_path, content_path, style_path):
    out = tmp_path / "levels.png"
    args = ["transfer", str(content_path), str(style_path), "--size", "64", "--seed", "0"]
    result = runner.invoke(app, [*args, "--levels", "2", "-n", "3,2", "--json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    record = read_metadata(out)["record"]
    assert [level["size"] for level in record["levels"]] == [[32, 22], [64, 43]]
    assert [level["iterations"] for level in record["levels"]] == [3, 2]
    # One number: that many at the first level, half as many at the next.
    result = runner.invoke(app, [*args, "--levels", "2", "-n", "4", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert [lv["iterations"] for lv in read_metadata(out)["record"]["levels"]] == [4, 2]
    # auto: one level at this size.
    result = runner.invoke(app, [*args, "--levels", "auto", "-n", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    record = read_metadata(out)["record"]
    assert "levels" not in record and record["iterations"] == 2
    for bad, message in (
        (["--levels", "two"], "--levels must be auto or a number"),
        (["--levels", "3", "-n", "3,2"], "2 iteration counts were given for 3 levels"),
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


# ---------------------------------------------------------------------------- help


def _help_text(command: str) -> str:
    """The command's help on a wide terminal, box drawing removed, one line of words."""
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return " ".join(result.stdout.replace("│", " ").split())


def _options(command: str):
    params = get_command(app).commands[command].params  # type: ignore[attr-defined]
    return [p for p in params if p.param_type_name == "option"]


UNGROUPED = {"--preset", "--presets", "--quiet", "--json", "--help"}
NO_DEFAULT = {"--help", "--quiet", "--json"}  # plain switches


@pytest.mark.parametrize("command", ["transfer", "texture", "compare"])
def test_help_groups_the_options_and_states_every_default(command):
    raw = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).stdout
    text = _help_text(command)
    options = [p for p in _options(command) if not p.hidden]
    used = []
    for option in options:
        name = option.opts[0]
        if name in UNGROUPED:
            assert option.rich_help_panel is None, name
        else:
            assert option.rich_help_panel in PANELS, name
            used.append(option.rich_help_panel)
        if name not in NO_DEFAULT:
            assert "[default:" in (option.help or "") or option.default is not None, name
    for panel in set(used):
        assert f"─ {panel} ─" in raw
    if command == "transfer":
        assert set(used) == set(PANELS)
    assert text.count("[default:") >= len(options) - len(NO_DEFAULT)
    assert not re.search(r"\s\.(\s|$)", text), "a dangling ' .'"
    assert "[default: ]" not in text and "\\[" not in text
    for old in ("--scales", "--mrf-rotations", "--mrf-scales"):
        assert old not in text  # hidden aliases
    if command != "compare":
        assert "--levels" in text and "--mrf-rotated-copies" in text


def test_help_defaults_come_from_config_and_agree_with_the_bundled_presets():
    # built-in: no bundled preset sets the key; preset: all do; either: some do.
    provenances = [resolve(name)[1] for name in bundled_names()]
    assert {"size", "optimizer.iterations", "style.weight", "device", "seed"} <= set(HELP_DEFAULTS)
    for key, source in HELP_DEFAULTS.items():
        set_there = [provenance[key].startswith("preset:") for provenance in provenances]
        expected = "preset" if all(set_there) else "either" if any(set_there) else "built-in"
        assert source == expected, key
    text = _help_text("transfer")
    assert (
        f"Long edge of the output in pixels. [default: the preset's, else {Config().size}]" in text
    )
    assert f"[default: the preset's, else {OptimizerConfig().iterations}]" in text
    assert f"at most {AUTO_LEVEL_EDGE} px" in text
    assert f"Refuse input images above this many pixels. [default: {Config().max_pixels}]" in text
    assert f"[default: {Config().device}]" in text
    assert "Weight of the style loss. [default: the preset's]" in text
    assert f"Output size: N (square) or WxH. [default: the preset's, else {Config().size}]" in (
        _help_text("texture")
    )


def test_old_flag_names_still_work_with_one_warning_each(
    monkeypatch, tmp_path, content_path, style_path
):
    runs = []
    monkeypatch.setattr(commands, "run_and_save", lambda *args, **kwargs: runs.append(args[2]))
    args = ["transfer", str(content_path), str(style_path), "-p", "cnn-mrf", "-n", "4"]
    old = runner.invoke(app, [*args, "--scales", "2", "--mrf-rotations", "1", "--mrf-scales", "2"])
    assert old.exit_code == 0, old.output
    config = runs[-1]
    assert config.optimizer.levels == 2
    assert (config.style.rotated_copies, config.style.scaled_copies) == (1, 2)
    assert old.stderr.splitlines() == [
        f"warning: {a} is now called {b}; the old name goes in the next release"
        for a, b in (
            ("--scales", "--levels"),
            ("--mrf-rotations", "--mrf-rotated-copies"),
            ("--mrf-scales", "--mrf-scaled-copies"),
        )
    ]
    new = runner.invoke(
        app, [*args, "--levels", "2", "--mrf-rotated-copies", "1", "--mrf-scaled-copies", "2"]
    )
    assert new.exit_code == 0 and new.stderr == "" and runs[-1] == config
    quiet = runner.invoke(app, [*args, "--scales", "2", "-q"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    both = runner.invoke(app, [*args, "--scales", "2", "--levels", "3"])
    assert both.exit_code == 1 and "give only --levels" in error_line(both)
    texture = runner.invoke(app, ["texture", str(style_path), "--scales", "3"])
    assert texture.exit_code == 0 and runs[-1].optimizer.levels == 3
    assert texture.stderr.count("--scales is now called --levels") == 1


# ------------------------------------------------------------------------- presets


def test_presets_show_prints_the_resolved_preset(tmp_path):
    result = runner.invoke(app, ["presets", "show", "chain-blurred"])
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.startswith("# chain-blurred")
    assert "extends chain, which extends classic-shifted, which extends classic" in first
    data = yaml.safe_load(result.stdout)
    assert (
        data["style"]["blur"] is True and data["style"]["pairs"] == "chain"
    )  # its own, its parent's
    assert data["style"]["shift"] == -1 and data["content"]["weight"] == 1  # from further up
    assert data["network"]["pooling"] == Config().network.pooling  # a built-in default
    copy = tmp_path / "copy.yaml"  # what it prints is a preset that resolves the same
    copy.write_text(result.stdout)
    assert resolve(str(copy))[0] == resolve("chain-blurred")[0]
    classic = runner.invoke(app, ["presets", "show", "classic"])
    assert "extends no preset" in classic.stdout.splitlines()[0]


def test_presets_show_raw_prints_the_file_as_written():
    result = runner.invoke(app, ["presets", "show", "--raw", "chain-blurred"])
    assert result.exit_code == 0
    assert result.stdout == preset_text("chain-blurred")
    assert "extends: chain" in result.stdout and "pooling" not in result.stdout


def test_presets_show_a_file_that_extends_another(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("extends: chain\nstyle:\n  weight: 42\n")
    mine = tmp_path / "sub" / "mine.yaml"
    mine.parent.mkdir()
    mine.write_text("extends: ../base.yaml\nsize: 99\n")
    result = runner.invoke(app, ["presets", "show", str(mine)])
    assert result.exit_code == 0, result.output
    assert f"extends {base}, which extends chain, which extends" in result.stdout.splitlines()[0]
    data = yaml.safe_load(result.stdout)
    assert (data["name"], data["size"], data["style"]["weight"]) == ("mine", 99, 42)
    assert data["description"] == ""  # not the parent's
    cycle = tmp_path / "cycle.yaml"
    cycle.write_text("extends: cycle.yaml\n")
    result = runner.invoke(app, ["presets", "show", str(cycle)])
    assert result.exit_code == 1 and "cycle" in error_line(result)


def test_presets_list_marks_the_experimental_ones():
    result = runner.invoke(app, ["presets", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "masked-gradients (experimental)" in result.stdout
    assert "gram-cubes (experimental)" in result.stdout
    assert "chain-blurred (experimental)" not in result.stdout
    assert "chain-blurred" in result.stdout


# ------------------------------------------------------------------------ warnings

PACKAGE = Path(neuralart.__file__).resolve().parent


def _code_at(path: Path, source: str) -> dict:
    """Functions compiled as if they were written in the file ``path``."""
    namespace: dict = {"__name__": path.stem}
    exec(compile(source, str(path), "exec"), namespace)
    return namespace


def test_every_warning_neuralarts_code_emits_is_shown_once(capsys):
    own = _code_at(
        PACKAGE / "some_module.py",
        "import warnings\n"
        "def run():\n"
        "    for _ in range(3):\n"
        "        warnings.warn('tiles overlap', UserWarning)\n"
        "    warnings.warn('a runtime note', RuntimeWarning, stacklevel=2)\n",
    )
    with reported_warnings(quiet=False):
        own["run"]()
        warnings.warn("from anywhere, but the tool's own kind", NeuralartWarning, stacklevel=1)
        warnings.warn("from anywhere, but the tool's own kind", NeuralartWarning, stacklevel=1)
    assert capsys.readouterr().err.splitlines() == [
        "warning: tiles overlap",
        "warning: a runtime note",
        "warning: from anywhere, but the tool's own kind",
    ]
    with reported_warnings(quiet=True):
        own["run"]()
    assert capsys.readouterr().err == ""


def test_other_libraries_warnings_stay_hidden(tmp_path, capsys):
    library = _code_at(
        tmp_path / "site-packages" / "somelib.py",
        "import warnings\n"
        "def old_api():\n"
        "    warnings.warn('old_api is deprecated', UserWarning, stacklevel=2)\n"
        "def noisy():\n"
        "    warnings.warn('noise', FutureWarning)\n",
    )
    # neuralart's code calls the library; the first warning points at neuralart's line.
    caller = _code_at(
        PACKAGE / "calls_a_library.py", "def run(lib):\n    lib['old_api']()\n    lib['noisy']()\n"
    )
    with reported_warnings(quiet=False), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        caller["run"](library)
    with reported_warnings(quiet=False):
        caller["run"](library)
        warnings.warn("not the tool's", DeprecationWarning, stacklevel=1)
    assert capsys.readouterr().err == ""
    assert seen[0].filename == str(PACKAGE / "calls_a_library.py")  # the case that matters


def test_a_warning_while_resolving_a_preset_reaches_the_terminal_once(
    monkeypatch, tmp_path, content_path, style_path
):
    old = tmp_path / "old.yaml"
    old.write_text("style:\n  scale: 0.5\n")
    line = f"warning: {old}: style.scale is now called style.image_scale"
    result = runner.invoke(app, ["presets", "show", str(old)])
    assert result.exit_code == 0 and "image_scale: 0.5" in result.stdout
    assert [x for x in result.stderr.splitlines()] == [
        f"{line}; the old name goes in the next release"
    ]
    monkeypatch.setattr(commands, "run_and_save", lambda *args, **kwargs: None)
    result = runner.invoke(app, ["transfer", str(content_path), str(style_path), "-p", str(old)])
    assert result.exit_code == 0 and result.stderr.startswith(line)
    assert len(result.stderr.splitlines()) == 1


def test_sixteen_bit_print_output_from_the_command_line(tmp_path, content_path, style_path):
    import png
    from PIL import Image

    out = tmp_path / "print.png"
    base = ["transfer", str(content_path), str(style_path), "--size", "40", "-n", "2"]
    result = runner.invoke(
        app, [*base, "--seed", "1", "--bit-depth", "16", "--dpi", "300", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    width, height, rows, info = png.Reader(filename=str(out)).read()
    assert info["bitdepth"] == 16 and max(width, height) == 40
    wide = np.vstack([np.asarray(row, dtype=np.int64) for row in rows])
    assert np.any(wide % 257 != 0)  # levels between the 8-bit ones
    eight = tmp_path / "eight.png"
    result = runner.invoke(app, [*base, "--seed", "1", "-o", str(eight)])
    assert result.exit_code == 0, result.output
    with Image.open(eight) as img:
        reference = np.asarray(img, dtype=np.int64).reshape(height, -1)
    # The same picture: its 16-bit levels round to the 8-bit file's within one level.
    assert np.abs(np.rint(wide / 257) - reference).max() <= 1
    assert read_metadata(out)["seed"] == 1
    refused = runner.invoke(app, [*base, "--bit-depth", "16", "-o", str(tmp_path / "x.jpg")])
    assert refused.exit_code == 1 and ".png or .tif" in error_line(refused)
    assert not (tmp_path / "x.jpg").exists()
