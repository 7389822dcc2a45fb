"""Styling a video frame by frame, each frame held to the one before (Ruder et al. 2016).

Ruder, Dosovitskiy & Brox, "Artistic style transfer for videos" (GCPR 2016), short-term
consistency: frame 1 is styled like a picture, with the full iterations (coarse to fine as
configured). Every later frame t starts from the styled frame t-1 warped into frame t by
the optical flow of the INPUT frames (t → t-1), and its objective gains the temporal term
``weight · (1/D) Σ_p c(p) (x(p) − ω(p))²`` (:class:`neuralart.losses.Temporal`): ω is
that warped frame and c the reliability of the flow (0 at disocclusions, motion
boundaries and content that entered the picture; :func:`neuralart.video.flow.
consistency_weights`). Where c is 0 the starting picture takes the current input frame
instead of the warped one (ours: the paper starts from the warped frame everywhere, which
smears the picture's edge pixels into what enters it). Later frames run
``frame_iterations`` at the full size only, unless the levels were asked for explicitly.

Finished frames go to a work folder as they finish (``frame-00001.png`` ..., atomically,
with the run's settings in each file's metadata); a run that is resumed continues from
the first missing frame, reading the frame before it back to carry the chain on, after
checking that the frames there were made with the same settings. A resumed run redoes
every frame from the first missing one on (a frame depends on the one before it).
"""

from __future__ import annotations

import json
import math
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from neuralart import __version__
from neuralart.color import luminance
from neuralart.config import Config
from neuralart.errors import NeuralartError
from neuralart.images import image_to_tensor, load_image, read_metadata, save_image
from neuralart.losses import StyleState, Temporal
from neuralart.optimize import Callback
from neuralart.vgg import VGG19Features
from neuralart.video.defaults import (
    DEFAULT_FPS,
    DEFAULT_FRAME_ITERATIONS,
    DEFAULT_TEMPORAL_WEIGHT,
    WORK_SUFFIX,
)
from neuralart.video.flow import consistency_weights, optical_flow, warp
from neuralart.video.io import (
    VIDEO_SUFFIXES,
    VideoInfo,
    check_video_output,
    frame_name,
    probe,
    read_frames,
    write_video,
)


@dataclass(frozen=True)
class VideoJob:
    """What to style and how: checked by :func:`plan_video`, run by :func:`stylise_video`.

    ``config`` is the configuration of the first frame; its ``size`` is the frames' long
    edge. ``levels_every_frame``: the later frames run the same coarse-to-fine levels
    (with ``frame_iterations`` at the first level and half as many at each finer one)
    instead of the full size only. ``fit_levels``: the number of levels came from the
    preset, and coarse levels too small for the frames may be dropped.
    """

    input: Path
    styles: tuple[Path, ...]
    config: Config
    output: Path  # a video file (suffix in VIDEO_SUFFIXES) or a folder of frames
    work_dir: Path | None = None  # None: next to the output (see default_work_dir)
    temporal_weight: float = DEFAULT_TEMPORAL_WEIGHT
    frame_iterations: int = DEFAULT_FRAME_ITERATIONS
    levels_every_frame: bool = False
    fit_levels: bool = True
    resume: bool = False
    fps: float | None = None  # a frame folder's rate for a video output; None: DEFAULT_FPS


@dataclass(frozen=True)
class VideoPlan:
    """A checked job: what :func:`plan_video` found, before any optimisation."""

    job: VideoJob
    info: VideoInfo
    config: Config  # the first frame's, with the seed fixed and tiles off
    later: Config  # every later frame's
    work_dir: Path
    video_out: bool  # the output is a video file (else the work folder is the output)
    fps: Fraction | None  # the output video's frame rate
    start: int  # the first frame to style (1-based); frame_count + 1: all are done
    settings: dict[str, Any]  # what each frame file records, compared on --resume

    @property
    def frame_count(self) -> int:
        return self.info.frame_count

    @property
    def resumed(self) -> int:
        """Frames found finished in the work folder and kept."""
        return self.start - 1


@dataclass(frozen=True)
class FrameEvent:
    """A frame starts or is done (the iterations inside are StepEvents)."""

    kind: Literal["start", "done"]
    index: int  # 1-based
    count: int  # frames in the video
    iterations: int  # planned for this frame, over all its levels
    seconds: float = 0.0  # done: wall time of the frame (flow, optimisation, saving)


FrameCallback = Callable[[FrameEvent], None]


