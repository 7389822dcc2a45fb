"""`neuralart video`: the temporal term, the frame loop and the command, with the real
network, PyAV and OpenCV on small synthetic clips."""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, error_line
from PIL import Image
from typer.main import get_command
from typer.testing import CliRunner

from neuralart.cli import app
from neuralart.config import ContentConfig, StyleConfig
from neuralart.images import image_to_tensor, load_image
from neuralart.losses import Objective, Temporal, temporal_loss
from neuralart.presets import resolve

av = pytest.importorskip("av")
pytest.importorskip("cv2")

from neuralart.transfer import transfer  # noqa: E402
from neuralart.video.defaults import DEFAULT_TEMPORAL_WEIGHT  # noqa: E402
from neuralart.video.flow import warping_error  # noqa: E402
from neuralart.video.io import frame_name, list_frames, probe  # noqa: E402
from neuralart.video.stylise import VideoJob, plan_video, stylise_video  # noqa: E402

runner = CliRunner()
STYLE = DATA / "starry_night.jpg"
PHOTO = DATA / "china.jpg"
WIDTH, HEIGHT = 64, 48


def pan(count: int, photo: Path = PHOTO, step: float = 3.0, zoom: float = 1.0) -> list[Image.Image]:
    """A window moving ``step`` px right and half that down per frame over a photograph
    (and shrinking by the factor ``zoom`` per frame), at WIDTH x HEIGHT."""
    image = Image.open(photo).convert("RGB")
    frames = []
    for t in range(count):
        w, h = 128 * zoom**t, 96 * zoom**t
        cx, cy = 80 + step * t, 70 + step * t / 2
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        frames.append(image.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS, box=box))
    return frames


def frame_folder(folder: Path, frames: list[Image.Image]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames, start=1):
        frame.save(folder / f"shot{i}.png")  # natural order: shot2 before shot10
    return folder


def mp4_with_sound(path: Path, frames: list[Image.Image], fps: int = 10) -> Path:
    """An H.264 clip of ``frames`` with a 440 Hz tone in AAC as long as the pictures."""
    rate = 44_100
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio = out.add_stream("aac", rate=rate)
        audio.layout = "mono"
        for i, picture in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.asarray(picture), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        total = rate * len(frames) // fps
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / rate)).astype(np.float32)
        for start in range(0, total, 1024):
            samples = av.AudioFrame.from_ndarray(
                tone[None, start : start + 1024].copy(), format="flt", layout="mono"
            )
            samples.sample_rate, samples.pts = rate, start
            out.mux(audio.encode(samples))
        out.mux(audio.encode(None))
    return path


FAST = ["--size", str(WIDTH), "-n", "4", "--frame-iterations", "2", "--seed", "0"]
FAST += ["--device", "cpu"]


def run_video(*args: str):
    return runner.invoke(app, ["video", *args])


# ------------------------------------------------------------------------ the temporal term


def naive_temporal(x: np.ndarray, target: np.ndarray, c: np.ndarray, scale: float) -> float:
    """(1/D) Σ_p c(p) (x(p) − ω(p))² over every channel and pixel, in 0..1 pixel units."""
    _, channels, height, width = x.shape
    total = 0.0
    for k in range(channels):
        for y in range(height):
            for i in range(width):
                d = (float(x[0, k, y, i]) - float(target[0, k, y, i])) / scale
                total += float(c[0, 0, y, i]) * d * d
    return total / (channels * height * width)


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_the_temporal_term_equals_a_naive_sum(scale):
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(1, 3, 7, 9, generator=generator, dtype=torch.float64) * scale
    target = torch.rand(1, 3, 7, 9, generator=generator, dtype=torch.float64) * scale
    c = (torch.rand(1, 1, 7, 9, generator=generator) > 0.3).to(torch.float64)
    c[0, 0, 0, 0] = 0.5  # any weight in [0, 1] counts in proportion
    term = temporal_loss(x, Temporal(target, c, 7.0), scale)
    assert float(term) == pytest.approx(naive_temporal(x.numpy(), target.numpy(), c.numpy(), scale))


