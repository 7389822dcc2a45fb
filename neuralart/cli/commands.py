"""The commands: transfer, compare, score, texture, presets list/show, and the entry point.

Heavy modules (torch and everything that imports it) are imported inside the commands so
that ``neuralart --help`` and ``--version`` start fast.
"""

from __future__ import annotations

import json
import signal
import time
import warnings
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer

from neuralart import __version__
from neuralart.cli.output import Progress, error, reported_warnings, user_errors
from neuralart.cli.running import (
    batch_contents,
    check_inputs,
    check_out_dir,
    default_output,
    overrides,
    parse_batch_size,
    parse_size,
    run_and_save,
    run_batch,
    run_metadata,
    summary,
)
from neuralart.config import AUTO_LEVEL_EDGE, Config
from neuralart.errors import NeuralartError, NeuralartWarning
from neuralart.presets import DEFAULT_PRESET

# Options whose value may be left out, and the value they then take: `--ray` alone
# starts a local cluster, `--ray ADDRESS` joins one.
OPTIONAL_VALUES = {"--ray": "local"}


def fill_optional_values(args: list[str]) -> list[str]:
    """``--ray`` without an address after it (at the end, before another option, or
    before an image) -> ``--ray=local``."""
    from neuralart.cli.raybatch import looks_like_address

    out = list(args)
    for i, token in enumerate(out):
        if token == "--":
            break
        if token in OPTIONAL_VALUES and (i + 1 == len(out) or not looks_like_address(out[i + 1])):
            out[i] = f"{token}={OPTIONAL_VALUES[token]}"
    return out


class Group(typer.core.TyperGroup):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, fill_optional_values(args))


