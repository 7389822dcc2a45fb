"""The commands: transfer, compare, texture, presets list/show, and the entry point.

Heavy modules (torch and everything that imports it) are imported inside the commands so
that ``neuralart --help`` and ``--version`` start fast.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from neuralart import __version__
from neuralart.cli.output import Progress, reported_warnings, user_errors
from neuralart.cli.running import (
    batch_contents,
    check_inputs,
    default_output,
    overrides,
    parse_size,
    run_and_save,
    run_batch,
    run_metadata,
    summary,
)
from neuralart.config import Config
from neuralart.errors import NeuralartError

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


class GradientWeighting(str, Enum):
    none = "none"
    mask = "mask"
    amplify = "amplify"


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

PresetOpt = Annotated[
    str, typer.Option("--preset", "-p", help="Bundled preset name or a YAML file.")
]

IterationsOpt = Annotated[
    str | None,
    typer.Option(
        "--iterations",
        "-n",
        help="L-BFGS iterations: N at the first level and half as many at each finer one, "
        "or one count per level (e.g. 300,100) [default: the preset's, 500].",
    ),
]

TvOpt = Annotated[float | None, typer.Option(help="Weight of total variation.")]

SeedOpt = Annotated[int | None, typer.Option(help="Random seed (recorded in the output).")]

DeviceOpt = Annotated[
    str | None, typer.Option(help="auto (cuda, then mps, then cpu), cpu, cuda[:N] or mps.")
]


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


PrecisionOpt = Annotated[
    Precision | None,
    typer.Option(
        help="fp32 (TF32 tensor cores on CUDA), or bf16: the network in bfloat16, "
        "statistics in float32 [default: fp32]."
    ),
]

WeightsOpt = Annotated[
    str | None, typer.Option(help="VGG-19 weights: embedded, torchvision, or a .pth file.")
]

LevelsOpt = Annotated[
    str | None,
    typer.Option(
        "--scales",
        "--levels",
        help="Coarse-to-fine levels, each at twice the size of the one before: a number, "
        "or auto (halve until the first is at most 768 px) [default: auto].",
    ),
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
    precision: PrecisionOpt = None,
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
    max_pixels: Annotated[
        int | None,
        typer.Option(help="Refuse input images above this many pixels [default: 100000000]."),
    ] = None,
    preserve_color: Annotated[
        PreserveColor | None,
        typer.Option(
            help="Keep the photograph's colours: transfer on luminance only, or match the "
            "style's colours to the photograph's first."
        ),
    ] = None,
    gradient_weighting: Annotated[
        GradientWeighting | None,
        typer.Option(
            help="Style gradient times the content's top-activation mask or its "
            "activations (paper §4.1-4.2)."
        ),
    ] = None,
    amplify_power: Annotated[
        float | None, typer.Option(help="With amplify: the power p of F(content)^p [default: 1].")
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
    with user_errors():
        from neuralart.presets import resolve

        config, provenance = resolve(
            preset,
            overrides(
                size=size,
                iterations=iterations,
                style_weight=style_weight,
                content_weight=content_weight,
                tv_weight=tv_weight,
                init=init,
                seed=seed,
                device=device,
                precision=precision,
                weights=weights,
                pooling=pooling,
                normalize=normalize,
                scales=levels,
                mrf_rotations=mrf_rotations,
                mrf_scales=mrf_scales,
                style_blend=style_blend,
                style_scale=style_scale,
                preserve_color=preserve_color,
                max_pixels=max_pixels,
                gradient_weighting=gradient_weighting,
                amplify_power=amplify_power,
            ),
        )
        batch = batch_contents(content)
        if batch is None:
            out_path = output if output is not None else default_output(content, style, preset)
            frames = None
            if save_every > 0:
                frames = (save_every, frames_dir or out_path.with_name(f"{out_path.stem}_frames"))
            run_and_save(
                content, style, config, provenance, preset, out_path, quiet, as_json, frames=frames
            )
            return
        if output is not None:
            raise NeuralartError("a batch writes one file per content: use --out-dir, not -o")
        if save_every > 0:
            raise NeuralartError("--save-every works on one content image, not on a batch")
        run_batch(batch, style, config, provenance, preset, out_dir, skip_existing, quiet, as_json)


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
    precision: PrecisionOpt = None,
    columns: Annotated[int, typer.Option(min=1, help="Pictures per row of the sheet.")] = 4,
    quiet: QuietOpt = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON line per preset on stdout.")
    ] = False,
) -> None:
    """Run several presets on the same pair and write one labelled contact sheet."""
    with user_errors():
        from neuralart.images import check_output_path, load_image, resize_long_edge, save_image
        from neuralart.presets import list_presets, resolve

        if presets is None:
            names = [info.name for info in list_presets() if not info.experimental]
        else:
            names = [name.strip() for name in presets.split(",") if name.strip()]
            if not names:
                raise NeuralartError("--presets names no preset")
        flags = overrides(
            size=size,
            iterations=iterations,
            seed=seed,
            device=device,
            precision=precision,
        )
        resolved = [resolve(name, flags) for name in names]  # every preset checked first
        check_inputs(content, style)
        out_path = output if output is not None else default_output(content, style, "compare")
        check_output_path(out_path)

        from neuralart.transfer import compare as run_compare
        from neuralart.transfer import pick_device

        configs = [config for config, _ in resolved]
        dev = pick_device(configs[0].device)

        with reported_warnings(quiet), Progress(quiet or as_json) as progress:

            def on_start(index: int, config: Config) -> None:
                label = f"{names[index]} ({index + 1}/{len(names)})"
                progress.begin(label, sum(config.optimizer.level_iterations(config.size)))

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
                name: run_metadata(result, provenance)
                for name, result, (_, provenance) in zip(names, results, resolved, strict=True)
            },
        }
        written = save_image(sheet, out_path, metadata=metadata)
        if as_json:
            for name, result in zip(names, results, strict=True):
                typer.echo(json.dumps({**summary(written, name, result), "sheet": str(written)}))
        elif not quiet:
            total = sum(r.record["seconds"] for r in results)
            typer.echo(f"wrote {written} ({len(results)} presets, {total:.1f} s)")


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
    precision: PrecisionOpt = None,
    weights: WeightsOpt = None,
    levels: LevelsOpt = None,
    mrf_rotations: RotationsOpt = None,
    mrf_scales: ScalesOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Synthesise a texture from STYLE, starting from seeded noise (no content image)."""
    with user_errors():
        from neuralart.presets import resolve

        config, provenance = resolve(
            preset,
            overrides(
                iterations=iterations,
                tv_weight=tv_weight,
                seed=seed,
                device=device,
                precision=precision,
                weights=weights,
                scales=levels,
                mrf_rotations=mrf_rotations,
                mrf_scales=mrf_scales,
            ),
        )
        out_size = parse_size(size) if size is not None else (config.size, config.size)
        tag = Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset
        out_path = output or Path(f"{'+'.join(s.stem for s in style)}_texture_{tag}.png")
        run_and_save(None, style, config, provenance, preset, out_path, quiet, as_json, out_size)


# ---------------------------------------------------------------------------- presets


@presets_app.command("list")
def presets_list() -> None:
    """The bundled presets: name, the paper's Table 2 row, what it does."""
    with user_errors():
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
    with user_errors():
        from neuralart.presets import preset_text

        typer.echo(preset_text(name), nl=False)


def main() -> None:
    """Console-script entry point."""
    app()
