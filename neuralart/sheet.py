"""Labelled contact sheets: pictures side by side, each with a caption underneath."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

_PAD = 8


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _caption(
    draw: ImageDraw.ImageDraw, text: str, size: int, width: int
) -> tuple[str, ImageFont.ImageFont | ImageFont.FreeTypeFont]:
    """The caption in a font small enough to fit ``width``, shortened with "…" if need be."""
    font = _font(size)
    while size > 9 and draw.textlength(text, font=font) > width:
        size -= 1
        font = _font(size)
    while len(text) > 1 and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…"
    return text, font


def fit(image: Image.Image, box: tuple[int, int]) -> Image.Image:
    """Scale ``image`` to fit inside ``box`` (width, height), keeping its aspect ratio."""
    scale = min(box[0] / image.width, box[1] / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def contact_sheet(
    cells: Sequence[tuple[str, Image.Image]],
    *,
    columns: int = 4,
    cell: tuple[int, int] | None = None,
) -> Image.Image:
    """Arrange (caption, picture) cells in a grid on white, row by row.

    Each picture is scaled to fit the cell (by default the size of the largest picture)
    and centred in it; its caption is written underneath.
    """
    if not cells:
        raise ValueError("contact_sheet needs at least one cell")
    columns = max(1, min(columns, len(cells)))
    rows = math.ceil(len(cells) / columns)
    if cell is None:
        cell = (max(im.width for _, im in cells), max(im.height for _, im in cells))
    font_size = max(11, min(20, cell[0] // 16))
    caption_h = font_size + 6
    width = columns * cell[0] + (columns + 1) * _PAD
    height = rows * (cell[1] + caption_h) + (rows + 1) * _PAD
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (caption, image) in enumerate(cells):
        r, c = divmod(index, columns)
        x0 = _PAD + c * (cell[0] + _PAD)
        y0 = _PAD + r * (cell[1] + caption_h + _PAD)
        picture = fit(image.convert("RGB"), cell)
        sheet.paste(
            picture, (x0 + (cell[0] - picture.width) // 2, y0 + (cell[1] - picture.height) // 2)
        )
        text, text_font = _caption(draw, caption, font_size, cell[0])
        text_w = draw.textlength(text, font=text_font)
        draw.text(
            (x0 + max(0, (cell[0] - text_w) / 2), y0 + cell[1] + 3),
            text,
            fill="black",
            font=text_font,
        )
    return sheet