@dataclass
class VideoRun:
    """What :func:`stylise_video` did."""

    frames: int  # in the video
    resumed: int  # found finished and kept
    stylised: int = 0  # styled in this run
    seed: int = 0
    first_seconds: float | None = None  # frame 1, when styled in this run
    later_seconds: list[float] = field(default_factory=list)  # each later frame styled
    interrupted: bool = False
    stopped: list[str] = field(default_factory=list)  # frames whose optimisation stopped early

    @property
    def finished(self) -> int:
        """Frames finished in the work folder now."""
        return self.resumed + self.stylised

    @property
    def complete(self) -> bool:
        return self.finished == self.frames


def is_video_path(path: Path) -> bool:
    """Whether an output path names a video file (by its suffix), not a folder of frames."""
    return path.suffix.lower() in VIDEO_SUFFIXES


def default_work_dir(output: Path) -> Path:
    """Where the finished frames of a video output go: beside it, its name without the
    suffix + "_frames" (out.mp4 -> out_frames); a folder output is its own work folder."""
    return output.with_name(output.stem + WORK_SUFFIX) if is_video_path(output) else output


def later_config(config: Config, frame_iterations: int, levels_every_frame: bool) -> Config:
    """The configuration of the frames after the first: ``frame_iterations``, at the full
    size only or (``levels_every_frame``) over the first frame's levels."""
    levels = config.optimizer.level_count(config.size) if levels_every_frame else 1
    optimizer = replace(config.optimizer, iterations=frame_iterations, levels=levels)
    return replace(config, optimizer=optimizer)


def _settings(job: VideoJob, config: Config) -> dict[str, Any]:
    """What a frame depends on, as plain JSON values (the device is left out)."""
    data = {
        "input": str(job.input.resolve()),
        "style": [str(p.resolve()) for p in job.styles],
        "config": {k: v for k, v in config.to_dict().items() if k != "device"},
        "temporal_weight": job.temporal_weight,
        "frame_iterations": job.frame_iterations,
        "levels_every_frame": job.levels_every_frame,
    }
    plain: dict[str, Any] = json.loads(json.dumps(data))
    return plain


