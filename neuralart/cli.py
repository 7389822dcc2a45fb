"""The command line: parses, resolves configuration, draws progress, maps errors to exit codes.

The only module that prints. Heavy modules (torch and everything that imports it) are
imported inside the commands so that ``neuralart --help`` and ``--version`` start fast.
Exit codes: 0 success, 1 input or configuration error, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from neuralart import __version__
from neuralart.config import Config
from neuralart.errors import NeuralartError

if TYPE_CHECKING:
    from neuralart.optimize import StepEvent
    from neuralart.transfer import TransferResult

app = typer.Typer(
    name="neuralart",
    help="Repaint a photograph in the style of a painting (VGG-19 feature optimisation).",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
presets_app = typer.Typer(
    help="List and show the bundled presets.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(presets_app, name="presets")


class PreserveColor(str, Enum):
    none = "none"
    luminance = "luminance"
    histogram = "histogram"


class Pooling(str, Enum):
    average = "average"
    max = "max"


def _err(message: str) -> None:
    """One line on stderr, red on a terminal."""
    if sys.stderr.isatty():
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    else:
        typer.echo(f"error: {message}", err=True)


def _warn(message: str) -> None:
    if sys.stderr.isatty():
        typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)
    else:
        typer.echo(f"warning: {message}", err=True)


@contextmanager
def _user_errors() -> Iterator[None]:
    """NeuralartError -> one line and exit 1; Ctrl-C -> exit 130."""
    try:
        yield
    except NeuralartError as exc:
        _err(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        _err("interrupted")
        raise typer.Exit(130) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"neuralart {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Repaint a photograph in the style of a painting (VGG-19 feature optimisation)."""


# --------------------------------------------------------------------------- progress


class _Progress:
    """A rich progress bar on a terminal; sparse plain lines otherwise; nothing if quiet.

    ``begin`` starts a new bar (one per run); the instance is the optimiser's callback.
    """

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.bar: Any = None
        self.task: Any = None
        self.label = "optimising"
        self.last_print = 0.0

    def __enter__(self) -> _Progress:
        if self.quiet or not self.tty:
            return self
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]} it/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)

    def begin(self, label: str, total: int) -> None:
        self.label = label
        self.last_print = 0.0
        if self.bar is not None:
            self.task = self.bar.add_task(label, total=total, loss="-", rate="-")

    def __call__(self, event: StepEvent) -> None:
        if self.quiet:
            return
        rate = event.iteration / event.elapsed if event.elapsed > 0 else 0.0
        desc = (
            self.label if event.levels == 1 else f"{self.label} level {event.level}/{event.levels}"
        )
        if self.bar is not None:
            self.bar.update(
                self.task,
                completed=(event.level - 1) * event.iterations + event.iteration,
                total=event.iterations * event.levels,
                description=desc,
                loss=f"{event.loss:.4g}",
                rate=f"{rate:.2f}",
            )
            return
        now = time.monotonic()
        first_or_last = event.iteration in (1, event.iterations)
        if first_or_last or now - self.last_print >= 10.0:
            self.last_print = now
            eta = (event.iterations - event.iteration) / rate if rate > 0 else 0.0
            typer.echo(
                f"{desc}: iteration {event.iteration}/{event.iterations}  "
                f"loss {event.loss:.4g}  {rate:.2f} it/s  ETA {eta:.0f}s",
                err=True,
            )


# --------------------------------------------------------------------------- transfer


def _overrides(**flags: Any) -> dict[str, Any]:
    """Command-line flags -> a nested override mapping (only the flags given)."""
    where = {
        "size": ("size",),
        "iterations": ("optimizer", "iterations"),
        "style_weight": ("style", "weight"),
        "content_weight": ("content", "weight"),
        "tv_weight": ("tv_weight",),
        "init": ("optimizer", "init"),
        "seed": ("seed",),
        "device": ("device",),
        "weights": ("network", "weights"),
        "pooling": ("network", "pooling"),
        "normalize": ("network", "normalize"),
        "mrf_rotations": ("style", "rotations"),
        "mrf_scales": ("style", "scales"),
        "levels": ("optimizer", "levels"),
        "style_blend": ("style", "blend"),
        "style_scale": ("style", "scale"),
        "preserve_color": ("preserve_color",),
    }
    out: dict[str, Any] = {}
    for name, value in flags.items():
        if value is None:
            continue
        if isinstance(value, Enum):
            value = value.value
        *parents, leaf = where[name]
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _default_output(content: Path, styles: list[Path], preset: str) -> Path:
    tag = Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset
    style_part = "+".join(s.stem for s in styles)
    return Path(f"{content.stem}_{style_part}_{tag}.png")


