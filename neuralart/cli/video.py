"""The video command: a video (or a folder of frames) styled frame by frame, each frame held
to the one before by the temporal loss of Ruder, Dosovitskiy & Brox (2016).

Registered on the app (``@app.command()``) when imported: :mod:`neuralart.cli` imports
it. Like the other commands it imports torch only when it runs, and PyAV and OpenCV (the
``video`` extra) only through :func:`neuralart.video.require_video`.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from neuralart.cli.commands import (
    OPTIMISATION,
    OUTPUT,
    STYLE,
    DeviceOpt,
    JsonOpt,
    PrecisionOpt,
    PreserveColor,
    PresetOpt,
    QuietOpt,
    SeedOpt,
    TvOpt,
    _help,
    app,
)
from neuralart.cli.output import error, reported_warnings, user_errors, warn
from neuralart.cli.running import check_inputs, default_output, levels_chosen, overrides
from neuralart.config import AUTO_LEVEL_EDGE
from neuralart.presets import DEFAULT_PRESET
from neuralart.video.defaults import (
    DEFAULT_FPS,
    DEFAULT_FRAME_ITERATIONS,
    DEFAULT_TEMPORAL_WEIGHT,
    WORK_SUFFIX,
)

if TYPE_CHECKING:
    from neuralart.optimize import StepEvent
    from neuralart.video.stylise import FrameEvent, VideoPlan, VideoRun

# Options whose meaning for a video differs from transfer's (frames, the first frame, all
# frames), and those transfer defines in its own signature.

FrameSizeOpt = Annotated[
    int | None,
    typer.Option(
        help=_help("Long edge of the frames in pixels.", "size", "either"),
        rich_help_panel=OUTPUT,
    ),
]

FirstIterationsOpt = Annotated[
    str | None,
    typer.Option(
        "--iterations",
        "-n",
        help=_help(
            "L-BFGS iterations of the first frame: N at the first level and half as many at "
            "each finer one, or one count per level (e.g. 300,100).",
            "optimizer.iterations",
            "either",
        ),
        rich_help_panel=OPTIMISATION,
    ),
]

VideoLevelsOpt = Annotated[
    str | None,
    typer.Option(
        "--levels",
        help=_help(
            "Coarse-to-fine levels, each at twice the size of the one before: a number, or "
            f"auto (halve until the first is at most {AUTO_LEVEL_EDGE} px). The preset's "
            "levels run on the first frame only; levels given here (or one --iterations count "
            "per level) run on every frame, the later ones with --frame-iterations at the "
            "first level and half as many at each finer one.",
            "optimizer.levels",
            "either",
        ),
        rich_help_panel=OPTIMISATION,
    ),
]

StyleWeightOpt = Annotated[
    float | None,
    typer.Option(
        help=_help("Weight of the style loss.", "style.weight", "preset"),
        rich_help_panel=STYLE,
    ),
]

ContentWeightOpt = Annotated[
    float | None,
    typer.Option(
        help=_help("Weight of the content loss.", "content.weight", "preset"),
        rich_help_panel=STYLE,
    ),
]

StyleBlendOpt = Annotated[
    str | None,
    typer.Option(
        help=_help(
            "Weights of several style images, e.g. 0.7,0.3.", "style.blend", "built-in", "equal"
        ),
        rich_help_panel=STYLE,
    ),
]

StyleScaleOpt = Annotated[
    float | None,
    typer.Option(
        help=_help(
            "Style image size relative to the frames (1: the same long edge).",
            "style.image_scale",
            "built-in",
        ),
        rich_help_panel=STYLE,
    ),
]

PreserveColorOpt = Annotated[
    PreserveColor | None,
    typer.Option(
        help=_help(
            "Keep the video's colours: transfer on luminance only, or match the style's "
            "colours to each frame's first.",
            "preserve_color",
            "built-in",
        ),
        rich_help_panel=STYLE,
    ),
]


@app.command()
def video(
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="input",
            help="The video (mp4, mov, mkv, webm, gif, ...) or a folder of frames (image "
            "files in natural order: frame2 before frame10).",
        ),
    ],
    style: Annotated[list[Path], typer.Argument(help="The painting (style image).")],
    preset: PresetOpt = DEFAULT_PRESET,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    # Output
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="The video (.mp4, .mov, .mkv, .webm or .gif; the input's frame rate and "
            "sound), or a folder for the frames (a name without an extension), written as "
            r"frame-00001.png ... \[default: INPUT_STYLE_PRESET.mp4]",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    size: FrameSizeOpt = None,
    work_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the finished frames of a video output, kept after the video is "
            f"written (--resume continues from them). \\[default: OUTPUT-STEM{WORK_SUFFIX} "
            f"beside the output (out.mp4: out{WORK_SUFFIX}); a folder output is its own]",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue from the first missing frame of the work folder (after Ctrl-C): "
            "the frame before it is read back and every frame from it on is styled again. "
            "The other options must be those of the first run. "
            r"\[default: start afresh; a work folder with frames is refused]",
            show_default=False,
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    fps: Annotated[
        float | None,
        typer.Option(
            help="Frame rate of a video made from a folder of frames. "
            f"\\[default: {DEFAULT_FPS}; a video input keeps its own]",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    # Style and weights
    style_weight: StyleWeightOpt = None,
    content_weight: ContentWeightOpt = None,
    tv_weight: TvOpt = None,
    temporal_weight: Annotated[
        float,
        typer.Option(
            help="Weight of the temporal loss: each frame's mean squared difference (0..1 "
            "pixels) from the previous styled frame carried over by the optical flow, where "
            "the flow is reliable. 0: none, frames still start from the previous one. "
            f"\\[default: {DEFAULT_TEMPORAL_WEIGHT:g}]",
            show_default=False,
            rich_help_panel=STYLE,
        ),
    ] = DEFAULT_TEMPORAL_WEIGHT,
    style_blend: StyleBlendOpt = None,
    style_scale: StyleScaleOpt = None,
    preserve_color: PreserveColorOpt = None,
    # Optimisation
    iterations: FirstIterationsOpt = None,
    frame_iterations: Annotated[
        int,
        typer.Option(
            help="L-BFGS iterations of every frame after the first (each starts from the "
            f"previous one, warped). \\[default: {DEFAULT_FRAME_ITERATIONS}]",
            show_default=False,
            rich_help_panel=OPTIMISATION,
        ),
    ] = DEFAULT_FRAME_ITERATIONS,
    levels: VideoLevelsOpt = None,
    seed: SeedOpt = None,
    # Network and device
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
) -> None:
    r"""Repaint a video (or a folder of frames) in the style of STYLE, without flicker.

    Frame 1 is styled like a picture (--iterations). Every later frame starts from the
    styled frame before it, carried over by the optical flow of the input, and a temporal
    loss holds it there wherever the flow is reliable (Ruder et al. 2016); it runs
    --frame-iterations. Finished frames are kept as they finish: after Ctrl-C, the same
    command with --resume continues. Needs the video extra: pip install 'neuralart\[video]'.
    """
    with user_errors():
        from neuralart.video import require_video

        require_video()
        from neuralart.presets import resolve

        with reported_warnings(quiet):
            config, provenance = resolve(
                preset,
                overrides(
                    size=size,
                    iterations=iterations,
                    style_weight=style_weight,
                    content_weight=content_weight,
                    tv_weight=tv_weight,
                    seed=seed,
                    device=device,
                    precision=precision,
                    levels=levels,
                    style_blend=style_blend,
                    style_scale=style_scale,
                    preserve_color=preserve_color,
                ),
            )
        check_inputs(None, style)
        out = output if output is not None else default_output(input_path, style, preset)
        if output is None:
            out = out.with_suffix(".mp4")
        from neuralart.video.stylise import VideoJob, plan_video

        chosen = levels_chosen(provenance, config)
        job = VideoJob(
            input=input_path,
            styles=tuple(style),
            config=config,
            output=out,
            work_dir=work_dir,
            temporal_weight=temporal_weight,
            frame_iterations=frame_iterations,
            levels_every_frame=chosen,
            fit_levels=not chosen,
            resume=resume,
            fps=fps,
        )
        plan = plan_video(job)  # every check, before the network loads
        _run(plan, preset, quiet, as_json)


def _run(plan: VideoPlan, preset: str, quiet: bool, as_json: bool) -> None:
    from neuralart.video.stylise import encode, stylise_video

    started = time.perf_counter()
    count = plan.frame_count
    if plan.resumed and not quiet and not as_json:
        left = count - plan.resumed
        typer.echo(
            f"resuming: {plan.resumed} of {count} frames are finished in {plan.work_dir}; "
            f"{left} to go",
            err=True,
        )
    with reported_warnings(quiet), VideoProgress(quiet or as_json, plan) as progress:
        run = stylise_video(plan, callback=progress, on_frame=progress.frame)
    if run.interrupted:  # a second Ctrl-C while this is said exits at once
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        error(
            f"interrupted: {run.finished} of {count} frames are finished in {plan.work_dir}; "
            "the same command with --resume continues"
        )
        raise typer.Exit(130)
    if not quiet:
        for text in run.stopped:
            warn(text)
    written = plan.work_dir
    if plan.video_out:
        try:
            with reported_warnings(quiet):
                written = encode(plan)
        except KeyboardInterrupt:
            error(
                f"interrupted while encoding: all {count} frames are in {plan.work_dir}; the "
                "same command with --resume writes the video"
            )
            raise typer.Exit(130) from None
    seconds = time.perf_counter() - started
    if as_json:
        typer.echo(json.dumps(_summary(plan, run, written, preset, seconds)))
    elif not quiet:
        rate = f" at {float(plan.fps):g} fps" if plan.fps is not None and plan.video_out else ""
        what = f"{count} frames{rate}"
        done = f"{run.stylised} styled in {seconds:.1f} s" if run.stylised else "none to style"
        kept = f"; the frames are in {plan.work_dir}" if plan.video_out else ""
        typer.echo(f"wrote {written} ({what}, {done}{kept})")


def _summary(
    plan: VideoPlan, run: VideoRun, written: Path, preset: str, seconds: float
) -> dict[str, Any]:
    later = run.later_seconds
    return {
        "output": str(written),
        "preset": preset,
        "frames": plan.frame_count,
        "fps": float(plan.fps) if plan.fps is not None else None,
        "styled": run.stylised,
        "resumed": run.resumed,
        "work_dir": str(plan.work_dir),
        "seed": plan.config.seed,
        "temporal_weight": plan.job.temporal_weight,
        "frame_iterations": plan.job.frame_iterations,
        "seconds": round(seconds, 3),
        "first_frame_seconds": None if run.first_seconds is None else round(run.first_seconds, 3),
        "later_frame_seconds": round(sum(later) / len(later), 3) if later else None,
    }


class VideoProgress:
    """Two rich bars on a terminal (the frames, with an ETA; the current frame's
    iterations); a line per frame, and one every 10 s within a frame, otherwise; nothing
    if quiet. ``frame`` hears of frames, the instance itself of iterations."""

    def __init__(self, quiet: bool, plan: VideoPlan) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.count = plan.frame_count
        self.done = plan.resumed
        self.later_iterations = sum(plan.later.optimizer.level_iterations(plan.config.size))
        self.later_seconds: list[float] = []  # each later frame styled in this run
        self.index = 0  # the frame in progress
        self.iterations = 0  # planned for it
        self.frame_started = 0.0
        self.rate = 0.0  # iterations per second in the current frame
        self.last_print = 0.0
        self.bar: Any = None
        self.frames_task: Any = None
        self.frame_task: Any = None

    def __enter__(self) -> VideoProgress:
        if self.quiet or not self.tty:
            return self
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self.bar.__enter__()
        self.frames_task = self.bar.add_task("frames", total=self.count, info="ETA -")
        self.bar.update(self.frames_task, completed=self.done)
        self.frame_task = self.bar.add_task("frame", total=1, info="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)

    def eta(self, left_in_frame: int) -> float | None:
        """Seconds until the last frame is done: the current frame's iterations left at its
        rate, and each frame after it as long as the later frames took (or, before one is
        done, as long as its iterations take at the current rate)."""
        after = self.count - self.index
        if self.later_seconds:
            per_frame = sum(self.later_seconds) / len(self.later_seconds)
        elif self.rate > 0:
            per_frame = self.later_iterations / self.rate
        else:
            return None
        current = left_in_frame / self.rate if self.rate > 0 else 0.0
        return current + after * per_frame

    def frame(self, event: FrameEvent) -> None:
        if self.quiet:
            return
        if event.kind == "start":
            self.index, self.iterations = event.index, event.iterations
            self.frame_started = time.monotonic()
            self.rate = 0.0
            if self.bar is not None:
                self.bar.reset(
                    self.frame_task,
                    total=max(1, event.iterations),
                    description=f"frame {event.index}",
                    info="",
                )
            return
        self.done += 1
        if event.index > 1:
            self.later_seconds.append(event.seconds)
        eta = self.eta(0)
        if self.bar is not None:
            self.bar.update(self.frames_task, completed=self.done, info=_eta_text(eta))
            return
        typer.echo(
            f"frame {event.index}/{self.count} done in {event.seconds:.1f} s  {_eta_text(eta)}",
            err=True,
        )

    def __call__(self, event: StepEvent) -> None:
        if self.quiet:
            return
        elapsed = time.monotonic() - self.frame_started
        completed = event.completed
        self.rate = completed / elapsed if elapsed > 0 else 0.0
        total = event.total if event.schedule else self.iterations
        eta = self.eta(max(0, total - completed))
        level = "" if event.levels == 1 else f" level {event.level}/{event.levels}"
        if self.bar is not None:
            self.bar.update(
                self.frame_task,
                completed=completed,
                total=max(1, total),
                description=f"frame {self.index}{level}",
                info=f"loss {event.loss:.4g}  {self.rate:.2f} it/s",
            )
            self.bar.update(self.frames_task, info=_eta_text(eta))
            return
        now = time.monotonic()
        if now - self.last_print >= 10.0:
            self.last_print = now
            typer.echo(
                f"frame {self.index}/{self.count}{level}: iteration {completed}/{total}  "
                f"loss {event.loss:.4g}  {self.rate:.2f} it/s  {_eta_text(eta)}",
                err=True,
            )


def _eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "ETA -"
    seconds = round(seconds)
    if seconds >= 3600:
        return f"ETA {seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"ETA {seconds // 60}:{seconds % 60:02d}"