def _first_difference(old: Any, new: Any, where: str = "") -> str | None:
    """The dotted key at which two JSON values first differ, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            found = _first_difference(old.get(key), new.get(key), f"{where}.{key}".lstrip("."))
            if found is not None:
                return found
        return None
    if old != new:
        return f"{where or 'settings'}: {json.dumps(old)} then, {json.dumps(new)} now"
    return None


def _finished_frames(work_dir: Path) -> int:
    """How many frames, from frame 1 on without a gap, the work folder holds."""
    count = 0
    while (work_dir / frame_name(count + 1)).is_file():
        count += 1
    return count


def _check_output(job: VideoJob, info: VideoInfo) -> tuple[bool, Path, Fraction | None]:
    """(video output?, work folder, frame rate of a video output)."""
    out = job.output
    video_out = is_video_path(out)
    if not video_out and out.suffix and not out.is_dir():  # an existing folder may have one
        choices = ", ".join(VIDEO_SUFFIXES)
        raise NeuralartError(
            f"output '{out}' has the unsupported extension '{out.suffix}'; give a video "
            f"file ({choices}) or a folder for the frames (a name without an extension)"
        )
    if video_out:
        check_video_output(out)
        work_dir = job.work_dir if job.work_dir is not None else default_work_dir(out)
    else:
        if out.exists() and not out.is_dir():
            raise NeuralartError(f"output '{out}' is a file; give a folder for the frames")
        if job.work_dir is not None and job.work_dir.resolve() != out.resolve():
            raise NeuralartError(
                "--work-dir is for a video output; a folder output holds the frames itself"
            )
        work_dir = out
    if work_dir.exists() and not work_dir.is_dir():
        raise NeuralartError(f"work folder '{work_dir}' is a file; give a folder (--work-dir)")
    if work_dir.resolve() == job.input.resolve():
        raise NeuralartError(
            f"the frames would be written into the input folder '{job.input}'; give another "
            "output or --work-dir"
        )
    fps: Fraction | None = None
    if info.fps is not None:
        if job.fps is not None:
            raise NeuralartError(
                "--fps is for a folder of frames; a video keeps its own frame rate (and sound)"
            )
        fps = info.fps
    elif video_out:
        rate = job.fps if job.fps is not None else DEFAULT_FPS
        if not 0 < rate <= 1000:
            raise NeuralartError(f"--fps must be above 0 and at most 1000, got {rate:g}")
        fps = Fraction(rate).limit_denominator(1_001_000)
    return video_out, work_dir, fps


def plan_video(job: VideoJob) -> VideoPlan:
    """Check everything that can be checked before the network loads: the input (a video
    FFmpeg can read with at least one frame, or a folder of frames of one size), the
    output, the work folder, and on ``resume`` the frames already there.

    Raises:
        NeuralartError: each problem in one line.
    """
    if job.temporal_weight < 0 or not math.isfinite(job.temporal_weight):
        raise NeuralartError(f"--temporal-weight must be 0 or more, got {job.temporal_weight}")
    if job.frame_iterations < 0:
        raise NeuralartError(f"--frame-iterations must be 0 or more, got {job.frame_iterations}")
    info = probe(job.input)
    video_out, work_dir, fps = _check_output(job, info)
    config = replace(job.config, tile="off")  # the temporal term is for whole pictures
    finished = _finished_frames(work_dir) if work_dir.is_dir() else 0
    if finished and not job.resume:
        raise NeuralartError(
            f"work folder '{work_dir}' already holds {finished} finished frames: give "
            "--resume to continue them, or remove the folder to start again"
        )
    start = 1
    if finished and job.resume:
        last = work_dir / frame_name(finished)
        recorded = (read_metadata(last) or {}).get("video")
        if not isinstance(recorded, dict):
            raise NeuralartError(
                f"'{last}' was not written by neuralart video; --resume continues only its "
                "own frames"
            )
        if config.seed is None:  # the seed the frames were made with
            config = replace(config, seed=recorded.get("config", {}).get("seed"))
        difference = _first_difference(recorded, _settings(job, config))
        if difference is not None:
            raise NeuralartError(
                f"the frames in '{work_dir}' were made with other settings ({difference}); "
                "give the same options to resume, or another --work-dir"
            )
        start = min(finished, info.frame_count) + 1
    if config.seed is None:
        config = replace(config, seed=secrets.randbelow(2**31))
    later = later_config(config, job.frame_iterations, job.levels_every_frame)
    return VideoPlan(
        job=job,
        info=info,
        config=config,
        later=later,
        work_dir=work_dir,
        video_out=video_out,
        fps=fps,
        start=start,
        settings=_settings(job, config),
    )


def _rgb(picture: Image.Image) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]."""
    return np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, C) -> (1, C, H, W) float32 on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].to(device)


def carry_over(
    styled_previous: Image.Image,
    input_previous: Image.Image,
    input_current: Image.Image,
    network: VGG19Features,
    weight: float,
    luminance_only: bool = False,
) -> tuple[Temporal, torch.Tensor]:
    """The temporal term of the current frame and its starting picture (network space).

    ω: the styled previous frame warped into the current frame with the flow of the input
    frames, current → previous; c: where that flow can be trusted. The starting picture
    is ω where c is 1 and the current input frame where c is 0. ``luminance_only``: the
    run optimises grey pictures (colour preservation by luminance), so both are grey.
    """
    device = next(network.parameters()).device
    to_previous = optical_flow(input_current, input_previous)  # on the current frame's grid
    to_current = optical_flow(input_previous, input_current)
    reliable = consistency_weights(to_previous, to_current)  # (H, W), 1 or 0
    warped = warp(_rgb(styled_previous), to_previous)  # (H, W, 3)
    target = _tensor(warped, device)  # (1, 3, H, W) RGB
    weights = _tensor(reliable[:, :, None], device)  # (1, 1, H, W)
    content = image_to_tensor(input_current).to(device)
    start = weights * target + (1 - weights) * content
    if luminance_only:
        target, start = luminance(target), luminance(start)
    conv = network.convention
    return Temporal(conv.to_network(target), weights, weight), conv.to_network(start)


def _frame_metadata(plan: VideoPlan, index: int, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "neuralart": __version__,
        "video": plan.settings,
        "frame": index,
        "frames": plan.frame_count,
        "record": record,
    }