# Options shared by several commands.
PresetOpt = Annotated[
    str, typer.Option("--preset", "-p", help="Bundled preset name or a YAML file.")
]
IterationsOpt = Annotated[
    int | None, typer.Option("--iterations", "-n", help="L-BFGS iterations (per level).")
]
TvOpt = Annotated[float | None, typer.Option(help="Weight of total variation.")]
SeedOpt = Annotated[int | None, typer.Option(help="Random seed (recorded in the output).")]
DeviceOpt = Annotated[
    str | None, typer.Option(help="auto (cuda, then mps, then cpu), cpu, cuda[:N] or mps.")
]
WeightsOpt = Annotated[
    str | None, typer.Option(help="VGG-19 weights: embedded, torchvision, or a .pth file.")
]
LevelsOpt = Annotated[
    int | None, typer.Option(help="Coarse-to-fine levels (each at twice the size).")
]
RotationsOpt = Annotated[
    int | None, typer.Option(help="CNN-MRF: rotated style copies on each side (pi/24 steps).")
]
ScalesOpt = Annotated[
    int | None, typer.Option(help="CNN-MRF: scaled style copies on each side (x1.05 steps).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON summary line on stdout.")]


@app.command()
def transfer(
    content: Annotated[
        Path,
        typer.Argument(help="The photograph to repaint; a folder or a quoted glob for a batch."),
    ],
    style: Annotated[list[Path], typer.Argument(help="The painting (style image).")],
    preset: PresetOpt = "classic",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output file (PNG by default; format by suffix)."),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(help="Batch: the folder for the outputs [default: the current folder]."),
    ] = None,
    skip_existing: Annotated[
        bool, typer.Option(help="Batch: leave contents whose output already exists.")
    ] = False,
    size: Annotated[
        int | None, typer.Option(help="Long edge of the output in pixels [default: 512].")
    ] = None,
    iterations: IterationsOpt = None,
    style_weight: Annotated[float | None, typer.Option(help="Weight of the style loss.")] = None,
    style_blend: Annotated[
        str | None,
        typer.Option(help="Weights of several style images, e.g. 0.7,0.3 [default: equal]."),
    ] = None,
    style_scale: Annotated[
        float | None,
        typer.Option(help="Style image size relative to the output (1 = same long edge)."),
    ] = None,
    content_weight: Annotated[
        float | None, typer.Option(help="Weight of the content loss.")
    ] = None,
    tv_weight: TvOpt = None,
    init: Annotated[
        str | None, typer.Option(help="Start from 'content', 'noise' or an image file.")
    ] = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    weights: WeightsOpt = None,
    pooling: Annotated[Pooling | None, typer.Option(help="Pooling between blocks.")] = None,
    normalize: Annotated[
        bool | None,
        typer.Option(
            "--normalize/--no-normalize", help="Use Gatys' normalised network.", show_default=False
        ),
    ] = None,
    levels: LevelsOpt = None,
    mrf_rotations: RotationsOpt = None,
    mrf_scales: ScalesOpt = None,
    preserve_color: Annotated[
        PreserveColor | None,
        typer.Option(
            help="Keep the photograph's colours: transfer on luminance only, or match the "
            "style's colours to the photograph's first."
        ),
    ] = None,
    save_every: Annotated[
        int, typer.Option(min=0, help="Also save the picture every N iterations (0: never).")
    ] = 0,
    frames_dir: Annotated[
        Path | None,
        typer.Option(help="Folder for --save-every frames [default: OUTPUT-STEM_frames]."),
    ] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Repaint CONTENT in the style of STYLE."""
    with _user_errors():
        from neuralart.presets import resolve

        config, provenance = resolve(
            preset,
            _overrides(
                size=size,
                iterations=iterations,
                style_weight=style_weight,
                content_weight=content_weight,
                tv_weight=tv_weight,
                init=init,
                seed=seed,
                device=device,
                weights=weights,
                pooling=pooling,
                normalize=normalize,
                levels=levels,
                mrf_rotations=mrf_rotations,
                mrf_scales=mrf_scales,
                style_blend=_parse_blend(style_blend) if style_blend is not None else None,
                style_scale=style_scale,
                preserve_color=preserve_color,
            ),
        )
        batch = _batch_contents(content)
        if batch is None:
            out_path = output if output is not None else _default_output(content, style, preset)
            frames = None
            if save_every > 0:
                frames = (save_every, frames_dir or out_path.with_name(f"{out_path.stem}_frames"))
            _run_and_save(
                content, style, config, provenance, preset, out_path, quiet, as_json, frames=frames
            )
            return
        if output is not None:
            raise NeuralartError("a batch writes one file per content: use --out-dir, not -o")
        if save_every > 0:
            raise NeuralartError("--save-every works on one content image, not on a batch")
        _run_batch(batch, style, config, provenance, preset, out_dir, skip_existing, quiet, as_json)


_GLOB_CHARS = ("*", "?", "[")


def _batch_contents(content: Path) -> list[Path] | None:
    """The content images of a batch (a folder or a glob), or None for a single file."""
    from neuralart.images import SUPPORTED_SUFFIXES

    text = str(content)
    if content.is_dir():
        files = [p for p in content.iterdir() if p.suffix.lower() in SUPPORTED_SUFFIXES]
    elif any(c in text for c in _GLOB_CHARS) and not content.exists():
        import glob

        files = [Path(p) for p in glob.glob(text) if Path(p).is_file()]
    else:
        return None
    if not files:
        raise NeuralartError(f"no content images found in {content}")
    return sorted(files)


def _run_batch(
    contents: list[Path],
    style: list[Path],
    config: Config,
    provenance: dict[str, str],
    preset: str,
    out_dir: Path | None,
    skip_existing: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Each content in turn with one network and one set of style targets; failures are
    reported and the rest go on; exit 1 at the end if any failed."""
    from neuralart.transfer import NetworkCache, pick_device

    _check_inputs(None, style)
    networks = NetworkCache(pick_device(config.device))
    style_cache: dict[Any, Any] = {}
    failed = 0
    for index, content in enumerate(contents, start=1):
        out_path = (out_dir or Path(".")) / _default_output(content, style, preset).name
        if skip_existing and out_path.exists():
            if as_json:
                typer.echo(json.dumps({"output": str(out_path), "skipped": True}))
            elif not quiet:
                typer.echo(
                    f"[{index}/{len(contents)}] {content}: skipped, {out_path} exists", err=True
                )
            continue
        if not quiet and not as_json:
            typer.echo(f"[{index}/{len(contents)}] {content}", err=True)
        try:
            _run_and_save(
                content,
                style,
                config,
                provenance,
                preset,
                out_path,
                quiet,
                as_json,
                network=networks.get(config),
                style_cache=style_cache,
            )
        except NeuralartError as exc:
            failed += 1
            _err(f"{content}: {exc}")
    if failed:
        _err(f"{failed} of {len(contents)} content images failed")
        raise typer.Exit(1)


