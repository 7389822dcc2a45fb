"""Decoding and encoding videos and frame folders, with the real PyAV and small clips."""

from __future__ import annotations

import struct
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neuralart.errors import NeuralartError, NeuralartWarning

av = pytest.importorskip("av")
pytest.importorskip("cv2")

from neuralart.video.io import (  # noqa: E402
    VIDEO_SUFFIXES,
    check_video_output,
    frame_name,
    probe,
    read_frames,
    write_video,
)

HEIGHT, WIDTH = 48, 64


def smooth_frames(count: int = 8, height: int = HEIGHT, width: int = WIDTH) -> list[Image.Image]:
    """Different smooth colour pictures (upscaled noise): easy for codecs, easy to tell apart."""
    rng = np.random.default_rng(7)
    frames = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        frames.append(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    return frames


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(10 * np.log10(255.0**2 / max(np.mean(diff**2), 1e-12)))


def make_clip(path: Path, seconds: float = 1.0, fps: int = 10, rate: int = 44_100) -> None:
    """An H.264 clip with a 440 Hz sine tone in AAC, as a camera would record it."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio = out.add_stream("aac", rate=rate)
        audio.layout = "mono"
        for i in range(round(seconds * fps)):
            picture = np.full((HEIGHT, WIDTH, 3), 20 * i, np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        total = round(seconds * rate)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / rate)).astype(np.float32)
        for start in range(0, total, 1024):
            chunk = tone[None, start : start + 1024].copy()
            samples = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            samples.sample_rate, samples.pts = rate, start
            out.mux(audio.encode(samples))
        out.mux(audio.encode(None))


def audio_track(path: Path) -> tuple[str, float]:
    """(codec, seconds of decoded sound) of a file's first audio stream."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.codec_context.codec.canonical_name, samples / stream.codec_context.sample_rate


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "partial" in p.name)


@pytest.mark.parametrize(
    ("suffix", "min_psnr"), [(".mp4", 28.0), (".mkv", 28.0), (".webm", 28.0), (".gif", 25.0)]
)
def test_round_trip_keeps_count_size_rate_and_pixels(tmp_path, suffix, min_psnr):
    frames = smooth_frames(8)
    out = write_video(frames, tmp_path / f"clip{suffix}", fps=25)
    info = probe(out)
    assert (info.frame_count, info.width, info.height) == (8, WIDTH, HEIGHT)
    assert info.fps == Fraction(25)
    assert info.has_audio is False
    back = list(read_frames(out))
    assert len(back) == 8
    assert all(img.mode == "RGB" and img.size == (WIDTH, HEIGHT) for img in back)
    # Each frame comes back close to its own original, and far from the neighbour's.
    scores = [psnr(a, b) for a, b in zip(frames, back, strict=True)]
    assert min(scores) > min_psnr, scores
    assert psnr(frames[0], back[1]) < 20
    assert leftovers(tmp_path) == []


def test_fractional_frame_rate_is_kept(tmp_path):
    out = write_video(smooth_frames(6), tmp_path / "ntsc.mp4", fps=Fraction(30000, 1001))
    assert probe(out).fps == Fraction(30000, 1001)


def test_odd_size_is_cropped_for_h264_but_kept_for_vp9(tmp_path):
    frames = smooth_frames(4, height=47, width=63)
    h264 = probe(write_video(frames, tmp_path / "odd.mp4", fps=10))
    assert (h264.width, h264.height) == (62, 46)
    first = next(read_frames(tmp_path / "odd.mp4"))
    cropped = psnr(first, frames[0].crop((0, 0, 62, 46)))
    assert cropped > 30
    assert cropped > psnr(first, frames[0].resize((62, 46), Image.Resampling.BILINEAR)) + 1
    vp9 = probe(write_video(frames, tmp_path / "odd.webm", fps=10))
    assert (vp9.width, vp9.height) == (63, 47)


def test_arrays_are_accepted_as_frames(tmp_path):
    arrays = [np.asarray(img) for img in smooth_frames(3)]
    assert probe(write_video(arrays, tmp_path / "a.mkv", fps=5)).frame_count == 3


def test_read_frames_resizes_to_long_edge(tmp_path):
    out = write_video(smooth_frames(3), tmp_path / "clip.mp4", fps=10)
    assert [img.size for img in read_frames(out, size=32)] == [(32, 24)] * 3
    with pytest.raises(NeuralartError, match="positive"):
        read_frames(out, size=0)


