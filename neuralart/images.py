"""Reading, converting and writing image files.

This is the only module that touches image files. Everything that comes in is turned into
an 8-bit RGB :class:`PIL.Image.Image`; every problem a user can cause (a missing, broken or
huge file, a bad output path, a full disk) becomes a one-line :class:`NeuralartError`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageCms, ImageFile, ImageOps, PngImagePlugin, UnidentifiedImageError

from neuralart.errors import NeuralartError, NeuralartWarning
from neuralart.layers import MIN_EDGE

DEFAULT_MAX_PIXELS = 100_000_000
SUPPORTED_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}

_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
_METADATA_KEY = "neuralart"
_COMMENT_PREFIX = "neuralart:"
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def _one_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its class name if it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextlib.contextmanager
def _strict_pillow(max_pixels: int) -> Iterator[None]:
    """Make Pillow refuse truncated files and images above ``max_pixels`` for a while."""
    old_limit, old_truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = max_pixels, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old_limit, old_truncated


def load_image(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS, role: str = "image"
) -> Image.Image:
    """Read an image file and return it as an 8-bit RGB image.

    ``role`` ("content image", "style image", ...) names the file in messages. The size
    declared in the header is checked against ``max_pixels`` before any pixel is decoded.
    EXIF orientation is applied and an embedded ICC profile is converted to sRGB.
    16-bit images are scaled (value / 257), float images clipped to 0..255, palette,
    gray and CMYK images converted. A :class:`NeuralartWarning` is emitted when only the
    first frame of an animated or multi-page file is used, when some pixels are not
    opaque (they are composited on white) and when a colour profile cannot be applied.

    Raises:
        NeuralartError: the file is missing, unreadable, not an image, truncated or too big.
    """
    p = Path(path)
    where = f"{role} '{p}'"
    if not p.exists():
        raise NeuralartError(f"{where} not found")
    if p.is_dir():
        raise NeuralartError(f"{where} is a folder, not an image file")
    if not p.is_file():
        raise NeuralartError(f"{where} is not a regular file")
    notes: list[str] = []
    try:
        if p.stat().st_size == 0:
            raise NeuralartError(f"{where} is an empty file")
        with p.open("rb") as fh, _strict_pillow(max_pixels):
            img = _decode(fh, where, max_pixels, notes)
    except NeuralartError:
        raise
    except PermissionError as exc:
        raise NeuralartError(f"cannot read {where}: permission denied") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise NeuralartError(_too_big(where, max_pixels)) from exc
    except UnidentifiedImageError as exc:
        raise NeuralartError(f"{where} is not an image file Pillow can read") from exc
    except MemoryError as exc:
        raise NeuralartError(f"not enough memory to decode {where}") from exc
    except Exception as exc:
        # Pillow's decoders raise many types on corrupt data (OSError, SyntaxError,
        # ValueError, struct.error, ...): whatever Pillow itself raised while decoding
        # means a damaged file. An exception from anywhere else is a bug, not the file's.
        if not _raised_inside(exc, _PILLOW_DIR):
            raise
        raise NeuralartError(f"{where} is damaged or truncated: {_one_line(exc)}") from exc
    for note in notes:
        warnings.warn(f"{where}: {note}", NeuralartWarning, stacklevel=2)
    return img


_PILLOW_DIR = Path(Image.__file__).resolve().parent


def _raised_inside(exc: BaseException, folder: Path) -> bool:
    """Whether the innermost frame of ``exc``'s traceback lies in ``folder``."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(folder)


def _too_big(where: str, max_pixels: int) -> str:
    return (
        f"{where} has more than {max_pixels:,} pixels; "
        "if you trust the file, use --max-pixels N to raise the limit"
    )


def _decode(fh: io.BufferedReader, where: str, max_pixels: int, notes: list[str]) -> Image.Image:
    """Open, check, fully decode and convert one image; warnings are appended to ``notes``."""
    img: Image.Image = Image.open(fh)
    width, height = img.size
    if width * height > max_pixels:
        raise NeuralartError(_too_big(where, max_pixels))
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        notes.append(f"has {frames} frames; only the first is used")
        img.seek(0)
    img.load()
    icc = img.info.get("icc_profile")
    try:
        img = ImageOps.exif_transpose(img)
    except Exception as exc:  # a broken EXIF block should not make the picture unusable
        notes.append(f"EXIF orientation ignored ({_one_line(exc)})")
    out = _to_rgb(img, icc, notes)
    return img.copy() if out is img else out


