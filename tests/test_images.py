"""Tests for neuralart.images: loading, converting, resizing, tensors and atomic saving."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, ImageFile

from neuralart import images
from neuralart.errors import NeuralartError, NeuralartWarning
from neuralart.images import (
    MIN_EDGE,
    check_output_path,
    image_to_tensor,
    load_image,
    read_metadata,
    resize_long_edge,
    resize_to,
    save_image,
    tensor_to_image,
)

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def gradient(width: int = 8, height: int = 6) -> Image.Image:
    """A small RGB image whose pixels all differ, so geometry and values can be checked."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 30 % 256, y * 40 % 256, (x + y) * 7 % 256], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def write(path: Path, img: Image.Image, fmt: str | None = None, **options: object) -> Path:
    img.save(path, format=fmt, **options)
    return path


def load_quietly(path: Path, **kwargs: object) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NeuralartWarning)
        return load_image(path, **kwargs)


def assert_no_warning(path: Path) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", NeuralartWarning)
        return load_image(path)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares its size but has no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


# --- load_image: errors ------------------------------------------------------------------


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nope.png"


def _directory(tmp_path: Path) -> Path:
    (tmp_path / "d.png").mkdir()
    return tmp_path / "d.png"


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "e.png").write_bytes(b"")
    return tmp_path / "e.png"


def _text(tmp_path: Path) -> Path:
    (tmp_path / "notes.jpg").write_text("this is not an image\n" * 20)
    return tmp_path / "notes.jpg"


def _truncated_jpeg(tmp_path: Path) -> Path:
    data = encode(gradient(64, 64), "JPEG", quality=90)
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    return tmp_path / "cut.jpg"


def _truncated_png(tmp_path: Path) -> Path:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "PNG")
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    return tmp_path / "cut.png"