def stylise_video(
    plan: VideoPlan,
    *,
    network: VGG19Features | None = None,
    device: torch.device | None = None,
    callback: Callback | None = None,
    on_frame: FrameCallback | None = None,
) -> VideoRun:
    """Style the frames of ``plan`` from ``plan.start`` on, each written to the work
    folder as it finishes. Ctrl-C (or a KeyboardInterrupt) stops the run: the frames
    finished so far stay, the one in progress is dropped, and the result says
    ``interrupted``. The network is loaded once and the style targets are kept across
    frames.
    """
    from neuralart.transfer import load_network, network_device, pick_device, transfer

    run = VideoRun(plan.frame_count, plan.resumed, seed=plan.config.seed or 0)
    if plan.start > plan.frame_count:
        return run
    if device is None:
        device = network_device(network) if network is not None else pick_device(plan.config.device)
    style_cache: dict[Any, StyleState] = {}
    styled_previous: Image.Image | None = None
    if plan.start > 1:
        styled_previous = load_image(plan.work_dir / frame_name(plan.start - 1), role="frame")
    luminance_only = plan.config.preserve_color == "luminance"
    first_iterations = sum(plan.config.optimizer.level_iterations(plan.config.size))
    later_iterations = sum(plan.later.optimizer.level_iterations(plan.config.size))
    frames = read_frames(plan.job.input, size=plan.config.size)
    input_previous: Image.Image | None = None
    try:
        if network is None:
            network = load_network(plan.config, device)
        with tempfile.TemporaryDirectory(prefix="neuralart-video-") as scratch:
            for index, frame in enumerate(frames, start=1):
                if index < plan.start:
                    input_previous = frame
                    continue
                if styled_previous is not None and styled_previous.size != frame.size:
                    raise NeuralartError(
                        f"frame {index - 1} in '{plan.work_dir}' is "
                        f"{styled_previous.width}x{styled_previous.height} px but the input's "
                        f"frames are {frame.width}x{frame.height} at this --size"
                    )
                began = time.perf_counter()
                first = styled_previous is None or input_previous is None
                iterations = first_iterations if first else later_iterations
                if on_frame is not None:
                    on_frame(FrameEvent("start", index, plan.frame_count, iterations))
                content = Path(scratch) / frame_name(index)
                frame.save(content)
                if first:
                    result = transfer(
                        content,
                        plan.job.styles,
                        plan.config,
                        network=network,
                        device=device,
                        callback=callback,
                        style_cache=style_cache,
                        fit_levels=plan.job.fit_levels,
                    )
                else:
                    assert styled_previous is not None and input_previous is not None
                    temporal, start = carry_over(
                        styled_previous,
                        input_previous,
                        frame,
                        network,
                        plan.job.temporal_weight,
                        luminance_only,
                    )
                    result = transfer(
                        content,
                        plan.job.styles,
                        plan.later,
                        network=network,
                        device=device,
                        callback=callback,
                        style_cache=style_cache,
                        fit_levels=not plan.job.levels_every_frame,
                        temporal=temporal if plan.job.temporal_weight > 0 else None,
                        init_image=start,
                    )
                content.unlink()
                if result.interrupted:
                    run.interrupted = True
                    break
                if result.stopped:
                    run.stopped.append(f"frame {index}: {result.stopped}")
                record = result.record(timings=False)
                save_image(
                    result.image,
                    plan.work_dir / frame_name(index),
                    metadata=_frame_metadata(plan, index, record),
                )
                seconds = time.perf_counter() - began
                if first:
                    run.first_seconds = seconds
                else:
                    run.later_seconds.append(seconds)
                run.stylised += 1
                if on_frame is not None:
                    on_frame(FrameEvent("done", index, plan.frame_count, iterations, seconds))
                styled_previous, input_previous = result.image, frame
    except KeyboardInterrupt:  # outside the optimisation: the frame in progress is dropped
        run.interrupted = True
    finally:
        close = getattr(frames, "close", None)  # the decoder's file
        if close is not None:
            close()
    return run


def finished_frame_files(plan: VideoPlan) -> list[Path]:
    """The frame files of the work folder, 1 to the frame count, in order."""
    return [plan.work_dir / frame_name(i) for i in range(1, plan.frame_count + 1)]


def encode(plan: VideoPlan) -> Path:
    """Encode the finished frames into the output video (atomically), at the input's frame
    rate and with its sound; returns the output path."""
    assert plan.video_out and plan.fps is not None
    files = finished_frame_files(plan)
    missing = [p for p in files if not p.is_file()]
    if missing:
        raise NeuralartError(f"frame '{missing[0]}' is missing; run again with --resume")
    audio = plan.job.input if plan.info.has_audio else None
    pictures = (load_image(p, role="frame") for p in files)
    return write_video(pictures, plan.job.output, plan.fps, audio_from=audio)
