"""Bad input through the real command line: one line, exit code 1, nothing half-written."""

from __future__ import annotations

import contextlib
import io
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import error_line
from PIL import Image, ImageCms
from typer.testing import CliRunner

from neuralart.cli import app
from neuralart.images import read_metadata

runner = CliRunner()
RUN = ["--size", "32", "-n", "1", "--seed", "0"]


def _photo(size=(48, 40), mode="RGB"):
    image = Image.new("RGB", size)
    image.putdata(
        [
            ((x * 5) % 256, (y * 7) % 256, (x * y) % 256)
            for y in range(size[1])
            for x in range(size[0])
        ]
    )
    return image.convert(mode) if mode != "RGB" else image


def _write(path: Path, kind: str) -> Path:
    """Make an input file of the given kind at ``path`` (suffix chosen here)."""
    if kind == "missing":
        return path.with_suffix(".jpg")
    if kind == "directory":
        path.mkdir()
        return path
    if kind == "empty":
        path = path.with_suffix(".png")
        path.write_bytes(b"")
    elif kind == "text":
        path = path.with_suffix(".jpg")
        path.write_text("this is not a picture\n")
    elif kind in ("truncated-jpeg", "truncated-png"):
        fmt = "JPEG" if kind == "truncated-jpeg" else "PNG"
        buf = io.BytesIO()
        _photo((64, 64)).save(buf, fmt)
        path = path.with_suffix(".jpg" if fmt == "JPEG" else ".png")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif kind in ("one-pixel", "tiny"):
        path = path.with_suffix(".png")
        _photo((1, 1) if kind == "one-pixel" else (8, 8)).save(path)
    elif kind == "elongated":
        path = path.with_suffix(".png")
        _photo((2000, 20)).save(path)
    elif kind == "gif":
        path = path.with_suffix(".gif")
        frames = [
            _photo().convert("P"),
            _photo().transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("P"),
        ]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    elif kind in ("L", "LA", "RGBA", "P", "CMYK"):
        path = path.with_suffix(".jpg" if kind == "CMYK" else ".png")
        image = _photo()
        if kind in ("LA", "RGBA"):
            image = image.convert(kind)
            image.putalpha(128)
        else:
            image = image.convert(kind)
        image.save(path)
    elif kind == "16-bit":
        path = path.with_suffix(".png")
        Image.new("I;16", (48, 40), 40000).save(path)
    elif kind == "exif":
        path = path.with_suffix(".jpg")
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90° clockwise when shown
        _photo((64, 32)).save(path, exif=exif)
    elif kind == "icc":
        path = path.with_suffix(".png")
        profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        _photo().save(path, icc_profile=profile.tobytes())
    else:
        raise AssertionError(kind)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "not found"),
        ("directory", "folder|directory|no content images found"),  # a content folder is a batch
        ("empty", "empty"),
        ("text", "not an image|cannot identify|not a"),
        ("truncated-jpeg", "truncated|broken|damaged"),
        ("truncated-png", "truncated|broken|damaged"),
        ("one-pixel", "only 1x1 px"),
        ("tiny", "only 8x8 px"),
        ("elongated", "too small or elongated|short side would be"),
    ],
)
@pytest.mark.parametrize("role", ["content", "style"])
def test_bad_images_are_one_line_and_exit_1(
    tmp_path, content_path, style_path, kind, message, role
):
    bad = _write(tmp_path / "bad", kind)
    out = tmp_path / "out.png"
    pair = [str(bad), str(style_path)] if role == "content" else [str(content_path), str(bad)]
    result = runner.invoke(app, ["transfer", *pair, *RUN, "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert re.search(message, error_line(result), re.IGNORECASE)
    assert not out.exists()


def test_declared_size_above_the_pixel_limit_is_refused_and_the_limit_can_be_raised(
    tmp_path, style_path
):
    big = tmp_path / "big.png"
    _photo((200, 150)).save(big)
    out = tmp_path / "out.png"
    result = runner.invoke(
        app, ["transfer", str(big), str(style_path), *RUN, "--max-pixels", "1000", "-o", str(out)]
    )
    assert result.exit_code == 1 and "--max-pixels" in error_line(result)
    assert not out.exists()
    result = runner.invoke(
        app, ["transfer", str(big), str(style_path), *RUN, "--max-pixels", "300000", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("kind", "warning"),
    [
        ("gif", "first"),
        ("L", None),
        ("LA", "white"),
        ("RGBA", "white"),
        ("P", None),
        ("CMYK", None),
        ("16-bit", None),
        ("exif", None),
        ("icc", None),
    ],
)
def test_unusual_but_valid_images_are_accepted(tmp_path, style_path, kind, warning):
    image = _write(tmp_path / "in", kind)
    out = tmp_path / "out.png"
    result = runner.invoke(app, ["transfer", str(image), str(style_path), *RUN, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.stderr
    if warning:
        assert "warning:" in result.stderr and warning in result.stderr
    with Image.open(out) as written:
        assert written.mode == "RGB"
        if kind == "exif":  # 64x32 stored, shown rotated: portrait
            assert written.size == (16, 32)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "0"], "size must be a positive"),
        (["-n", "-1"], "--iterations must be a whole number of 0 or more"),
        (["--style-weight", "-1"], "style.weight must be a finite number >= 0"),
        (["--tv-weight", "-0.5"], "tv_weight must be a finite number >= 0"),
        (["--style-blend", "1,2"], "2 weights but there are 1 style images"),
        (["--preset", "clasic"], "did you mean 'classic'"),
        (["--device", "cuda"], "CUDA is not available"),
        (["--max-pixels", "0"], "max_pixels must be positive"),
        (["--weights", "nowhere.pth"], "weights file not found"),
    ],
)
def test_bad_options_are_one_line_and_exit_1(tmp_path, content_path, style_path, args, message):
    if "cuda" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    out = tmp_path / "out.png"
    result = runner.invoke(
        app,
        [
            "transfer",
            str(content_path),
            str(style_path),
            "--size",
            "32",
            "-n",
            "1",
            *args,
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 1, result.output
    assert message in error_line(result)
    assert not out.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("style: {weight: [1\n", "malformed preset"),
        ("styel:\n  weight: 3\n", "did you mean 'style'"),
        ("style:\n  weight: heavy\n", "style.weight must be a number"),
        ("style:\n  layers: [conv6_1]\n", "unknown layer 'conv6_1'"),
        ("content:\n  layers: [relu4_2]\n", "unknown layer 'relu4_2'"),
        ("optimizer:\n  iterations: -3\n", "iterations must be 0 or more"),
    ],
)
def test_bad_preset_files_are_one_line_and_exit_1(
    tmp_path, content_path, style_path, text, message
):
    preset = tmp_path / "mine.yaml"
    preset.write_text(text)
    out = tmp_path / "out.png"
    result = runner.invoke(
        app, ["transfer", str(content_path), str(style_path), "-p", str(preset), "-o", str(out)]
    )
    assert result.exit_code == 1 and message in error_line(result)
    assert not out.exists()


def test_output_paths(tmp_path, content_path, style_path):
    base = ["transfer", str(content_path), str(style_path), *RUN]
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "out.gifx")])
    assert result.exit_code == 1 and ".gifx" in error_line(result)
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    result = runner.invoke(app, [*base, "-o", str(a_file / "out.png")])
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    nested = tmp_path / "new" / "deeper" / "out.png"
    assert runner.invoke(app, [*base, "-o", str(nested)]).exit_code == 0
    assert nested.is_file()  # missing folders are created