def _huge_header(tmp_path: Path) -> Path:
    (tmp_path / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    return tmp_path / "bomb.png"


def _short_header(tmp_path: Path) -> Path:
    """Pillow raises ValueError, not OSError, for this one."""
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", b"\0\0\0\x05\0") + png_chunk(b"IEND", b"")
    (tmp_path / "h.png").write_bytes(data)
    return tmp_path / "h.png"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_missing, "not found"),
        (_directory, "folder"),
        (_empty, "empty"),
        (_text, "not an image"),
        (_truncated_jpeg, "truncated"),
        (_truncated_png, "truncated"),
        (_huge_header, "--max-pixels"),
        (_short_header, "damaged"),
    ],
)
def test_load_errors_are_one_line_neuralart_errors(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(NeuralartError) as info:
        load_image(path, role="style image")
    message = str(info.value)
    assert str(path) in message
    assert expected in message
    assert "style image" in message
    assert "\n" not in message


def test_truncated_image_refused_even_if_pillow_was_told_to_accept_them(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(NeuralartError, match="truncated"):
        load_image(_truncated_jpeg(tmp_path))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the global setting is restored


def test_max_pixels_checked_from_header_before_decoding(tmp_path, monkeypatch):
    path = write(tmp_path / "small.png", gradient(10, 10))
    decoded: list[object] = []
    original_load = ImageFile.ImageFile.load

    def spy_load(self):
        decoded.append(self)
        return original_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy_load)
    with pytest.raises(NeuralartError, match="--max-pixels") as info:
        load_image(path, max_pixels=99)
    assert str(path) in str(info.value)
    assert decoded == []
    assert load_image(path, max_pixels=100).size == (10, 10)
    assert Image.MAX_IMAGE_PIXELS != 99  # Pillow's global limit is restored


def test_pillow_decompression_bomb_error_is_converted(tmp_path, monkeypatch):
    path = write(tmp_path / "small.png", gradient())

    def bomb(*args, **kwargs):
        raise Image.DecompressionBombError("too many pixels")

    monkeypatch.setattr(Image, "open", bomb)
    with pytest.raises(NeuralartError, match="--max-pixels"):
        load_image(path)


def test_permission_denied_is_a_neuralart_error(tmp_path, monkeypatch):
    path = write(tmp_path / "secret.png", gradient())
    real_open = Path.open

    def deny(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    with pytest.raises(NeuralartError, match="permission denied") as info:
        load_image(path)
    assert str(path) in str(info.value)


@pytest.mark.skipif(IS_ROOT or os.name == "nt", reason="root can read any file")
def test_unreadable_file_with_real_permissions(tmp_path):
    path = write(tmp_path / "secret.png", gradient())
    path.chmod(0)
    try:
        with pytest.raises(NeuralartError, match="permission denied"):
            load_image(path)
    finally:
        path.chmod(0o644)


# --- load_image: conversions -------------------------------------------------------------


def test_rgb_png_loads_exactly_without_warning(tmp_path):
    original = gradient()
    img = assert_no_warning(write(tmp_path / "a.png", original))
    assert img.mode == "RGB"
    assert np.array_equal(np.asarray(img), np.asarray(original))


def test_grayscale_value_becomes_equal_rgb(tmp_path):
    gray = Image.fromarray(np.array([[0, 1, 77, 128, 254, 255]], dtype=np.uint8))
    img = assert_no_warning(write(tmp_path / "g.png", gray))
    assert img.mode == "RGB"
    assert [img.getpixel((i, 0)) for i in range(6)] == [
        (v, v, v) for v in (0, 1, 77, 128, 254, 255)
    ]


def test_one_bit_image(tmp_path):
    bits = Image.new("1", (2, 1))
    bits.putpixel((1, 0), 1)
    img = assert_no_warning(write(tmp_path / "b.png", bits))
    assert (img.mode, img.getpixel((0, 0)), img.getpixel((1, 0))) == (
        "RGB",
        (0, 0, 0),
        (255, 255, 255),
    )


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_values_are_scaled_not_clipped(tmp_path, fmt):
    values = np.array([[0, 257, 32896, 65535, 1000]], dtype=np.uint16)
    path = write(tmp_path / f"deep.{fmt.lower()}", Image.fromarray(values), fmt)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
    img = assert_no_warning(path)
    assert img.mode == "RGB"
    assert [img.getpixel((i, 0))[0] for i in range(5)] == [0, 1, 128, 255, 4]
    assert img.getpixel((2, 0)) == (128, 128, 128)


def test_big_endian_sixteen_bit_and_32_bit_int_modes():
    raw = np.array([[0, 32896, 65535]], dtype=">u2").tobytes()
    for img in (
        Image.frombytes("I;16B", (3, 1), raw),
        Image.frombytes("I;16B", (3, 1), raw).convert("I"),
    ):
        out = images._to_rgb(img, None, [])
        assert [out.getpixel((i, 0)) for i in range(3)] == [(0,) * 3, (128,) * 3, (255,) * 3]


def test_float_image_is_clipped(tmp_path):
    values = np.array([[-20.0, 0.4, 99.6, 255.0, 1000.0]], dtype=np.float32)
    img = assert_no_warning(write(tmp_path / "f.tiff", Image.fromarray(values, "F")))
    assert [img.getpixel((i, 0))[0] for i in range(5)] == [0, 0, 100, 255, 255]


def test_palette_without_transparency(tmp_path):
    pal = gradient().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    img = assert_no_warning(write(tmp_path / "p.png", pal))
    assert np.array_equal(np.asarray(img), np.asarray(pal.convert("RGB")))


def test_palette_with_transparency_goes_on_white(tmp_path):
    pal = Image.new("P", (2, 1))
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.putpixel((1, 0), 1)
    path = write(tmp_path / "t.png", pal, transparency=0)
    with pytest.warns(NeuralartWarning, match="white"):
        img = load_image(path)
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((1, 0)) == (200, 100, 50)


def test_rgba_composited_on_white_with_warning(tmp_path):
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(10, 20, 30, 0), (10, 20, 30, 255), (0, 0, 0, 128)])
    with pytest.warns(NeuralartWarning, match="transparen"):
        img = load_image(write(tmp_path / "a.png", rgba))
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((1, 0)) == (10, 20, 30)
    assert all(126 <= c <= 128 for c in img.getpixel((2, 0)))


def test_opaque_rgba_gives_no_warning(tmp_path):
    img = assert_no_warning(write(tmp_path / "o.png", gradient().convert("RGBA")))
    assert np.array_equal(np.asarray(img), np.asarray(gradient()))


def test_gray_with_alpha(tmp_path):
    la = Image.new("LA", (2, 1))
    la.putdata([(40, 0), (40, 255)])
    with pytest.warns(NeuralartWarning):
        img = load_image(write(tmp_path / "la.png", la))
    assert (img.getpixel((0, 0)), img.getpixel((1, 0))) == ((255, 255, 255), (40, 40, 40))