def _run_and_save(
    content: Path | None,
    style: list[Path],
    config: Config,
    provenance: dict[str, str],
    preset: str,
    out_path: Path,
    quiet: bool,
    as_json: bool,
    output_size: tuple[int, int] | None = None,
    frames: tuple[int, Path] | None = None,
    network: Any = None,
    style_cache: dict[Any, Any] | None = None,
) -> None:
    """Check the paths, run one transfer (or texture), save it with its metadata, report.

    ``frames`` = (every, folder): also write the picture every so many iterations.
    """
    from neuralart.images import check_output_path, save_image

    _check_inputs(content, style)
    check_output_path(out_path)

    from neuralart.transfer import pick_device
    from neuralart.transfer import transfer as run_transfer

    dev = pick_device(config.device) if network is None else None
    label = "optimising" if content is not None else "synthesising"
    with _reported_warnings(quiet), _Progress(quiet or as_json) as progress:
        progress.begin(label, config.optimizer.iterations * config.optimizer.levels)
        result = run_transfer(
            content,
            style,
            config,
            device=dev,
            callback=progress,
            output_size=output_size,
            frame_every=frames[0] if frames else 0,
            frame_sink=_frame_writer(frames[1], config.optimizer.levels) if frames else None,
            network=network,
            style_cache=style_cache,
        )
    interrupted = bool(result.record.get("interrupted"))
    if interrupted:  # a second Ctrl-C while the picture so far is saved exits at once
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    elif "stopped" in result.record and not quiet:
        _warn(result.record["stopped"])
    metadata = {
        "neuralart": __version__,
        **({"content": str(content)} if content is not None else {"texture": True}),
        "style": [str(s) for s in style],
        "preset": preset,
        "partial": interrupted,
        **_run_metadata(result, provenance),
    }
    written = save_image(result.image, out_path, metadata=metadata)
    if interrupted:
        _err(f"interrupted: saved the picture so far to {written} (marked partial)")
        raise typer.Exit(130)
    if as_json:
        typer.echo(json.dumps(_summary(written, config.name, result)))
    elif not quiet:
        seconds = result.record["seconds"]
        typer.echo(f"wrote {written} ({seconds:.1f} s, device {result.record['device']})")