def test_non_finite_loss_stops_and_saves_the_last_finite_picture(
    tmp_path, content_path, style_path
):
    out = tmp_path / "out.png"
    args = [
        "transfer",
        str(content_path),
        str(style_path),
        *RUN,
        "--style-weight",
        "1e39",
        "-o",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "inf" in result.stderr
    assert out.is_file() and read_metadata(out)["record"]["stopped"]


_SLOW_WRITER = """
import sys

import numpy as np
from PIL import Image

from neuralart.images import save_image

# Noise does not compress: about 36 MB of PNG, written over a second or more.
pixels = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
print("writing", flush=True)
save_image(Image.fromarray(pixels), sys.argv[1])
print("written", flush=True)
"""


def test_killing_the_process_while_it_writes_never_damages_the_existing_output(tmp_path):
    """SIGKILL in the middle of save_image's write: the old file is untouched, and the
    only thing left behind is the hidden temporary file that was being written."""
    out = tmp_path / "keep.png"
    _photo().save(out)
    before = out.read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
        deadline = time.monotonic() + 60
        sizes: list[int] = []
        while len(sizes) < 2 or not 0 < sizes[-2] < sizes[-1]:  # seen growing
            if proc.poll() is not None:
                assert proc.stderr is not None
                pytest.fail(f"the write ended before the kill: {proc.stderr.read()}")
            assert time.monotonic() < deadline, "no temporary file was seen growing"
            for part in tmp_path.glob(".keep.png.*.part"):
                with contextlib.suppress(FileNotFoundError):  # renamed since the glob
                    sizes.append(part.stat().st_size)
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert out.read_bytes() == before
    left = sorted(p.name for p in tmp_path.iterdir() if p != out)
    assert len(left) == 1 and re.fullmatch(r"\.keep\.png\..+\.part", left[0]), left


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
        ),
        MemoryError(),
    ],
)
def test_out_of_memory_is_one_line_with_a_suggestion(
    tmp_path, content_path, style_path, monkeypatch, exc
):
    import neuralart.transfer

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(neuralart.transfer, "transfer", fail)
    out = tmp_path / "out.png"
    result = runner.invoke(app, ["transfer", str(content_path), str(style_path), "-o", str(out)])
    assert result.exit_code == 1
    line = error_line(result)
    assert "out of memory" in line and "--size" in line and "--levels" in line
    assert not out.exists()


def test_other_runtime_errors_are_not_disguised_as_memory_errors(
    content_path, style_path, monkeypatch
):
    import neuralart.transfer

    def fail(*args, **kwargs):
        raise RuntimeError("a genuine bug")

    monkeypatch.setattr(neuralart.transfer, "transfer", fail)
    result = runner.invoke(app, ["transfer", str(content_path), str(style_path)])
    assert result.exit_code != 0 and isinstance(result.exception, RuntimeError)
