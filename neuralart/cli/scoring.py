"""The ``score`` command's work: pairing results with their content images, scoring them
and the two reference pictures, and printing a table or JSON lines."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from neuralart.cli.output import error
from neuralart.errors import NeuralartError

if TYPE_CHECKING:
    from neuralart.score import ContentTarget, Score, Scorer, StyleTarget

# What may follow a content image's name in a result's name: the default output names
# are CONTENT_STYLE_PRESET.png.
SEPARATORS = "_-. +"

# How the table names the reference rows.
ROLES = {"content": "reference: the photograph", "color-transfer": "reference: its colour transfer"}


def image_files(folder: Path) -> list[Path]:
    from neuralart.images import SUPPORTED_SUFFIXES

    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
    )


def match_content(result: Path, contents: list[Path]) -> Path | None:
    """The content image of a result in a batch: the one whose name (without suffix) is
    the longest beginning of the result's name that is followed by the end of the name or
    one of ``_ - . + space``. None when no content image matches."""
    name = result.stem
    matches = [
        c
        for c in contents
        if name.startswith(c.stem) and (len(name) == len(c.stem) or name[len(c.stem)] in SEPARATORS)
    ]
    return max(matches, key=lambda c: len(c.stem), default=None)


def pairs(result: Path, content: Path, styles: list[Path]) -> list[tuple[Path, Path | None]]:
    """(result, its content image) for every result to score, in name order."""
    for path, role in [(result, "result"), (content, "content image")] + [
        (s, "style image") for s in styles
    ]:
        if not path.exists():
            raise NeuralartError(f"{role} not found: {path}")
    if content.is_dir() and not result.is_dir():
        raise NeuralartError(
            f"the content {content} is a folder but the result {result} is one file; "
            "give the result's own content image"
        )
    if not result.is_dir():
        return [(result, content)]
    inputs = {p.resolve() for p in [content, *styles]}
    results = [p for p in image_files(result) if p.resolve() not in inputs]
    if not results:
        raise NeuralartError(f"no images found in {result}")
    if not content.is_dir():
        return [(r, content) for r in results]
    contents = image_files(content)
    if not contents:
        raise NeuralartError(f"no content images found in {content}")
    return [(r, match_content(r, contents)) for r in results]


@dataclass
class Row:
    image: str
    role: str
    content: str
    score: Score

    def as_dict(self, styles: list[Path], scorer: Scorer, size: tuple[int, int]) -> dict[str, Any]:
        return {
            "image": self.image,
            "role": self.role,
            "content_image": self.content,
            "style_images": [str(s) for s in styles],
            **self.score.as_dict(),
            "size": list(size),
            "seed": scorer.seed,
        }


def run_score(
    result: Path,
    content: Path,
    styles: list[Path],
    *,
    size: int,
    seed: int,
    device: str,
    references: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Score every result; one JSON line per picture with ``as_json``, else a table.
    A result that cannot be scored is reported and the rest go on; exit 1 at the end."""
    from neuralart.images import load_image
    from neuralart.score import Scorer
    from neuralart.transfer import pick_device
    from neuralart.vgg import load_vgg19

    todo = pairs(result, content, styles)
    style_images = [load_image(s, role="style image") for s in styles]
    dev = pick_device(device)
    scorer = Scorer(load_vgg19("embedded", device=dev), size=size, seed=seed, device=dev)
    target = scorer.style_target(style_images)

    rows: list[Row] = []
    targets: dict[tuple[Path, tuple[int, int]], ContentTarget] = {}
    failed = 0
    for path, own in todo:
        try:
            if own is None:
                raise NeuralartError("no content image's name begins its name")
            picture = scorer.prepare(load_image(path, role="result"))
            h, w = picture.shape[-2:]
            key = (own, (w, h))
            if key not in targets:
                targets[key] = scorer.content_target(
                    load_image(own, role="content image"), picture, str(path)
                )
                if references:
                    new = reference_rows(scorer, targets[key], target, own, style_images)
                    rows += new
                    _emit(new, styles, scorer, (w, h), as_json)
            row = Row(str(path), "result", str(own), scorer.score(picture, targets[key], target))
            rows.append(row)
            _emit([row], styles, scorer, (w, h), as_json)
        except NeuralartError as exc:
            failed += 1
            error(f"{path}: {exc}")
    if not as_json and not quiet and rows:
        print_table(rows)
    if failed:
        if len(todo) > 1:
            error(f"{failed} of {len(todo)} results could not be scored")
        raise typer.Exit(1)


def reference_rows(
    scorer: Scorer,
    content: ContentTarget,
    target: StyleTarget,
    path: Path,
    style_images: list[Any],
) -> list[Row]:
    """The content image itself and its plain colour transfer, scored as results."""
    plain = scorer.score(content.rgb, content, target)
    recoloured = scorer.score(scorer.color_transferred(content, style_images), content, target)
    return [
        Row(str(path), "content", str(path), plain),
        Row(f"{path} (colour-transferred)", "color-transfer", str(path), recoloured),
    ]


def _emit(
    rows: list[Row], styles: list[Path], scorer: Scorer, size: tuple[int, int], as_json: bool
) -> None:
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row.as_dict(styles, scorer, size)))


def print_table(rows: list[Row]) -> None:
    """Per content image: its results closest to the style first, then the references."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="style: lower is closer; ssim: higher is closer; content: lower is closer")
    for header in ("picture", "style ↓", "colour ↓", "ssim ↑", "content ↓"):
        if header == "picture":
            table.add_column(header, overflow="fold")  # a path is never cut short
        else:
            table.add_column(header, justify="right", no_wrap=True)
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.content, []).append(row)
    for members in groups.values():
        results = sorted((r for r in members if r.role == "result"), key=lambda r: r.score.style)
        refs = [r for r in members if r.role != "result"]
        for row in results + refs:
            label = row.image if row.role == "result" else f"  {ROLES[row.role]}"
            s = row.score
            table.add_row(
                label,
                f"{s.style:.3f}",
                f"{s.color:.1f}",
                f"{s.ssim:.3f}",
                f"{s.content:.3f}",
                style="dim" if row.role != "result" else None,
            )
        table.add_section()
    Console(soft_wrap=True).print(table)