def test_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (16, 16), (0, 0, 0, 0))
    cmyk.paste((0, 255, 255, 0), (8, 0, 16, 16))
    img = assert_no_warning(write(tmp_path / "c.jpg", cmyk, quality=100))
    assert img.mode == "RGB"
    assert all(c >= 250 for c in img.getpixel((2, 8)))
    red = img.getpixel((13, 8))
    assert red[0] >= 245 and red[1] <= 10 and red[2] <= 10


def test_exif_orientation_is_applied(tmp_path):
    stored = Image.new("RGB", (4, 2), (0, 0, 255))
    stored.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img = assert_no_warning(write(tmp_path / "rot.png", stored, exif=exif.tobytes()))
    assert img.size == (2, 4)
    assert img.getpixel((1, 0)) == (255, 0, 0)  # the top-left corner moved to the top right
    assert img.getpixel((0, 0)) == (0, 0, 255)


@pytest.mark.parametrize("suffix", [".gif", ".png", ".webp"])
def test_animation_gives_first_frame_and_warning(tmp_path, suffix):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / f"anim{suffix}"
    options = {"lossless": True} if suffix == ".webp" else {}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, **options)
    with pytest.warns(NeuralartWarning, match="2 frames"):
        img = load_image(path)
    assert img.mode == "RGB"
    assert img.getpixel((4, 4)) == (255, 0, 0)


def _srgb_bytes() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _swapped_primaries_profile() -> bytes:
    """sRGB with the red and green colorant tags exchanged: a valid non-sRGB RGB profile."""
    data = bytearray(_srgb_bytes())
    (count,) = struct.unpack(">I", data[128:132])
    entries = {}
    for i in range(count):
        start = 132 + 12 * i
        entries[bytes(data[start : start + 4])] = start
    red, green = entries[b"rXYZ"], entries[b"gXYZ"]
    data[red + 4 : red + 12], data[green + 4 : green + 12] = (
        data[green + 4 : green + 12],
        data[red + 4 : red + 12],
    )
    return bytes(data)


def test_embedded_srgb_profile_keeps_pixels(tmp_path):
    original = gradient()
    img = assert_no_warning(write(tmp_path / "s.png", original, icc_profile=_srgb_bytes()))
    difference = np.abs(np.asarray(img, dtype=int) - np.asarray(original, dtype=int))
    assert difference.max() <= 2


def test_non_srgb_profile_is_converted(tmp_path):
    red = Image.new("RGB", (4, 4), (200, 0, 0))
    path = write(tmp_path / "swapped.png", red, icc_profile=_swapped_primaries_profile())
    r, g, b = assert_no_warning(path).getpixel((1, 1))
    assert r <= 5 and 195 <= g <= 205 and b <= 5  # its "red" is sRGB green


def test_icc_with_alpha_keeps_alpha(tmp_path):
    rgba = Image.new("RGBA", (2, 1), (200, 0, 0, 255))
    rgba.putpixel((0, 0), (200, 0, 0, 0))
    path = write(tmp_path / "sa.png", rgba, icc_profile=_swapped_primaries_profile())
    img = load_quietly(path)
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((1, 0))[1] >= 195


def test_broken_profile_keeps_pixels_and_warns(tmp_path):
    original = gradient()
    path = write(tmp_path / "bad.png", original, icc_profile=b"definitely not a profile")
    with pytest.warns(NeuralartWarning, match="profile"):
        img = load_image(path)
    assert np.array_equal(np.asarray(img), np.asarray(original))


# --- resizing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "edge", "expected"),
    [
        ((400, 300), 64, (64, 48)),
        ((300, 400), 64, (48, 64)),
        ((100, 100), 50, (50, 50)),
        ((30, 20), 90, (90, 60)),
        ((333, 100), 100, (100, 30)),
        ((200, 101), 100, (100, 51)),  # 50.5 rounds up
    ],
)
def test_resize_long_edge_geometry(size, edge, expected):
    assert resize_long_edge(Image.new("RGB", size), edge).size == expected


def test_resize_long_edge_returns_same_image_when_size_matches():
    img = Image.new("RGB", (64, 48))
    assert resize_long_edge(img, 64) is img


def test_resize_long_edge_refuses_too_elongated_images():
    with pytest.raises(NeuralartError, match=str(MIN_EDGE)) as info:
        resize_long_edge(Image.new("RGB", (1000, 100)), 128)
    assert "160" in str(info.value)  # the size that would work
    assert resize_long_edge(Image.new("RGB", (1000, 100)), 160).size == (160, 16)