def _to_rgb(img: Image.Image, icc: bytes | None, notes: list[str]) -> Image.Image:
    """Convert a decoded image of any Pillow mode to 8-bit RGB."""
    if img.mode in _SIXTEEN_BIT_MODES:  # 0..65535 maps onto 0..255 (Pillow would clip)
        values = np.asarray(img, dtype=np.float64) / 257.0
        img = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    elif img.mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float64))
        img = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode in ("P", "PA"):
        has_alpha = img.mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
    elif img.mode in ("La", "RGBa"):  # premultiplied alpha
        img = img.convert(img.mode[:-1] + "A")
    if icc and img.mode in ("L", "LA", "RGB", "RGBA", "CMYK"):
        img = _apply_icc(img, icc, notes)
    if img.mode in ("LA", "RGBA"):
        alpha = img.getchannel("A")
        rgb = img.convert("RGB")
        if alpha.getextrema() != (255, 255):  # some pixel is not fully opaque
            notes.append("has transparency; transparent areas are composited on white")
            white = Image.new("RGB", img.size, (255, 255, 255))
            white.paste(rgb, mask=alpha)
            rgb = white
        img = rgb
    return img if img.mode == "RGB" else img.convert("RGB")


def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _apply_icc(img: Image.Image, icc: bytes, notes: list[str]) -> Image.Image:
    """Convert the colour channels from the embedded profile to sRGB; alpha is kept."""
    alpha = img.getchannel("A") if img.mode in ("LA", "RGBA") else None
    base = img.convert(img.mode[:-1]) if alpha is not None else img
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out = ImageCms.profileToProfile(base, source, _srgb(), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        notes.append(f"embedded colour profile could not be applied ({_one_line(exc)})")
        return img
    if out is None:  # only happens with inPlace=True
        return img
    if alpha is not None:
        out.putalpha(alpha)
    return out


def resize_to(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to ``size`` = (width, height): Lanczos when shrinking, bicubic when enlarging.

    Returns ``img`` itself when it already has that size.
    """
    width, height = size
    if width <= 0 or height <= 0:
        raise NeuralartError(f"image size must be positive, got {width}x{height}")
    if img.size == (width, height):
        return img
    shrinking = width < img.width or height < img.height
    resample = Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC
    return img.resize((width, height), resample)


def round_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded to the nearest whole number, halves up (exact).

    The one rounding of picture sizes: resizing to a long edge and every coarse-to-fine
    level use it.
    """
    return (2 * numerator + denominator) // (2 * denominator)


def long_edge_size(size: tuple[int, int], long_edge: int) -> tuple[int, int]:
    """(width, height) scaled so the longer side is ``long_edge``; short side rounded half up."""
    width, height = size
    long_side, short_side = max(width, height), min(width, height)
    new_short = max(1, round_half_up(short_side * long_edge, long_side))
    return (long_edge, new_short) if width >= height else (new_short, long_edge)


def resize_long_edge(img: Image.Image, long_edge: int) -> Image.Image:
    """Scale ``img`` so that its longer side is ``long_edge`` pixels, keeping the aspect ratio.

    The short side is rounded half up. Raises :class:`NeuralartError` if ``long_edge`` is not
    positive or if the short side would end up below :data:`MIN_EDGE` pixels.
    """
    if long_edge <= 0:
        raise NeuralartError(f"image size must be a positive number of pixels, got {long_edge}")
    width, height = img.size
    long_side, short_side = max(width, height), min(width, height)
    new_size = long_edge_size(img.size, long_edge)
    new_short = min(new_size)
    if new_short < MIN_EDGE:
        needed = -(-MIN_EDGE * long_side // short_side)
        raise NeuralartError(
            f"image of {width}x{height} px is too small or elongated for a size of {long_edge}: "
            f"its short side would be {new_short} px but the network (VGG) needs at least "
            f"{MIN_EDGE} px on each side; use a size of at least {needed}"
        )
    return resize_to(img, new_size)


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """An RGB image as a float32 tensor of shape (1, 3, H, W) with values in [0, 1]."""
    array = np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
    return tensor.unsqueeze(0).to(torch.float32).div_(255.0)


def tensor_to_image(t: torch.Tensor) -> Image.Image:
    """A (1, 3, H, W) or (3, H, W) RGB tensor in [0, 1], on any device, as an 8-bit RGB image.

    Values are clamped to [0, 1] (NaN becomes 0) and rounded to the nearest of 0..255.
    """
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3 or t.shape[0] != 3:
        shape = tuple(t.shape)
        raise ValueError(f"expected a tensor of shape (1, 3, H, W) or (3, H, W), got {shape}")
    values = torch.nan_to_num(t.detach().to("cpu", torch.float32), nan=0.0)
    array = values.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).permute(1, 2, 0)
    return Image.fromarray(array.contiguous().numpy())


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Check that an image can be written to ``path`` and return it as a :class:`Path`.

    The suffix picks the format (one of :data:`SUPPORTED_SUFFIXES`). Folders that do not
    exist yet are fine: :func:`save_image` creates them.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        what = f"unsupported extension '{p.suffix}'" if p.suffix else "no file extension"
        choices = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise NeuralartError(f"output '{p}' has {what}; use one of {choices}")
    if p.is_dir():
        raise NeuralartError(f"output '{p}' is an existing folder; give a file name")
    existing = p.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NeuralartError(f"cannot write output '{p}': '{existing}' is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise NeuralartError(f"cannot write output '{p}': folder '{existing}' is not writable")
    return p


def _save_options(fmt: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
    options: dict[str, Any] = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    if metadata is None:
        return options
    text = json.dumps(metadata, default=str)  # ASCII: TIFF tags cannot hold more
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt(_METADATA_KEY, text)
        options["pnginfo"] = info
    elif fmt == "JPEG":
        comment = (_COMMENT_PREFIX + text).encode("utf-8")
        if len(comment) <= 65_000:  # one JPEG marker segment holds at most 65533 bytes
            options["comment"] = comment
        else:
            message = "metadata too long for a JPEG comment; not stored"
            warnings.warn(message, NeuralartWarning, stacklevel=3)
    elif fmt == "TIFF":
        options["description"] = _COMMENT_PREFIX + text
    return options


def _current_umask() -> int:
    """The process umask (reading it means setting it briefly; fine for a CLI)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


SIXTEEN_BIT_SUFFIXES = {".png", ".tif", ".tiff"}


def check_bit_depth(path: str | os.PathLike[str], bit_depth: int) -> None:
    """16 bits per channel are written as PNG or TIFF only; one line otherwise."""
    if bit_depth not in (8, 16):
        raise NeuralartError(f"--bit-depth must be 8 or 16, got {bit_depth}")
    suffix = Path(path).suffix.lower()
    if bit_depth == 16 and suffix not in SIXTEEN_BIT_SUFFIXES:
        raise NeuralartError(
            f"16 bits per channel are written as .png or .tif, not {suffix or 'no suffix'}: "
            "change the output's suffix or use --bit-depth 8"
        )


def to_sixteen_bit(rgb: torch.Tensor) -> np.ndarray:
    """A (1, 3, H, W) or (3, H, W) RGB tensor in [0, 1] -> (H, W, 3) uint16, rounded."""
    if rgb.dim() == 4:
        rgb = rgb[0]
    values = torch.nan_to_num(rgb.detach().to("cpu", torch.float64), nan=0.0).clamp(0.0, 1.0)
    return values.mul(65535.0).round().to(torch.int32).permute(1, 2, 0).numpy().astype(np.uint16)


def _write_png16(fh: Any, pixels: np.ndarray, text: str | None, dpi: float | None) -> None:
    """16-bit RGB PNG by pypng, with the metadata as an iTXt chunk before the image data."""
    import png

    height, width = pixels.shape[:2]
    options: dict[str, Any] = {}
    if dpi is not None:  # pHYs holds pixels per metre
        per_metre = round(dpi / 0.0254)
        options = {"x_pixels_per_unit": per_metre, "y_pixels_per_unit": per_metre}
        options["unit_is_meter"] = True
    writer = png.Writer(width, height, greyscale=False, bitdepth=16, **options)
    big_endian = pixels.astype(">u2").reshape(height, width * 3)
    buffer = io.BytesIO()
    writer.write_packed(buffer, (row.tobytes() for row in big_endian))
    chunks = list(png.Reader(bytes=buffer.getvalue()).chunks())
    if text is not None:  # keyword, no compression, no language, no translation, UTF-8
        payload = _METADATA_KEY.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8")
        first_data = next(i for i, (kind, _) in enumerate(chunks) if kind == b"IDAT")
        chunks.insert(first_data, (b"iTXt", payload))
    png.write_chunks(fh, chunks)


def _write_tiff16(fh: Any, pixels: np.ndarray, text: str | None, dpi: float | None) -> None:
    """16-bit RGB TIFF by tifffile, deflate-compressed, the metadata as its description."""
    import tifffile

    options: dict[str, Any] = {"photometric": "rgb", "compression": "zlib"}
    if dpi is not None:
        options.update(resolution=(dpi, dpi), resolutionunit="INCH")
    if text is not None:
        options["description"] = _COMMENT_PREFIX + text
    buffer = io.BytesIO()  # tifffile wants a named file or a buffer, not a descriptor
    tifffile.imwrite(buffer, pixels, **options)
    fh.write(buffer.getbuffer())


def save_image(
    img: Image.Image | np.ndarray,
    path: str | os.PathLike[str],
    *,
    metadata: dict[str, Any] | None = None,
    dpi: float | None = None,
) -> Path:
    """Write a picture to ``path`` atomically, in the format its suffix names; return the path.

    ``img`` is an 8-bit image, or an (H, W, 3) uint16 array (:func:`to_sixteen_bit`),
    written with 16 bits per channel as PNG (pypng) or TIFF (tifffile).
    Missing parent folders are created. The image goes to a hidden ``.part`` file in the
    target folder first and is moved over the target only when completely written, so a
    failure never leaves a half-written file or damages an existing one. ``metadata`` is
    stored as JSON (values JSON cannot hold are written as strings): in a PNG as the iTXt
    chunk "neuralart", in a JPEG and a TIFF as the comment / image description prefixed
    with "neuralart:". WebP and BMP files get no metadata. JPEG and WebP use quality 95.
    ``dpi`` is stored where the format has a place for it (PNG, JPEG, TIFF).
    Images that are not RGB are converted to RGB.
    """
    p = check_output_path(path)
    fmt = _FORMATS[p.suffix.lower()]
    sixteen = isinstance(img, np.ndarray)
    if sixteen:
        check_bit_depth(p, 16)
    if dpi is not None and not 1 <= dpi <= 100_000:
        raise NeuralartError(f"--dpi must be between 1 and 100000, got {dpi}")
    text = json.dumps(metadata, default=str) if metadata is not None else None
    options = {} if sixteen else _save_options(fmt, metadata)
    if dpi is not None and not sixteen and fmt in ("PNG", "JPEG", "TIFF"):
        options["dpi"] = (dpi, dpi)
    if isinstance(img, Image.Image) and img.mode != "RGB":
        img = img.convert("RGB")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".part")
    except OSError as exc:
        raise NeuralartError(f"cannot write output '{p}': {_one_line(exc)}") from exc
    try:
        with open(fd, "wb") as fh:
            if isinstance(img, np.ndarray):
                writer = _write_png16 if fmt == "PNG" else _write_tiff16
                writer(fh, img, text, dpi)
            else:
                img.save(fh, format=fmt, **options)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, 0o666 & ~_current_umask())
        os.replace(tmp_name, p)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError):
            raise NeuralartError(f"cannot write output '{p}': {_one_line(exc)}") from exc
        raise
    return p


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The metadata :func:`save_image` stored in a PNG, JPEG or TIFF file, or None if absent.

    Raises:
        NeuralartError: the file cannot be read, or its neuralart metadata is not a JSON object.
    """
    p = Path(path)
    try:
        with Image.open(p) as img:
            text = _find_metadata_text(img)
    except Exception as exc:  # missing, unreadable or damaged file
        raise NeuralartError(f"cannot read metadata of '{p}': {_one_line(exc)}") from exc
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise NeuralartError(f"metadata in '{p}' is not valid JSON: {_one_line(exc)}") from exc
    if not isinstance(data, dict):
        raise NeuralartError(f"metadata in '{p}' is not a JSON object")
    return data


def _find_metadata_text(img: Image.Image) -> str | None:
    if img.format == "PNG":
        value = getattr(img, "text", {}).get(_METADATA_KEY)
        return str(value) if value is not None else None
    candidates: list[str | bytes] = []
    if img.format == "JPEG":
        candidates = [data for marker, data in getattr(img, "applist", []) if marker == "COM"]
    elif img.format == "TIFF":
        candidates = [getattr(img, "tag_v2", {}).get(270, "")]
    for raw in candidates:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        if text.startswith(_COMMENT_PREFIX):
            return text[len(_COMMENT_PREFIX) :]
    return None