app = typer.Typer(
    cls=Group,
    name="neuralart",
    help="Repaint a photograph in the style of a painting (VGG-19 feature optimisation).",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

presets_app = typer.Typer(
    help="List and show the bundled presets.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
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


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


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


# ------------------------------------------------------------------------------ help

# The panels that group the options of transfer, texture and compare, in this order
# (options without a panel, such as --preset, --quiet and --json, come first).
OUTPUT = "Output"
STYLE = "Style and weights"
OPTIMISATION = "Optimisation"
NETWORK = "Network and device"
MRF = "CNN-MRF"
EXPERIMENTAL = "Experimental (paper §4)"
BATCH = "Batch"
PANELS = (OUTPUT, STYLE, OPTIMISATION, NETWORK, MRF, EXPERIMENTAL, BATCH)

DefaultSource = Literal["built-in", "preset", "either"]
# How each option's help states its default, by the configuration key the option sets:
# built-in: no bundled preset sets the key, so the default of neuralart/config.py applies;
# preset: every bundled preset sets it (classic does, and every preset starts from it);
# either: some presets set it, the others keep the default of neuralart/config.py.
# tests/test_cli.py holds these against the bundled presets.
HELP_DEFAULTS: dict[str, DefaultSource] = {}


def built_in_default(key: str) -> Any:
    """The default of a dotted configuration key, from the dataclasses of config.py."""
    node: Any = Config()
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _help(text: str, key: str, source: DefaultSource, shown: str | None = None) -> str:
    """``text`` with the option's effective default, derived from config.py."""
    HELP_DEFAULTS[key] = source
    if shown is None:
        value = built_in_default(key)
        shown = f"{value:g}" if isinstance(value, float) else str(value)
    default = {
        "built-in": shown,
        "preset": "the preset's",
        "either": f"the preset's, else {shown}",
    }[source]
    return rf"{text} \[default: {default}]"  # \[: a bracket, not rich markup


PresetOpt = Annotated[
    str, typer.Option("--preset", "-p", help="Bundled preset name or a YAML file.")
]

IterationsOpt = Annotated[
    str | None,
    typer.Option(
        "--iterations",
        "-n",
        help=_help(
            "L-BFGS iterations: N at the first level and half as many at each finer one, "
            "or one count per level (e.g. 300,100).",
            "optimizer.iterations",
            "either",
        ),
        rich_help_panel=OPTIMISATION,
    ),
]

TvOpt = Annotated[
    float | None,
    typer.Option(
        help=_help("Weight of total variation.", "tv_weight", "either"), rich_help_panel=STYLE
    ),
]

SeedOpt = Annotated[
    int | None,
    typer.Option(
        help=_help("Random seed.", "seed", "built-in", "a random one, recorded in the output"),
        rich_help_panel=OPTIMISATION,
    ),
]

DeviceOpt = Annotated[
    str | None,
    typer.Option(
        help=_help("auto (cuda, then mps, then cpu), cpu, cuda[:N] or mps.", "device", "built-in"),
        rich_help_panel=NETWORK,
    ),
]

PrecisionOpt = Annotated[
    Precision | None,
    typer.Option(
        help=_help(
            "fp32 (TF32 tensor cores on CUDA), or bf16: the network in bfloat16, "
            "statistics in float32.",
            "precision",
            "built-in",
        ),
        rich_help_panel=NETWORK,
    ),
]

WeightsOpt = Annotated[
    str | None,
    typer.Option(
        help=_help(
            "VGG-19 weights: embedded, torchvision, or a .pth file.", "network.weights", "built-in"
        ),
        rich_help_panel=NETWORK,
    ),
]

LevelsOpt = Annotated[
    str | None,
    typer.Option(
        "--levels",
        help=_help(
            "Coarse-to-fine levels, each at twice the size of the one before: a number, or "
            f"auto (halve until the first is at most {AUTO_LEVEL_EDGE} px).",
            "optimizer.levels",
            "either",
        ),
        rich_help_panel=OPTIMISATION,
    ),
]

RotatedCopiesOpt = Annotated[
    int | None,
    typer.Option(
        "--mrf-rotated-copies",
        help=_help(
            "Rotated copies of the style image on each side (steps of pi/24).",
            "style.rotated_copies",
            "built-in",
        ),
        rich_help_panel=MRF,
    ),
]

ScaledCopiesOpt = Annotated[
    int | None,
    typer.Option(
        "--mrf-scaled-copies",
        help=_help(
            "Scaled copies of the style image on each side (steps of x1.05).",
            "style.scaled_copies",
            "built-in",
        ),
        rich_help_panel=MRF,
    ),
]

# The names of the release before, still read (not shown in the help), with a warning.
TileOpt = Annotated[
    str | None,
    typer.Option(
        "--tile",
        help=_help(
            "Print sizes: run the network tile by tile, with the same objective. auto "
            "(only where the whole picture does not fit the free memory), off, or a tile "
            "size in pixels.",
            "tile",
            "built-in",
        ),
        rich_help_panel=NETWORK,
    ),
]

TileHaloOpt = Annotated[
    int | None,
    typer.Option(
        "--tile-halo",
        help=_help(
            "Pixels around each tile; less than the exact halo is faster but no longer "
            "exact (see the README).",
            "tile_halo",
            "built-in",
        ),
        rich_help_panel=NETWORK,
    ),
]

OldLevelsOpt = Annotated[str | None, typer.Option("--scales", hidden=True)]
OldRotationsOpt = Annotated[int | None, typer.Option("--mrf-rotations", hidden=True)]
OldScalesOpt = Annotated[int | None, typer.Option("--mrf-scales", hidden=True)]

QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON summary line on stdout.")]

T = TypeVar("T")


def _renamed_flag(new: T | None, old: T | None, new_flag: str, old_flag: str) -> T | None:
    """The value of an option given under its new or (with a warning) its old name."""
    if old is None:
        return new
    if new is not None:
        raise NeuralartError(f"{old_flag} is the old name of {new_flag}: give only {new_flag}")
    warnings.warn(
        f"{old_flag} is now called {new_flag}; the old name goes in the next release",
        NeuralartWarning,
        stacklevel=2,
    )
    return old


BitDepthOpt = Annotated[
    int,
    typer.Option(
        help="Bits per colour channel of the output: 8, or 16 for print (PNG or TIFF).",
        rich_help_panel=OUTPUT,
    ),
]

DpiOpt = Annotated[
    float | None,
    typer.Option(
        help=r"Resolution stored in the output (PNG, JPEG, TIFF), in dots per inch. "
        r"\[default: none stored]",
        rich_help_panel=OUTPUT,
    ),
]


@app.command()
def transfer(
    content: Annotated[
        Path,
        typer.Argument(help="The photograph to repaint; a folder or a quoted glob for a batch."),
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
            help=r"Output file, PNG unless its suffix says otherwise. "
            r"\[default: CONTENT_STYLE_PRESET.png]",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    size: Annotated[
        int | None,
        typer.Option(
            help=_help("Long edge of the output in pixels.", "size", "either"),
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    max_pixels: Annotated[
        int | None,
        typer.Option(
            help=_help("Refuse input images above this many pixels.", "max_pixels", "built-in"),
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    save_every: Annotated[
        int,
        typer.Option(
            min=0,
            help="Also save the picture every N iterations (0: never).",
            rich_help_panel=OUTPUT,
        ),
    ] = 0,
    frames_dir: Annotated[
        Path | None,
        typer.Option(
            help=r"Folder for --save-every frames. \[default: OUTPUT-STEM_frames]",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    bit_depth: BitDepthOpt = 8,
    dpi: DpiOpt = None,
    # Style and weights
    style_weight: Annotated[
        float | None,
        typer.Option(
            help=_help("Weight of the style loss.", "style.weight", "preset"),
            rich_help_panel=STYLE,
        ),
    ] = None,
    content_weight: Annotated[
        float | None,
        typer.Option(
            help=_help("Weight of the content loss.", "content.weight", "preset"),
            rich_help_panel=STYLE,
        ),
    ] = None,
    tv_weight: TvOpt = None,
    style_blend: Annotated[
        str | None,
        typer.Option(
            help=_help(
                "Weights of several style images, e.g. 0.7,0.3.", "style.blend", "built-in", "equal"
            ),
            rich_help_panel=STYLE,
        ),
    ] = None,
    style_scale: Annotated[
        float | None,
        typer.Option(
            help=_help(
                "Style image size relative to the output (1: the same long edge).",
                "style.image_scale",
                "built-in",
            ),
            rich_help_panel=STYLE,
        ),
    ] = None,
    preserve_color: Annotated[
        PreserveColor | None,
        typer.Option(
            help=_help(
                "Keep the photograph's colours: transfer on luminance only, or match the "
                "style's colours to the photograph's first.",
                "preserve_color",
                "built-in",
            ),
            rich_help_panel=STYLE,
        ),
    ] = None,
    # Optimisation
    iterations: IterationsOpt = None,
    levels: LevelsOpt = None,
    init: Annotated[
        str | None,
        typer.Option(
            help=_help(
                "Start from 'content', 'noise' or an image file.", "optimizer.init", "built-in"
            ),
            rich_help_panel=OPTIMISATION,
        ),
    ] = None,
    seed: SeedOpt = None,
    # Network and device
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    tile: TileOpt = None,
    tile_halo: TileHaloOpt = None,
    weights: WeightsOpt = None,
    pooling: Annotated[
        Pooling | None,
        typer.Option(
            help=_help("Pooling between blocks.", "network.pooling", "either"),
            rich_help_panel=NETWORK,
        ),
    ] = None,
    normalize: Annotated[
        bool | None,
        typer.Option(
            "--normalize/--no-normalize",
            help=_help(
                "Use Gatys' normalised network.", "network.normalize", "either", "--normalize"
            ),
            show_default=False,
            rich_help_panel=NETWORK,
        ),
    ] = None,
    # CNN-MRF
    mrf_rotated_copies: RotatedCopiesOpt = None,
    mrf_scaled_copies: ScaledCopiesOpt = None,
    # Experimental
    gradient_weighting: Annotated[
        GradientWeighting | None,
        typer.Option(
            help=_help(
                "Multiply the style gradient by a mask of the content's top activations, "
                "or by its activations (paper §4.1-4.2).",
                "style.gradient_weighting",
                "either",
            ),
            rich_help_panel=EXPERIMENTAL,
        ),
    ] = None,
    amplify_power: Annotated[
        float | None,
        typer.Option(
            help=_help(
                "With amplify: the power p of F(content)^p.", "style.amplify_power", "either"
            ),
            rich_help_panel=EXPERIMENTAL,
        ),
    ] = None,
    # Batch
    out_dir: Annotated[
        Path | None,
        typer.Option(
            help=r"The folder for the outputs. \[default: the current folder]",
            rich_help_panel=BATCH,
        ),
    ] = None,
    skip_existing: Annotated[
        bool,
        typer.Option(help="Leave contents whose output already exists.", rich_help_panel=BATCH),
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(
            help="Only the K-th of N disjoint parts of the batch (K/N, 1 ≤ K ≤ N); auto: "
            "from a Slurm job array's variables; auto/N: N parts, the index from Slurm or "
            "a Kubernetes indexed job (JOB_COMPLETION_INDEX). A file's part depends on its "
            "name alone. Ends with one JSON line: done, skipped, failed. "
            r"\[default: the whole batch]",
            rich_help_panel=BATCH,
        ),
    ] = None,
    batch_size: Annotated[
        str | None,
        typer.Option(
            help="Batch: optimise this many pictures of the same size together, one "
            "network pass for all (each keeps its own optimiser and result); auto: as many "
            "as the GPU's free memory holds, 1 on a CPU. "
            r"\[default: auto]",
            rich_help_panel=BATCH,
        ),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="[ADDRESS]",
            help="Spread the batch over the workers of a Ray cluster (needs "
            "neuralart[ray]): --ray alone starts one on this machine; --ray=ADDRESS "
            "(host:port, ray://host:port or auto) joins one. The output folder must be "
            "one that every worker can reach. "
            r"\[default: no Ray, one picture after another here]",
            rich_help_panel=BATCH,
        ),
    ] = None,
    ray_workers: Annotated[
        int | None,
        typer.Option(
            help="With --ray: how many workers. "
            r"\[default: one per GPU of the cluster, else one per CPU]",
            rich_help_panel=BATCH,
        ),
    ] = None,
    scales: OldLevelsOpt = None,
    mrf_rotations: OldRotationsOpt = None,
    mrf_scales: OldScalesOpt = None,
) -> None:
    """Repaint CONTENT in the style of STYLE."""
    with user_errors():
        from neuralart.presets import resolve

        with reported_warnings(quiet):
            levels = _renamed_flag(levels, scales, "--levels", "--scales")
            rotated = _renamed_flag(
                mrf_rotated_copies, mrf_rotations, "--mrf-rotated-copies", "--mrf-rotations"
            )
            scaled = _renamed_flag(
                mrf_scaled_copies, mrf_scales, "--mrf-scaled-copies", "--mrf-scales"
            )
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
                    levels=levels,
                    mrf_rotated_copies=rotated,
                    mrf_scaled_copies=scaled,
                    style_blend=style_blend,
                    style_scale=style_scale,
                    preserve_color=preserve_color,
                    max_pixels=max_pixels,
                    gradient_weighting=gradient_weighting,
                    amplify_power=amplify_power,
                    tile=tile,
                    tile_halo=tile_halo,
                ),
            )
        if ray is not None:
            from neuralart.cli.raybatch import check_address

            ray = check_address(ray)
        elif ray_workers is not None:
            raise NeuralartError("--ray-workers is for a batch run with --ray")
        together = parse_batch_size(batch_size)
        if out_dir is not None:
            check_out_dir(out_dir)
        batch = batch_contents(content)
        chosen = None
        if shard is not None:
            import os

            from neuralart.cli.shards import parse_shard, select

            if batch is None:
                raise NeuralartError("--shard splits a batch: give a folder or a quoted glob")
            chosen = parse_shard(shard, os.environ)
            total = len(batch)
            batch = select(batch, chosen)
            if not quiet:
                typer.echo(
                    f"shard {chosen} from {chosen.source}: {len(batch)} of {total} content images",
                    err=True,
                )
        if batch is None and ray is not None:
            raise NeuralartError("--ray spreads a batch: give a folder or a quoted glob")
        if batch is None:
            out_path = output if output is not None else default_output(content, style, preset)
            frames = None
            if save_every > 0:
                frames = (save_every, frames_dir or out_path.with_name(f"{out_path.stem}_frames"))
            run_and_save(
                content,
                style,
                config,
                provenance,
                preset,
                out_path,
                quiet,
                as_json,
                frames=frames,
                bit_depth=bit_depth,
                dpi=dpi,
            )
            return
        if output is not None:
            raise NeuralartError("a batch writes one file per content: use --out-dir, not -o")
        if save_every > 0:
            raise NeuralartError("--save-every works on one content image, not on a batch")
        batch_args = (batch, style, config, provenance, preset, out_dir, skip_existing)
        shard_name = None if chosen is None else str(chosen)
        options: dict[str, Any] = {"bit_depth": bit_depth, "dpi": dpi, "shard": shard_name}
        if ray is not None and batch_size is not None:
            raise NeuralartError("--batch-size is for the local batch; --ray paints one at a time")
        if ray is not None:
            from neuralart.cli.raybatch import run_ray_batch

            run_ray_batch(*batch_args, quiet, as_json, address=ray, workers=ray_workers, **options)
            return
        run_batch(*batch_args, quiet, as_json, **options, batch_size=together)


@app.command()
def compare(
    content: Annotated[Path, typer.Argument(help="The photograph to repaint.")],
    style: Annotated[list[Path], typer.Argument(help="The painting (style image).")],
    presets: Annotated[
        str | None,
        typer.Option(
            "--presets",
            help=r"Comma-separated preset names or YAML files. "
            r"\[default: every bundled preset but the experimental ones]",
        ),
    ] = None,
    quiet: QuietOpt = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON line per preset on stdout.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help=r"The contact sheet, PNG unless its suffix says otherwise. "
            r"\[default: CONTENT_STYLE_compare.png]",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    size: Annotated[
        int | None,
        typer.Option(
            help=_help("Long edge of each picture.", "size", "either"), rich_help_panel=OUTPUT
        ),
    ] = None,
    columns: Annotated[
        int, typer.Option(min=1, help="Pictures per row of the sheet.", rich_help_panel=OUTPUT)
    ] = 4,
    iterations: IterationsOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    batch_size: Annotated[
        str | None,
        typer.Option(
            help="Optimise this many neighbouring presets together, one network pass for "
            "all (each keeps its own objective, optimiser and picture; presets that need "
            "another network, precision, level sizes or tiles run alone); auto: as many as "
            "the GPU's free memory holds, 1 on a CPU. "
            r"\[default: auto]",
            rich_help_panel=NETWORK,
        ),
    ] = None,
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
        with reported_warnings(quiet):
            resolved = [resolve(name, flags) for name in names]  # every preset checked first
        check_inputs(content, style)
        out_path = output if output is not None else default_output(content, style, "compare")
        check_output_path(out_path)

        from neuralart.batch import compare as run_compare
        from neuralart.batch import compare_batch_size
        from neuralart.transfer import pick_device

        asked = parse_batch_size(batch_size)
        configs = [config for config, _ in resolved]
        dev = pick_device(configs[0].device)
        together = compare_batch_size(asked, content, configs, dev)
        started = time.perf_counter()

        with reported_warnings(quiet), Progress(quiet or as_json) as progress:

            def on_start(indices: Sequence[int]) -> None:
                first, last = indices[0] + 1, indices[-1] + 1
                which = ", ".join(names[i] for i in indices)
                count = f"{first}/{len(names)}" if first == last else f"{first}-{last}/{len(names)}"
                label = f"{which} ({count})"
                progress.begin(
                    label,
                    max(sum(configs[i].optimizer.level_iterations(configs[i].size))
                        for i in indices),
                )  # fmt: skip

            comparison = run_compare(
                content,
                style,
                configs,
                device=dev,
                batch_size=together,
                on_start=on_start,
                callback=progress,
            )
            results = comparison.results
            if comparison.interrupted:  # a second Ctrl-C while the sheet is saved exits
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                if not results:
                    raise KeyboardInterrupt
            long_edge = max(max(r.image.size) for r in results)
            cells = [("content", resize_long_edge(load_image(content), long_edge))]
            cells += [
                (f"style: {s.stem}", resize_long_edge(load_image(s), long_edge)) for s in style
            ]
        from neuralart.sheet import contact_sheet

        names = names[: len(results)]  # after Ctrl-C: those that ran
        cells += [(name, r.image) for name, r in zip(names, results, strict=True)]
        sheet = contact_sheet(cells, columns=columns)
        metadata = {
            "neuralart": __version__,
            "content": str(content),
            "style": [str(s) for s in style],
            "partial": comparison.interrupted,
            "presets": {
                name: run_metadata(result, provenance)
                for name, result, (_, provenance) in zip(
                    names, results, resolved[: len(results)], strict=True
                )
            },
        }
        written = save_image(sheet, out_path, metadata=metadata)
        if comparison.interrupted:
            error(
                f"interrupted: saved the sheet so far to {written} ({len(results)} of "
                f"{len(resolved)} presets, marked partial)"
            )
            raise typer.Exit(130)
        if as_json:
            for name, result in zip(names, results, strict=True):
                typer.echo(json.dumps({**summary(written, name, result), "sheet": str(written)}))
        elif not quiet:
            total = time.perf_counter() - started
            typer.echo(f"wrote {written} ({len(results)} presets, {total:.1f} s)")


@app.command()
def score(
    result: Annotated[
        Path,
        typer.Argument(
            help="The picture to score (any image file, from any tool), or a folder of them."
        ),
    ],
    content: Annotated[
        Path,
        typer.Argument(
            help="Its photograph; with a folder of results, a folder of photographs: each "
            "result goes with the photograph whose name begins its name."
        ),
    ],
    style: Annotated[list[Path], typer.Argument(help="The painting(s) (style images).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON line per picture on stdout.")
    ] = False,
    quiet: QuietOpt = False,
    size: Annotated[int, typer.Option(help="Long edge at which every picture is scored.")] = 512,
    seed: Annotated[
        int, typer.Option(help="Seed of the random directions of the style distance.")
    ] = 0,
    references: Annotated[
        bool,
        typer.Option(
            "--references/--no-references",
            help="Also score the photograph itself and its plain colour transfer.",
        ),
    ] = True,
    device: DeviceOpt = None,
) -> None:
    """How far a picture is from its style and from its photograph (VGG-19 figures).

    style: sliced Wasserstein distance of conv1_1..conv5_1 to the style's activations;
    colour: the same for RGB pixels (8-bit levels); ssim: structural similarity of the
    luminance to the photograph's; content: relative conv4_2 distance to the photograph's.
    """
    with user_errors(), reported_warnings(quiet):
        from neuralart.cli.scoring import run_score

        run_score(
            result,
            content,
            style,
            size=size,
            seed=seed,
            device=device or "auto",
            references=references,
            as_json=as_json,
            quiet=quiet,
        )


@app.command()
def texture(
    style: Annotated[list[Path], typer.Argument(help="The image whose texture to synthesise.")],
    preset: PresetOpt = DEFAULT_PRESET,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help=r"Output file, PNG unless its suffix says otherwise. "
            r"\[default: STYLE_texture_PRESET.png]",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    size: Annotated[
        str | None,
        typer.Option(
            help=_help("Output size: N (square) or WxH.", "size", "either"),
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    tv_weight: TvOpt = None,
    iterations: IterationsOpt = None,
    levels: LevelsOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    tile: TileOpt = None,
    tile_halo: TileHaloOpt = None,
    weights: WeightsOpt = None,
    mrf_rotated_copies: RotatedCopiesOpt = None,
    mrf_scaled_copies: ScaledCopiesOpt = None,
    scales: OldLevelsOpt = None,
    mrf_rotations: OldRotationsOpt = None,
    mrf_scales: OldScalesOpt = None,
    bit_depth: BitDepthOpt = 8,
    dpi: DpiOpt = None,
) -> None:
    """Synthesise a texture from STYLE, starting from seeded noise (no content image)."""
    with user_errors():
        from neuralart.presets import resolve

        with reported_warnings(quiet):
            levels = _renamed_flag(levels, scales, "--levels", "--scales")
            rotated = _renamed_flag(
                mrf_rotated_copies, mrf_rotations, "--mrf-rotated-copies", "--mrf-rotations"
            )
            scaled = _renamed_flag(
                mrf_scaled_copies, mrf_scales, "--mrf-scaled-copies", "--mrf-scales"
            )
            config, provenance = resolve(
                preset,
                overrides(
                    iterations=iterations,
                    tv_weight=tv_weight,
                    seed=seed,
                    device=device,
                    precision=precision,
                    weights=weights,
                    levels=levels,
                    mrf_rotated_copies=rotated,
                    mrf_scaled_copies=scaled,
                    tile=tile,
                    tile_halo=tile_halo,
                ),
            )
        out_size = parse_size(size) if size is not None else (config.size, config.size)
        tag = Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset
        out_path = output or Path(f"{'+'.join(s.stem for s in style)}_texture_{tag}.png")
        run_and_save(
            None,
            style,
            config,
            provenance,
            preset,
            out_path,
            quiet,
            as_json,
            out_size,
            bit_depth=bit_depth,
            dpi=dpi,
        )


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
    raw: Annotated[
        bool,
        typer.Option("--raw", help="Print the file as written instead of the resolved preset."),
    ] = False,
) -> None:
    """Print a preset as resolved: every key, inherited and built-in ones included."""
    with user_errors():
        from neuralart.presets import preset_text

        if raw:
            typer.echo(preset_text(name), nl=False)
            return
        from neuralart.presets import preset_chain, resolve

        with reported_warnings(False):
            chain = preset_chain(name)
            config, _ = resolve(name)
        parents = [preset.label for preset in reversed(chain[:-1])]
        if parents:
            extends = f"extends {parents[0]}" + "".join(f", which extends {p}" for p in parents[1:])
        else:
            extends = "extends no preset (it starts from the built-in defaults)"
        typer.echo(f"# {chain[-1].label}, resolved: {extends}")
        typer.echo(f"# the file as written: neuralart presets show --raw {name}")
        typer.echo(_yaml(config.to_dict()), nl=False)


def _yaml(data: dict[str, Any]) -> str:
    """YAML as the preset files are written: sections as blocks, lists on one line."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def flow_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
        return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)

    Dumper.add_representer(list, flow_list)
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=1000)


def main() -> None:
    """Console-script entry point."""
    app()