@pytest.mark.parametrize("edge", [0, -5])
def test_resize_long_edge_refuses_non_positive_size(edge):
    with pytest.raises(NeuralartError):
        resize_long_edge(Image.new("RGB", (40, 40)), edge)


def test_resize_filters(monkeypatch):
    used = []
    real_resize = Image.Image.resize

    def spy(self, size, resample=None, *args, **kwargs):
        used.append(resample)
        return real_resize(self, size, resample, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    resize_long_edge(Image.new("RGB", (400, 300)), 64)
    resize_long_edge(Image.new("RGB", (40, 30)), 64)
    assert resize_to(Image.new("RGB", (40, 30)), (20, 60)).size == (20, 60)
    assert used == [Image.Resampling.LANCZOS, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS]
    with pytest.raises(NeuralartError):
        resize_to(Image.new("RGB", (4, 4)), (0, 4))


# --- tensors ------------------------------------------------------------------------------


def test_tensor_round_trip_is_exact():
    noise = np.random.default_rng(1).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    tensor = image_to_tensor(Image.fromarray(noise))
    assert tensor.shape == (1, 3, 7, 5) and tensor.dtype == torch.float32
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0
    assert torch.allclose(
        tensor[0, :, 2, 3], torch.tensor(noise[2, 3] / 255.0, dtype=torch.float32)
    )
    back = tensor_to_image(tensor)
    assert back.mode == "RGB" and back.size == (5, 7)
    assert np.array_equal(np.asarray(back), noise)
    assert np.array_equal(np.asarray(tensor_to_image(tensor[0])), noise)


def test_tensor_to_image_rounds_and_clamps():
    values = [0.5 / 255 + 1e-4, 0.5 / 255 - 1e-4, 254.6 / 255, -3.0, 7.0, float("nan")]
    t = torch.tensor(values).reshape(1, 1, 6).expand(3, 1, 6).clone().requires_grad_(True)
    img = tensor_to_image(t * 1.0)
    assert [img.getpixel((i, 0))[0] for i in range(6)] == [1, 0, 255, 0, 255, 0]


def test_tensor_to_image_rejects_wrong_shape():
    with pytest.raises(ValueError):
        tensor_to_image(torch.zeros(1, 4, 2, 2))


# --- output paths and saving ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["out.gif", "out", "out.png.txt"])
def test_unknown_extension_is_refused(tmp_path, name):
    with pytest.raises(NeuralartError, match=r"\.png") as info:
        check_output_path(tmp_path / name)
    assert str(tmp_path / name) in str(info.value)


def test_output_path_problems(tmp_path, monkeypatch):
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(NeuralartError, match="folder"):
        check_output_path(tmp_path / "dir.png")
    with pytest.raises(NeuralartError, match="not a folder"):
        check_output_path(tmp_path / "file" / "out.png")
    with pytest.raises(NeuralartError, match="not a folder"):
        check_output_path(tmp_path / "file" / "deeper" / "out.png")
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    with pytest.raises(NeuralartError, match="not writable"):
        check_output_path(tmp_path / "out.png")


def test_upper_case_suffix_and_missing_folders_are_fine(tmp_path):
    assert check_output_path(tmp_path / "new" / "x.JPG") == tmp_path / "new" / "x.JPG"
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_save_creates_missing_folders(tmp_path):
    target = tmp_path / "a" / "b" / "out.png"
    assert save_image(gradient(), target) == target
    assert np.array_equal(np.asarray(load_image(target)), np.asarray(gradient()))
    assert [p.name for p in target.parent.iterdir()] == ["out.png"]


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"])
def test_save_every_format(tmp_path, suffix):
    target = save_image(gradient(32, 24).convert("RGBA"), tmp_path / f"out{suffix}")
    with Image.open(target) as img:
        assert img.format == images._FORMATS[suffix] and img.size == (32, 24)


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_saved_file_respects_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        target = save_image(gradient(), tmp_path / "out.png")
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tiff"])
def test_metadata_round_trip(tmp_path, suffix):
    metadata = {"style": "starry night.jpg", "weights": [1.0, 2.5], "seed": 7, "note": "ünïcode"}
    target = save_image(gradient(), tmp_path / f"m{suffix}", metadata=metadata)
    assert read_metadata(target) == metadata


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".bmp"])
def test_metadata_absent(tmp_path, suffix):
    assert read_metadata(save_image(gradient(), tmp_path / f"plain{suffix}")) is None