def _frame_writer(folder: Path, levels: int) -> Callable[[StepEvent, Any], None]:
    """Save each frame as folder/frame-NNNNN.png (frame-LL-NNNNN.png with levels)."""
    from neuralart.images import save_image

    def write(event: StepEvent, image: Any) -> None:
        level = f"{event.level:02d}-" if levels > 1 else ""
        save_image(image, folder / f"frame-{level}{event.iteration:05d}.png")

    return write


def _check_inputs(content: Path | None, styles: list[Path]) -> None:
    roles = [(content, "content image")] if content is not None else []
    for path, role in [*roles, *((s, "style image") for s in styles)]:
        if not path.exists():
            raise NeuralartError(f"{role} not found: {path}")


@contextmanager
def _reported_warnings(quiet: bool) -> Iterator[None]:
    """Collect the tool's warnings while the block runs; print each once afterwards."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            if not quiet:
                seen: set[str] = set()
                for w in caught:
                    text = str(w.message)
                    if w.category.__module__.startswith("neuralart") and text not in seen:
                        seen.add(text)
                        _warn(text)


_TIMINGS = ("seconds", "setup_seconds")


def _run_metadata(result: TransferResult, provenance: dict[str, str]) -> dict[str, Any]:
    """What goes into the output file: no timings, so that a seeded run is byte-identical."""
    record = {k: v for k, v in result.record.items() if k not in _TIMINGS}
    if "levels" in record:
        record["levels"] = [
            {k: v for k, v in level.items() if k not in _TIMINGS} for level in record["levels"]
        ]
    return {
        "seed": result.seed,
        "config": {**result.config.to_dict(), "seed": result.seed},
        "provenance": provenance,
        "record": record,
    }


def _summary(written: Path, preset: str, result: TransferResult) -> dict[str, Any]:
    return {
        "output": str(written),
        "preset": preset,
        "seed": result.seed,
        "seconds": result.record["seconds"],
        "iterations": result.record["iterations"],
        "final_losses": result.record["final_losses"],
    }


@app.command()
def compare(
    content: Annotated[Path, typer.Argument(help="The photograph to repaint.")],
    style: Annotated[list[Path], typer.Argument(help="The painting (style image).")],
    presets: Annotated[
        str | None,
        typer.Option(
            "--presets",
            help="Comma-separated preset names or YAML files [default: every bundled "
            "non-experimental preset].",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="The contact sheet (PNG by default).")
    ] = None,
    size: Annotated[
        int | None, typer.Option(help="Long edge of each picture [default: the presets'].")
    ] = None,
    iterations: IterationsOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    columns: Annotated[int, typer.Option(min=1, help="Pictures per row of the sheet.")] = 4,
    quiet: QuietOpt = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON line per preset on stdout.")
    ] = False,
) -> None:
    """Run several presets on the same pair and write one labelled contact sheet."""
    with _user_errors():
        from neuralart.images import check_output_path, load_image, resize_long_edge, save_image
        from neuralart.presets import list_presets, resolve

        if presets is None:
            names = [info.name for info in list_presets() if not info.experimental]
        else:
            names = [name.strip() for name in presets.split(",") if name.strip()]
            if not names:
                raise NeuralartError("--presets names no preset")
        overrides = _overrides(size=size, iterations=iterations, seed=seed, device=device)
        resolved = [resolve(name, overrides) for name in names]  # every preset checked first
        _check_inputs(content, style)
        out_path = output if output is not None else _default_output(content, style, "compare")
        check_output_path(out_path)

        from neuralart.transfer import compare as run_compare
        from neuralart.transfer import pick_device

        configs = [config for config, _ in resolved]
        dev = pick_device(configs[0].device)

        with _reported_warnings(quiet), _Progress(quiet or as_json) as progress:

            def on_start(index: int, config: Config) -> None:
                label = f"{names[index]} ({index + 1}/{len(names)})"
                progress.begin(label, config.optimizer.iterations * config.optimizer.levels)

            results = run_compare(
                content, style, configs, device=dev, on_start=on_start, callback=progress
            )
            long_edge = max(max(r.image.size) for r in results)
            cells = [("content", resize_long_edge(load_image(content), long_edge))]
            cells += [
                (f"style: {s.stem}", resize_long_edge(load_image(s), long_edge)) for s in style
            ]
        from neuralart.sheet import contact_sheet

        cells += [(name, r.image) for name, r in zip(names, results, strict=True)]
        sheet = contact_sheet(cells, columns=columns)
        metadata = {
            "neuralart": __version__,
            "content": str(content),
            "style": [str(s) for s in style],
            "presets": {
                name: _run_metadata(result, provenance)
                for name, result, (_, provenance) in zip(names, results, resolved, strict=True)
            },
        }
        written = save_image(sheet, out_path, metadata=metadata)
        if as_json:
            for name, result in zip(names, results, strict=True):
                typer.echo(json.dumps({**_summary(written, name, result), "sheet": str(written)}))
        elif not quiet:
            total = sum(r.record["seconds"] for r in results)
            typer.echo(f"wrote {written} ({len(results)} presets, {total:.1f} s)")


def _parse_blend(text: str) -> list[float]:
    """``0.7,0.3`` -> [0.7, 0.3]."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise NeuralartError(
            f"--style-blend must be numbers separated by commas, e.g. 0.7,0.3; got {text!r}"
        ) from None


