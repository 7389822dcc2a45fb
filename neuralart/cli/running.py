"""Running commands: flags to overrides, one run saved with its metadata, batches."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable
from contextlib import nullcontext
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from neuralart import __version__
from neuralart.cli.output import Progress, error, reported_warnings, warn
from neuralart.config import Config
from neuralart.errors import NeuralartError

if TYPE_CHECKING:
    from neuralart.optimize import StepEvent
    from neuralart.transfer import TransferResult


def overrides(**flags: Any) -> dict[str, Any]:
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
        "precision": ("precision",),
        "weights": ("network", "weights"),
        "pooling": ("network", "pooling"),
        "normalize": ("network", "normalize"),
        "mrf_rotated_copies": ("style", "rotated_copies"),
        "mrf_scaled_copies": ("style", "scaled_copies"),
        "levels": ("optimizer", "levels"),
        "style_blend": ("style", "blend"),
        "style_scale": ("style", "image_scale"),
        "preserve_color": ("preserve_color",),
        "max_pixels": ("max_pixels",),
        "gradient_weighting": ("style", "gradient_weighting"),
        "amplify_power": ("style", "amplify_power"),
        "tile": ("tile",),
        "tile_halo": ("tile_halo",),
    }
    # Flags typed as text on the command line, checked and converted here.
    parsers: dict[str, Callable[[str], Any]] = {
        "iterations": parse_iterations,
        "levels": parse_levels,
        "style_blend": parse_blend,
        "tile": parse_tile,
    }
    out: dict[str, Any] = {}
    for name, value in flags.items():
        if value is None:
            continue
        if isinstance(value, Enum):
            value = value.value
        if isinstance(value, str) and name in parsers:
            value = parsers[name](value)
        *parents, leaf = where[name]
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


def check_out_dir(out_dir: Path) -> None:
    """A folder on a filesystem, not an object store's URL (s3://, gs://, ...): the
    outputs are written as files, atomically, by renaming a finished temporary file."""
    if _URL.match(str(out_dir)):
        scheme = str(out_dir).split(":")[0]
        raise NeuralartError(
            f"--out-dir {scheme}://...: object stores are not supported; give a folder "
            "(with --ray, one every worker can reach: a shared filesystem or a mounted bucket)"
        )


def default_output(content: Path, styles: list[Path], preset: str) -> Path:
    tag = Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset
    style_part = "+".join(s.stem for s in styles)
    return Path(f"{content.stem}_{style_part}_{tag}.png")


# Options shared by several commands.

_GLOB_CHARS = ("*", "?", "[")


def batch_contents(content: Path) -> list[Path] | None:
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


def run_batch(
    contents: list[Path],
    style: list[Path],
    config: Config,
    provenance: dict[str, str],
    preset: str,
    out_dir: Path | None,
    skip_existing: bool,
    quiet: bool,
    as_json: bool,
    *,
    bit_depth: int = 8,
    dpi: float | None = None,
    shard: str | None = None,
    batch_size: int | str = 1,
) -> None:
    """Each content in turn with one network and one set of style targets; failures are
    reported and the rest go on; exit 1 at the end if any failed. With ``shard`` (K/N),
    one JSON line at the end on stdout: the shard, done, skipped, failed. ``batch_size``
    (a number or ``auto``, see :func:`neuralart.batch.batch_size`): contents whose
    pictures come out at the same size are optimised that many at a time."""
    from neuralart.transfer import NetworkCache, pick_device

    check_inputs(None, style)
    networks = NetworkCache(pick_device(config.device))
    style_cache: dict[Any, Any] = {}
    failed = skipped = 0
    todo: list[tuple[int, Path, Path]] = []
    for index, content in enumerate(contents, start=1):
        out_path = (out_dir or Path(".")) / default_output(content, style, preset).name
        if skip_existing and out_path.exists():
            skipped += 1
            if as_json:
                typer.echo(json.dumps({"output": str(out_path), "skipped": True}))
            elif not quiet:
                typer.echo(
                    f"[{index}/{len(contents)}] {content}: skipped, {out_path} exists", err=True
                )
            continue
        todo.append((index, content, out_path))
    if batch_size != 1 and todo:
        todo, failed = run_batches(
            todo, len(contents), style, config, provenance, preset, quiet, as_json,
            networks, style_cache, batch_size, bit_depth, dpi,
        )  # fmt: skip
    for index, content, out_path in todo:
        if not quiet and not as_json:
            typer.echo(f"[{index}/{len(contents)}] {content}", err=True)
        try:
            run_and_save(
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
                bit_depth=bit_depth,
                dpi=dpi,
            )
        except NeuralartError as exc:
            failed += 1
            error(f"{content}: {exc}")
    if shard is not None:
        done = len(contents) - skipped - failed
        line = {"shard": shard, "done": done, "skipped": skipped, "failed": failed}
        typer.echo(json.dumps({**line, "total": len(contents)}))
    if failed:
        error(f"{failed} of {len(contents)} content images failed")
        raise typer.Exit(1)


def run_batches(
    todo: list[tuple[int, Path, Path]],
    total: int,
    style: list[Path],
    config: Config,
    provenance: dict[str, str],
    preset: str,
    quiet: bool,
    as_json: bool,
    networks: Any,
    style_cache: dict[Any, Any],
    asked: int | str,
    bit_depth: int,
    dpi: float | None,
) -> tuple[list[tuple[int, Path, Path]], int]:
    """The contents of ``todo`` that share a size, ``asked`` at a time (one network pass
    for each batch); what is left to run one at a time (a size of its own, a picture that
    cannot be read here, a batch that failed: its pictures then run alone so that each
    failure is its own), and how many failed."""
    from PIL import Image

    from neuralart.batch import batch_size, transfer_batch
    from neuralart.images import long_edge_size
    from neuralart.transfer import network_device

    network = networks.get(config)
    groups: dict[tuple[int, int], list[tuple[int, Path, Path]]] = {}
    alone: list[tuple[int, Path, Path]] = []
    for item in todo:
        try:
            with Image.open(item[1]) as picture:
                size = long_edge_size(picture.size, config.size)
        except (OSError, ValueError):
            alone.append(item)  # reported by the one-at-a-time run
            continue
        groups.setdefault(size, []).append(item)
    failed = 0
    fit = not levels_chosen(provenance, config)
    for size, items in groups.items():
        count = batch_size(asked, config, size, network_device(network))
        if count == 1 or len(items) == 1:
            alone.extend(items)
            continue
        for start in range(0, len(items), count):
            chunk = items[start : start + count]
            if not quiet and not as_json:
                names = ", ".join(str(c) for _, c, _ in chunk)
                first, last = chunk[0][0], chunk[-1][0]
                label = f"[{first}/{total}]" if len(chunk) == 1 else f"[{first}..{last}/{total}]"
                together = " (together)" if len(chunk) > 1 else ""
                typer.echo(f"{label} {names}{together}", err=True)
            try:
                with reported_warnings(quiet), Progress(quiet or as_json) as progress:
                    progress.begin(
                        f"optimising {len(chunk)} together",
                        sum(config.optimizer.level_iterations(max(size))),
                    )
                    results = transfer_batch(
                        [c for _, c, _ in chunk], style, config, network=network,
                        style_cache=style_cache, fit_levels=fit, bit_depth=bit_depth,
                        callback=progress,
                    )  # fmt: skip
            except NeuralartError:
                alone.extend(chunk)
                continue
            for (_, content, out_path), result in zip(chunk, results, strict=True):
                try:
                    save_result(
                        content, style, config, provenance, preset, out_path, result,
                        quiet=quiet, as_json=as_json, dpi=dpi, exit_if_interrupted=False,
                    )  # fmt: skip
                except NeuralartError as exc:
                    failed += 1
                    error(f"{content}: {exc}")
            if any(r.interrupted for r in results):  # Ctrl-C: the batch's pictures are saved
                raise typer.Exit(130)
    return sorted(alone), failed


def run_and_save(
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
    bit_depth: int = 8,
    dpi: float | None = None,
    echo: bool = True,
) -> tuple[Path, TransferResult]:
    """Check the paths, run one transfer (or texture), save it with its metadata, report
    (unless ``echo`` is false); the file written and the result.

    ``frames`` = (every, folder): also write the picture every so many iterations.
    ``bit_depth`` 16 writes 16 bits per channel (PNG or TIFF); ``dpi`` is stored in the file.
    """
    from neuralart.images import check_bit_depth, check_output_path

    check_inputs(content, style)
    check_output_path(out_path)
    check_bit_depth(out_path, bit_depth)
    if dpi is not None and not 1 <= dpi <= 100_000:
        raise NeuralartError(f"--dpi must be between 1 and 100000, got {dpi}")

    from neuralart.transfer import pick_device
    from neuralart.transfer import transfer as run_transfer

    dev = pick_device(config.device) if network is None else None
    label = "optimising" if content is not None else "synthesising"
    # Without echo the caller collects the warnings (see collected_warnings).
    told = reported_warnings(quiet) if echo else nullcontext()
    with told, Progress(quiet or as_json) as progress:
        long_edge = max(output_size) if output_size is not None else config.size
        progress.begin(label, sum(config.optimizer.level_iterations(long_edge)))
        result = run_transfer(
            content,
            style,
            config,
            device=dev,
            callback=progress,
            output_size=output_size,
            frame_every=frames[0] if frames else 0,
            frame_sink=frame_writer(frames[1]) if frames else None,
            network=network,
            style_cache=style_cache,
            fit_levels=not levels_chosen(provenance, config),
            bit_depth=bit_depth,
            on_tile=progress.tile,
        )
    written = save_result(
        content, style, config, provenance, preset, out_path, result,
        quiet=quiet, as_json=as_json, dpi=dpi, echo=echo,
    )  # fmt: skip
    return written, result


def save_result(
    content: Path | None,
    style: list[Path],
    config: Config,
    provenance: dict[str, str],
    preset: str,
    out_path: Path,
    result: TransferResult,
    *,
    quiet: bool,
    as_json: bool,
    dpi: float | None = None,
    echo: bool = True,
    exit_if_interrupted: bool = True,
) -> Path:
    """Save a run's picture with its metadata and report it (unless ``echo`` is false).
    A picture interrupted by Ctrl-C is saved marked partial, said in one line, and the
    command exits with 130 (unless ``exit_if_interrupted`` is false: a batch saves all
    its pictures first)."""
    from neuralart.images import save_image

    interrupted = result.interrupted
    if interrupted:  # a second Ctrl-C while the picture so far is saved exits at once
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    elif result.stopped and not quiet and echo:
        warn(result.stopped)
    metadata = {
        "neuralart": __version__,
        **({"content": str(content)} if content is not None else {"texture": True}),
        "style": [str(s) for s in style],
        "preset": preset,
        "partial": interrupted,
        **run_metadata(result, provenance),
    }
    picture = result.pixels16 if result.pixels16 is not None else result.image
    written = save_image(picture, out_path, metadata=metadata, dpi=dpi)
    if interrupted:
        error(f"interrupted: saved the picture so far to {written} (marked partial)")
        if exit_if_interrupted:
            raise typer.Exit(130)
        return written
    if not echo:
        pass
    elif as_json:
        typer.echo(json.dumps(summary(written, config.name, result)))
    elif not quiet:
        typer.echo(f"wrote {written} ({result.seconds:.1f} s, device {result.device})")
    return written


def levels_chosen(provenance: dict[str, str], config: Config) -> bool:
    """Whether the user set the number of coarse-to-fine levels on the command line
    (``--levels``, or one ``--iterations`` count per level): then it is kept as asked."""
    per_level = isinstance(config.optimizer.iterations, tuple)
    return provenance.get("optimizer.levels") == "flag" or (
        per_level and provenance.get("optimizer.iterations") == "flag"
    )


def frame_writer(folder: Path) -> Callable[[StepEvent, Any], None]:
    """Save each frame as folder/frame-NNNNN.png (frame-LL-NNNNN.png with levels)."""
    from neuralart.images import save_image

    def write(event: StepEvent, image: Any) -> None:
        level = f"{event.level:02d}-" if event.levels > 1 else ""
        save_image(image, folder / f"frame-{level}{event.iteration:05d}.png")

    return write


def check_inputs(content: Path | None, styles: list[Path]) -> None:
    roles = [(content, "content image")] if content is not None else []
    for path, role in [*roles, *((s, "style image") for s in styles)]:
        if not path.exists():
            raise NeuralartError(f"{role} not found: {path}")


def run_metadata(result: TransferResult, provenance: dict[str, str]) -> dict[str, Any]:
    """What goes into the output file: no timings, so that a seeded run is byte-identical."""
    return {
        "seed": result.seed,
        "config": {**result.config.to_dict(), "seed": result.seed},
        "provenance": provenance,
        "record": result.record(timings=False),
    }


def summary(written: Path, preset: str, result: TransferResult) -> dict[str, Any]:
    out = {
        "output": str(written),
        "preset": preset,
        "seed": result.seed,
        "seconds": round(result.seconds, 3),
        "iterations": result.iterations,
        "final_losses": result.final_losses,
    }
    tiles = result.record(timings=False).get("tiles")
    if tiles is not None:  # the last level ran tile by tile
        out["tiles"] = tiles
    return out


def parse_blend(text: str) -> list[float]:
    """``0.7,0.3`` -> [0.7, 0.3]."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise NeuralartError(
            f"--style-blend must be numbers separated by commas, e.g. 0.7,0.3; got {text!r}"
        ) from None