def test_metadata_of_foreign_jpeg_comment_is_ignored(tmp_path):
    path = write(tmp_path / "c.jpg", gradient(), comment=b"made by a camera")
    assert read_metadata(path) is None
    with pytest.raises(NeuralartError):
        read_metadata(tmp_path / "missing.png")


def _failing_save(error: BaseException):
    def save(self, fp, *args, **kwargs):
        fp.write(b"half an image")
        raise error

    return save


@pytest.mark.parametrize(
    ("error", "expected"),
    [(OSError(28, "No space left on device"), NeuralartError), (RuntimeError("bug"), RuntimeError)],
)
def test_failed_save_leaves_existing_file_untouched(tmp_path, monkeypatch, error, expected):
    target = tmp_path / "out.png"
    target.write_bytes(b"the previous result")
    monkeypatch.setattr(Image.Image, "save", _failing_save(error))
    with pytest.raises(expected) as info:
        save_image(gradient(), target, metadata={"a": 1})
    if expected is NeuralartError:
        assert str(target) in str(info.value) and "\n" not in str(info.value)
    assert target.read_bytes() == b"the previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_save_replaces_existing_file(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    save_image(gradient(), target)
    assert np.array_equal(np.asarray(load_image(target)), np.asarray(gradient()))


# --- fuzzing ------------------------------------------------------------------------------

SAMPLES = {
    "png": encode(gradient(12, 10), "PNG"),
    "jpeg": encode(gradient(12, 10), "JPEG", quality=80),
}


@st.composite
def mutations(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(0, 6))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def _fuzz(kind: str):
    @settings(
        max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(data=mutations(SAMPLES[kind]))
    def test(tmp_path: Path, data: bytes) -> None:
        _load_fuzzed(tmp_path / f"fuzz.{kind}", data)

    return test


test_fuzzed_png_loads_or_raises_neuralart_error = _fuzz("png")
test_fuzzed_jpeg_loads_or_raises_neuralart_error = _fuzz("jpeg")


def _load_fuzzed(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        img = load_quietly(path, max_pixels=10_000)
    except NeuralartError as error:
        assert "\n" not in str(error)
    else:
        assert img.mode == "RGB" and img.width * img.height <= 10_000


# ------------------------------------------------------------------- 16 bits and dpi


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_output_keeps_every_level_its_metadata_and_dpi(tmp_path, suffix):
    import png
    import tifffile

    from neuralart.images import to_sixteen_bit

    rgb = torch.rand(1, 3, 9, 13, generator=torch.Generator().manual_seed(0))
    pixels = to_sixteen_bit(rgb)
    expected = (rgb[0].permute(1, 2, 0).double() * 65535).round().numpy().astype(np.uint16)
    assert np.array_equal(pixels, expected)
    assert len(np.unique(pixels)) > 256  # more levels than 8 bits can hold
    out = save_image(pixels, tmp_path / f"p{suffix}", metadata={"seed": 3, "é": "ü"}, dpi=300)
    if suffix == ".png":
        width, height, rows, info = png.Reader(filename=str(out)).read()
        assert info["bitdepth"] == 16 and (width, height) == (13, 9)
        back = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(9, 13, 3)
    else:
        back = tifffile.imread(out)
    assert back.dtype == np.uint16 and np.array_equal(back, pixels)
    assert read_metadata(out) == {"seed": 3, "é": "ü"}
    with Image.open(out) as img:
        assert img.info["dpi"] == pytest.approx((300, 300), abs=0.01)
    assert load_image(out).size == (13, 9)  # and it reads back as an input


def test_sixteen_bits_are_refused_where_the_format_has_none(tmp_path):
    from neuralart.images import check_bit_depth

    with pytest.raises(NeuralartError, match=r"\.png or \.tif"):
        check_bit_depth(tmp_path / "x.jpg", 16)
    with pytest.raises(NeuralartError, match="8 or 16"):
        check_bit_depth(tmp_path / "x.png", 12)
    check_bit_depth(tmp_path / "x.jpg", 8)


def test_dpi_is_stored_in_an_eight_bit_jpeg(tmp_path):
    out = save_image(Image.new("RGB", (8, 8), "red"), tmp_path / "x.jpg", dpi=150)
    with Image.open(out) as img:
        assert img.info["dpi"] == pytest.approx((150, 150), abs=0.01)