def _parse_size(text: str) -> tuple[int, int]:
    """``N`` (square) or ``WxH`` -> (width, height)."""
    parts = text.lower().split("x")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or min(numbers, default=0) <= 0:
        raise NeuralartError(f"--size must be N or WxH with positive whole numbers, got {text!r}")
    return (numbers[0], numbers[-1])


@app.command()
def texture(
    style: Annotated[list[Path], typer.Argument(help="The image whose texture to synthesise.")],
    preset: PresetOpt = "classic",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output file (PNG by default).")
    ] = None,
    size: Annotated[
        str | None, typer.Option(help="Output size: N (square) or WxH [default: the preset's].")
    ] = None,
    iterations: IterationsOpt = None,
    tv_weight: TvOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    weights: WeightsOpt = None,
    levels: LevelsOpt = None,
    mrf_rotations: RotationsOpt = None,
    mrf_scales: ScalesOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Synthesise a texture from STYLE, starting from seeded noise (no content image)."""
    with _user_errors():
        from neuralart.presets import resolve

        config, provenance = resolve(
            preset,
            _overrides(
                iterations=iterations,
                tv_weight=tv_weight,
                seed=seed,
                device=device,
                weights=weights,
                levels=levels,
                mrf_rotations=mrf_rotations,
                mrf_scales=mrf_scales,
            ),
        )
        out_size = _parse_size(size) if size is not None else (config.size, config.size)
        tag = Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset
        out_path = output or Path(f"{'+'.join(s.stem for s in style)}_texture_{tag}.png")
        _run_and_save(None, style, config, provenance, preset, out_path, quiet, as_json, out_size)


# ---------------------------------------------------------------------------- presets


@presets_app.command("list")
def presets_list() -> None:
    """The bundled presets: name, the paper's Table 2 row, what it does."""
    with _user_errors():
        from rich.console import Console
        from rich.table import Table

        from neuralart.presets import list_presets

        table = Table(title="neuralart presets")
        table.add_column("name", style="bold")
        table.add_column("paper row")
        table.add_column("description")
        for info in list_presets():
            name = f"{info.name} (experimental)" if info.experimental else info.name
            table.add_row(name, info.paper_row, info.description)
        Console().print(table)


@presets_app.command("show")
def presets_show(
    name: Annotated[str, typer.Argument(help="Preset name or YAML file.")],
) -> None:
    """Print a preset's YAML."""
    with _user_errors():
        from neuralart.presets import preset_text

        typer.echo(preset_text(name), nl=False)


def main() -> None:
    """Console-script entry point."""
    app()