def parse_iterations(text: str) -> int | list[int]:
    """``500`` -> 500; ``300,100`` -> [300, 100] (one count per coarse-to-fine level)."""
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < 0:
        raise NeuralartError(
            "--iterations must be a whole number of 0 or more, or one per level like 300,100; "
            f"got {text!r}"
        )
    return numbers[0] if len(numbers) == 1 else numbers


def parse_levels(text: str) -> int | str:
    """``auto`` or a number of coarse-to-fine levels."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise NeuralartError(
            f"--levels must be auto or a number of levels (1 = one size only), got {text!r}"
        ) from None


def parse_batch_size(text: str | None) -> int | str:
    """``--batch-size``: ``auto`` (also when not given) or a number of pictures, 1 or more."""
    word = (text or "auto").strip().lower()
    if word == "auto":
        return "auto"
    try:
        number = int(word)
    except ValueError:
        number = 0
    if number < 1:
        raise NeuralartError(f"--batch-size must be auto or a number of 1 or more, got {text!r}")
    return number


def parse_tile(text: str) -> int | str:
    """``auto``, ``off`` or a tile size in pixels."""
    word = text.strip().lower()
    if word in ("auto", "off"):
        return word
    try:
        return int(word)
    except ValueError:
        raise NeuralartError(
            f"--tile must be auto, off or a tile size in pixels (e.g. 1024), got {text!r}"
        ) from None


def parse_size(text: str) -> tuple[int, int]:
    """``N`` (square) or ``WxH`` -> (width, height)."""
    parts = text.lower().split("x")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or min(numbers, default=0) <= 0:
        raise NeuralartError(f"--size must be N or WxH with positive whole numbers, got {text!r}")
    return (numbers[0], numbers[-1])