def test_the_objective_reports_the_temporal_term_and_adds_its_gradient(network):
    """total = content + style + weight · temporal; the gradient gains
    weight · 2 c (x − ω) / (D s²)."""
    conv = network.convention
    content = conv.to_network(image_to_tensor(pan(1)[0]))
    generator = torch.Generator().manual_seed(1)
    target = conv.to_network(torch.rand(1, 3, HEIGHT, WIDTH, generator=generator))
    c = (torch.rand(1, 1, HEIGHT, WIDTH, generator=generator) > 0.5).float()
    style = conv.to_network(image_to_tensor(load_image(STYLE).resize((WIDTH, 40))))
    scale = conv.pixel_scale()
    common = {"content_image": content, "style_images": [style], "pixel_scale": scale}
    plain = Objective(network, ContentConfig(), StyleConfig(weight=3.0), **common)
    weight = 50.0
    held = Objective(
        network,
        ContentConfig(),
        StyleConfig(weight=3.0),
        temporal=Temporal(target, c, weight),
        **common,
    )
    x = content + 0.1 * scale * torch.randn(content.shape, generator=generator)
    terms, total, grad = held.value_and_grad(x)
    _, plain_total, plain_grad = plain.value_and_grad(x)
    assert set(terms) == {"content", "style", "temporal"}
    expected = naive_temporal(x.numpy(), target.numpy(), c.numpy(), scale)
    assert float(terms["temporal"]) == pytest.approx(expected, rel=1e-5)
    assert float(total) == pytest.approx(float(plain_total) + weight * expected, rel=1e-5)
    analytic = weight * 2 * c * (x - target) / (x.numel() * scale * scale)
    torch.testing.assert_close(grad - plain_grad, analytic, rtol=1e-3, atol=1e-9)


def test_zero_weights_everywhere_give_the_plain_transfer(network, tmp_path):
    content = tmp_path / "frame.png"
    pan(1)[0].save(content)
    config, _ = resolve("classic", {"size": WIDTH, "seed": 5, "optimizer": {"iterations": 6}})
    plain = transfer(content, [STYLE], config, network=network)
    conv = network.convention
    start = conv.to_network(image_to_tensor(load_image(content)))  # init content, as config
    ignored = Temporal(torch.rand(start.shape) * 300, torch.zeros(1, 1, *start.shape[-2:]), 1e4)
    held = transfer(content, [STYLE], config, network=network, temporal=ignored, init_image=start)
    assert held.final_losses["temporal"] == 0.0
    assert held.final_losses["total"] == plain.final_losses["total"]
    assert np.array_equal(np.asarray(held.image), np.asarray(plain.image))


# ---------------------------------------------------------------------------- the command


def test_a_video_with_sound_gives_a_video_with_its_frames_rate_and_sound(tmp_path):
    clip = mp4_with_sound(tmp_path / "clip.mp4", pan(5))
    out = tmp_path / "styled.mp4"
    result = run_video(str(clip), str(STYLE), *FAST, "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    info = probe(out)
    assert (info.frame_count, info.fps, info.has_audio) == (5, Fraction(10), True)
    assert info.size == (WIDTH, HEIGHT)
    frames = list_frames(tmp_path / "styled_frames")  # kept, next to the output
    assert [p.name for p in frames] == [frame_name(i) for i in range(1, 6)]
    assert '"frames": 5' in result.stdout and '"styled": 5' in result.stdout
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name or p.name.startswith(".")]


def decoded_sound(path: Path) -> tuple[int, np.ndarray]:
    with av.open(str(path)) as container:
        rate = container.streams.audio[0].rate
        return rate, np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)