def test_frame_folder_round_trip_in_natural_order(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    colours = {2: (255, 0, 0), 10: (0, 255, 0), 1: (0, 0, 255)}
    for number, colour in colours.items():  # frame10 must come after frame2
        Image.new("RGB", (WIDTH, HEIGHT), colour).save(folder / f"frame{number}.png")
    (folder / "notes.txt").write_text("not a frame")
    (folder / ".hidden.png").write_bytes(b"not a picture")
    info = probe(folder)
    assert (info.frame_count, info.width, info.height) == (3, WIDTH, HEIGHT)
    assert info.fps is None and info.has_audio is False
    pixels = [img.getpixel((5, 5)) for img in read_frames(folder)]
    assert pixels == [(0, 0, 255), (255, 0, 0), (0, 255, 0)]
    assert [img.size for img in read_frames(folder, size=32)] == [(32, 24)] * 3


def test_frame_folder_written_with_frame_names_reads_back(tmp_path):
    frames = smooth_frames(12)
    for i, img in enumerate(frames, start=1):
        img.save(tmp_path / frame_name(i))
    back = list(read_frames(tmp_path))
    assert [np.array_equal(a, b) for a, b in zip(frames, back, strict=True)] == [True] * 12


def test_frame_name():
    assert frame_name(1) == "frame-00001.png"
    assert frame_name(12345) == "frame-12345.png"
    with pytest.raises(ValueError):
        frame_name(0)


def test_audio_is_copied_and_cut_to_the_video(tmp_path):
    clip = tmp_path / "camera.mp4"
    make_clip(clip, seconds=1.0, fps=10)
    assert probe(clip).has_audio
    frames = list(read_frames(clip))[:6]  # 0.6 s of pictures
    out = write_video(frames, tmp_path / "styled.mp4", fps=10, audio_from=clip)
    info = probe(out)
    assert info.has_audio and info.frame_count == 6
    codec, seconds = audio_track(out)
    assert codec == "aac"  # copied, not converted
    assert seconds == pytest.approx(0.6, abs=0.08)


def test_audio_is_reencoded_when_the_container_needs_it(tmp_path):
    clip = tmp_path / "camera.mp4"
    make_clip(clip, seconds=0.5, fps=10)
    out = write_video(read_frames(clip), tmp_path / "styled.webm", fps=10, audio_from=clip)
    assert probe(out).has_audio
    codec, seconds = audio_track(out)
    assert codec == "opus"  # WebM holds no AAC
    assert seconds == pytest.approx(0.5, abs=0.08)


def test_no_audio_without_audio_source_and_none_in_gif(tmp_path):
    clip = tmp_path / "camera.mp4"
    make_clip(clip, seconds=0.3, fps=10)
    silent = write_video(smooth_frames(3), tmp_path / "silent.mp4", fps=10, audio_from=None)
    assert probe(silent).has_audio is False
    with pytest.warns(NeuralartWarning, match=r"GIF .* cannot hold sound"):
        gif = write_video(smooth_frames(3), tmp_path / "x.gif", fps=10, audio_from=clip)
    assert probe(gif).has_audio is False


def test_rotated_phone_video_is_turned_upright(tmp_path):
    """A track whose header asks for a quarter turn (as phones record portrait video)."""
    picture = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    picture[:, : WIDTH // 2] = (255, 0, 0)  # left half red, right half blue
    picture[:, WIDTH // 2 :] = (0, 0, 255)
    plain = write_video([Image.fromarray(picture)] * 3, tmp_path / "plain.mp4", fps=10)
    data = bytearray(plain.read_bytes())
    identity = struct.pack(">9i", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    clockwise = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    at = data.index(identity, data.index(b"tkhd"))
    data[at : at + 36] = clockwise
    turned = tmp_path / "turned.mp4"
    turned.write_bytes(bytes(data))
    info = probe(turned)
    assert (info.width, info.height) == (HEIGHT, WIDTH)
    upright = np.asarray(next(read_frames(turned)), np.int32)
    assert upright.shape == (WIDTH, HEIGHT, 3)
    # Turned a quarter clockwise: the left half is now on top.
    assert np.abs(upright[5, HEIGHT // 2] - (255, 0, 0)).max() < 10
    assert np.abs(upright[-5, HEIGHT // 2] - (0, 0, 255)).max() < 10


# --- refusals ---------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(NeuralartError, match="not found"):
        probe(tmp_path / "nope.mp4")
    with pytest.raises(NeuralartError, match="not found"):
        read_frames(tmp_path / "nope.mp4")


def test_garbage_file_is_not_a_video(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"certainly not a movie " * 40)
    with pytest.raises(NeuralartError, match="not a video file FFmpeg can read") as err:
        probe(garbage)
    assert "\n" not in str(err.value)
    with pytest.raises(NeuralartError, match="not a video file FFmpeg can read"):
        read_frames(garbage)  # refused when called, not at the first frame


def test_video_with_zero_frames(tmp_path):
    """A Matroska file that declares a video stream but carries only sound."""
    empty = tmp_path / "empty.mkv"
    with av.open(str(empty), "w") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio = out.add_stream("aac", rate=8000)
        audio.layout = "mono"
        for i in range(4):
            silence = np.zeros((1, 1024), np.float32)
            samples = av.AudioFrame.from_ndarray(silence, format="fltp", layout="mono")
            samples.sample_rate, samples.pts = 8000, 1024 * i
            out.mux(audio.encode(samples))
        out.mux(audio.encode(None))
    with pytest.raises(NeuralartError, match="has no frames"):
        probe(empty)
    with pytest.raises(NeuralartError, match="has no frames"):
        list(read_frames(empty))


def test_frame_folder_without_frames(tmp_path):
    (tmp_path / "readme.txt").write_text("no pictures here")
    with pytest.raises(NeuralartError, match="has no frames"):
        probe(tmp_path)
    with pytest.raises(NeuralartError, match="has no frames"):
        read_frames(tmp_path)


def test_frame_folder_with_mixed_sizes(tmp_path):
    for i in range(1, 4):
        Image.new("RGB", (WIDTH, HEIGHT)).save(tmp_path / frame_name(i))
    Image.new("RGB", (32, 32)).save(tmp_path / frame_name(4))
    expected = "'frame-00004.png' is 32x32 but 'frame-00001.png' is 64x48"
    with pytest.raises(NeuralartError, match=expected):
        probe(tmp_path)
    with pytest.raises(NeuralartError, match=expected):
        list(read_frames(tmp_path))


def test_check_video_output_refusals(tmp_path):
    with pytest.raises(NeuralartError, match=r"unsupported extension '\.avi'; use one of") as err:
        check_video_output(tmp_path / "out.avi")
    assert all(suffix in str(err.value) for suffix in VIDEO_SUFFIXES)
    with pytest.raises(NeuralartError, match="no file extension"):
        check_video_output(tmp_path / "out")
    with pytest.raises(NeuralartError, match="does not exist"):
        check_video_output(tmp_path / "missing" / "out.mp4")
    assert check_video_output(tmp_path / "out.MP4") == tmp_path / "out.MP4"


def test_bad_output_is_refused_before_any_frame_is_made(tmp_path):
    made = []

    def frames():
        made.append(1)
        yield from smooth_frames(2)

    with pytest.raises(NeuralartError, match="unsupported extension"):
        write_video(frames(), tmp_path / "out.avi", fps=10)
    with pytest.raises(NeuralartError, match=r"audio source .* not found"):
        write_video(frames(), tmp_path / "out.mp4", fps=10, audio_from=tmp_path / "x.mp4")
    assert made == []
    assert list(tmp_path.iterdir()) == []


def test_no_frames_or_mixed_sizes_write_nothing(tmp_path):
    with pytest.raises(NeuralartError, match="no frames to write"):
        write_video([], tmp_path / "out.mp4", fps=10)
    mixed = [*smooth_frames(2), *smooth_frames(1, height=32, width=32)]
    with pytest.raises(NeuralartError, match="frame 3 is 32x32 but the first frame is 64x48"):
        write_video(mixed, tmp_path / "out.mp4", fps=10)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".gif"])
def test_failed_write_leaves_existing_output_untouched(tmp_path, suffix):
    target = tmp_path / f"out{suffix}"
    write_video(smooth_frames(3), target, fps=10)
    before = target.read_bytes()

    def frames_then_crash():
        yield from smooth_frames(5)
        raise RuntimeError("styling failed at frame 6")

    with pytest.raises(RuntimeError, match="frame 6"):
        write_video(frames_then_crash(), target, fps=10)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    assert probe(target).frame_count == 3


@pytest.mark.parametrize("missing", ["av", "cv2"])
def test_missing_optional_package_is_one_clear_line(monkeypatch, missing):
    from neuralart.video import require_video

    monkeypatch.setitem(sys.modules, missing, None)  # makes `import missing` fail
    with pytest.raises(NeuralartError, match=r"pip install 'neuralart\[video\]'"):
        require_video()