def sound_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(audio=0) if p.size]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_recorded_clip_keeps_its_frame_count_rate_and_sound(tmp_path, suffix):
    """tests/data/big_buck_bunny.mp4: 24 frames of a real film at 25 fps with stereo AAC
    sound (tests/data/README.md), whose first packet is AAC's priming frame at a negative
    time. The sound is copied packet for packet: into MP4 with that frame (an edit list
    hides it), so it decodes to the very same samples; into Matroska without it (a
    negative time there would delay the pictures)."""
    clip = DATA / "big_buck_bunny.mp4"
    out = tmp_path / f"bunny{suffix}"
    args = ["--size", "48", "-n", "2", "--frame-iterations", "1", "--seed", "0"]
    result = run_video(str(clip), str(STYLE), *args, "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    info = probe(out)
    assert (info.frame_count, info.fps, info.has_audio) == (24, Fraction(25), True)
    assert max(info.size) == 48
    with av.open(str(out)) as container:
        assert next(container.decode(video=0)).time == 0.0  # the pictures start with the sound
    packets = sound_packets(clip)
    assert len(packets) == 46
    assert sound_packets(out) == (packets if suffix == ".mp4" else packets[1:])
    (rate_in, sound_in), (rate_out, sound_out) = decoded_sound(clip), decoded_sound(out)
    assert rate_out == rate_in == 48_000 and sound_out.shape == sound_in.shape == (2, 46_080)
    if suffix == ".mp4":
        assert np.array_equal(sound_out, sound_in)


def test_a_folder_of_frames_gives_a_folder_of_frames(tmp_path):
    clip = frame_folder(tmp_path / "clip", pan(4))
    out = tmp_path / "styled"
    result = run_video(str(clip), str(STYLE), *FAST, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == [frame_name(i) for i in range(1, 5)]
    assert all(Image.open(out / name).size == (WIDTH, HEIGHT) for name in names)


def test_resume_redoes_only_the_missing_frames_and_gives_the_same_frames(tmp_path):
    clip = frame_folder(tmp_path / "clip", pan(5))
    out = tmp_path / "styled"
    args = [str(clip), str(STYLE), *FAST, "-o", str(out)]
    assert run_video(*args).exit_code == 0
    before = {p.name: (p.stat().st_mtime_ns, np.asarray(Image.open(p))) for p in out.iterdir()}
    again = run_video(*args)  # finished frames are not thrown away by a run without --resume
    assert again.exit_code == 1 and "--resume" in error_line(again)
    for name in (frame_name(4), frame_name(5)):
        (out / name).unlink()
    resumed = run_video(*args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "3 of 5 frames are finished" in resumed.stderr
    for name, (mtime, pixels) in before.items():
        path = out / name
        assert (path.stat().st_mtime_ns == mtime) == (name not in (frame_name(4), frame_name(5)))
        assert np.array_equal(np.asarray(Image.open(path)), pixels), name  # the same chain
    other = run_video(*args, "--resume", "--temporal-weight", "7")
    assert other.exit_code == 1 and "temporal_weight" in error_line(other)


def test_ctrl_c_keeps_the_finished_frames_and_says_how_to_resume(tmp_path, monkeypatch):
    from neuralart.video import stylise

    clip = frame_folder(tmp_path / "clip", pan(4))
    out = tmp_path / "styled.mp4"
    real = stylise.carry_over
    calls = []

    def interrupted_at_frame_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(stylise, "carry_over", interrupted_at_frame_3)
    args = [str(clip), str(STYLE), *FAST, "-o", str(out)]
    result = run_video(*args)
    assert result.exit_code == 130
    assert "2 of 4 frames are finished" in result.stderr and "--resume" in result.stderr
    assert not out.exists()
    assert sorted(p.name for p in (tmp_path / "styled_frames").iterdir()) == [
        frame_name(1),
        frame_name(2),
    ]
    monkeypatch.setattr(stylise, "carry_over", real)
    resumed = run_video(*args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert probe(out).frame_count == 4 and probe(out).fps == Fraction(25)  # a folder's default


@pytest.mark.slow  # about 25 s on one thread
def test_the_temporal_loss_cuts_the_warping_error_of_a_pan_by_half(network, tmp_path):
    """Against each frame styled on its own with the same iterations (docs/video.md: 59 %
    less here; 70-77 % on 8 frames at 96 px with 100 iterations)."""
    frames = pan(5, step=4.0, zoom=0.98)
    clip = frame_folder(tmp_path / "clip", frames)
    iterations = 40
    config, _ = resolve(
        "classic", {"size": WIDTH, "seed": 0, "optimizer": {"iterations": iterations}}
    )
    alone = [transfer(p, [STYLE], config, network=network).image for p in list_frames(clip)]
    job = VideoJob(clip, (STYLE,), config, tmp_path / "held", frame_iterations=iterations)
    assert job.temporal_weight == DEFAULT_TEMPORAL_WEIGHT
    run = stylise_video(plan_video(job), network=network)
    assert run.complete and run.stylised == 5
    held = [Image.open(p) for p in list_frames(tmp_path / "held")]
    independent, temporal = warping_error(alone, frames), warping_error(held, frames)
    assert temporal <= 0.5 * independent, (temporal, independent)


@pytest.mark.slow  # about 70 s on one thread
def test_the_temporal_loss_cuts_the_warping_error_of_a_recorded_clip_by_half(network, tmp_path):
    """The first 4 frames of tests/data/big_buck_bunny.mp4 at 96 px, against each frame
    styled on its own with the same iterations (70 % less here; BENCHMARKS.md: 71 % less
    on all 24 frames at 128 px). Frame 1 needs its 100 iterations: at 40 or 60 it is
    still far from the style, the later frames keep moving towards it, and the warping
    error falls by only a third to a half (docs/video.md, "The first frame must be
    finished")."""
    from neuralart.video.io import read_frames

    frames = list(read_frames(DATA / "big_buck_bunny.mp4", size=96))[:4]
    clip = frame_folder(tmp_path / "clip", frames)
    iterations = 100
    config, _ = resolve("classic", {"size": 96, "seed": 0, "optimizer": {"iterations": iterations}})
    alone = [transfer(p, [STYLE], config, network=network).image for p in list_frames(clip)]
    job = VideoJob(clip, (STYLE,), config, tmp_path / "held", frame_iterations=iterations)
    run = stylise_video(plan_video(job), network=network)
    assert run.complete and run.stylised == 4
    held = [Image.open(p) for p in list_frames(tmp_path / "held")]
    independent, temporal = warping_error(alone, frames), warping_error(held, frames)
    assert temporal <= 0.5 * independent, (temporal, independent)


# ------------------------------------------------------------------------------ bad input


def bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments, what the one error line says)."""
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    empty = tmp_path / "empty.mkv"  # a video stream without a frame, and sound
    with av.open(str(empty), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio = out.add_stream("aac", rate=8000)
        audio.layout = "mono"
        for i in range(4):
            silence = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            silence.sample_rate, silence.pts = 8000, 1024 * i
            out.mux(audio.encode(silence))
        out.mux(audio.encode(None))
    mixed = frame_folder(tmp_path / "mixed", pan(3))
    Image.new("RGB", (40, 30)).save(mixed / "shot4.png")
    good = frame_folder(tmp_path / "good", pan(3))
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    out = str(tmp_path / "out.mp4")
    return {
        "unreadable": ([str(garbage), str(STYLE), "-o", out], "not a video file"),
        "no frames": ([str(empty), str(STYLE), "-o", out], "no frames"),
        "empty folder": ([str(nothing), str(STYLE), "-o", out], "no frames"),
        "mixed sizes": ([str(mixed), str(STYLE), "-o", out], "mixes frame sizes"),
        "missing": ([str(tmp_path / "nope.mp4"), str(STYLE), "-o", out], "not found"),
        "suffix": ([str(good), str(STYLE), "-o", str(tmp_path / "out.avi")], "'.avi'"),
        "style": ([str(good), str(tmp_path / "no.jpg"), "-o", out], "style image not found"),
        "fps of a video": (
            [str(mp4_with_sound(tmp_path / "c.mp4", pan(2))), str(STYLE), "-o", out, "--fps", "5"],
            "--fps",
        ),
    }


def test_each_bad_input_is_one_line_and_exit_1_before_any_optimisation(tmp_path, monkeypatch):
    import neuralart.transfer

    def no_network(*args, **kwargs):
        raise AssertionError("the network was loaded")

    monkeypatch.setattr(neuralart.transfer, "load_network", no_network)
    cases = bad_inputs(tmp_path)
    before = set(tmp_path.rglob("*"))
    for name, (args, says) in cases.items():
        result = run_video(*args, *FAST)
        assert result.exit_code == 1, (name, result.output)
        assert says in error_line(result), name
    assert set(tmp_path.rglob("*")) == before  # nothing written, not even a work folder


def test_without_the_video_extra_it_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    clip = frame_folder(tmp_path / "clip", pan(2))
    result = run_video(str(clip), str(STYLE), "-o", str(tmp_path / "out.mp4"))
    assert result.exit_code == 1
    assert "pip install 'neuralart[video]'" in error_line(result)


def test_every_option_of_video_states_its_default():
    result = runner.invoke(app, ["video", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    params = get_command(app).commands["video"].params  # type: ignore[attr-defined]
    options = [p for p in params if p.param_type_name == "option" and not p.hidden]
    text = " ".join(result.stdout.replace("│", " ").split())
    for option in options:
        if option.opts[0] not in ("--quiet", "--json"):  # plain switches
            shown = option.default is not None and option.show_default  # Typer shows it
            assert "[default:" in (option.help or "") or shown, option.opts[0]
    assert text.count("[default:") == len(options) - 2  # all but --quiet and --json
    assert f"[default: {DEFAULT_TEMPORAL_WEIGHT:g}]" in text
    assert "--resume" in text and "--work-dir" in text and "--frame-iterations" in text
