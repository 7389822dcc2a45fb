"""Reading and writing videos and folders of frames.

Videos are decoded and encoded with PyAV (FFmpeg); frame folders are read with
:func:`neuralart.images.load_image`. Every frame that comes out is an 8-bit RGB
:class:`PIL.Image.Image`. Every problem a user can cause (a missing or broken file, a folder
without frames, frames of different sizes, an output format the encoder cannot write)
becomes a one-line :class:`NeuralartError`.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from neuralart.errors import NeuralartError, NeuralartWarning
from neuralart.images import SUPPORTED_SUFFIXES, load_image, long_edge_size
from neuralart.video import require_video

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".gif")
"""The output suffixes :func:`write_video` can encode."""

FRAME_SUFFIXES = tuple(sorted(SUPPORTED_SUFFIXES))
"""The image suffixes that count as frames in a frame folder."""

_CONTAINER_FORMATS = {
    ".mp4": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
    ".gif": "gif",
}
_VIDEO_ENCODERS = {
    ".mp4": "libx264",
    ".mov": "libx264",
    ".mkv": "libx264",
    ".webm": "libvpx-vp9",
    ".gif": "gif",
}
# Audio codecs (FFmpeg's canonical names) copied into each container as they are; any other
# codec is re-encoded to the container's fallback encoder.
_AUDIO_COPYABLE = {
    ".mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus"},
    ".mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le"},
    ".mkv": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "vorbis", "flac", "pcm_s16le"},
    ".webm": {"opus", "vorbis"},
}
_AUDIO_FALLBACK = {".mp4": "aac", ".mov": "aac", ".mkv": "aac", ".webm": "libopus"}
_AUDIO_BIT_RATE = {"aac": 192_000, "libopus": 128_000}
_EDIT_LISTS = {".mp4", ".mov"}  # containers that hide a negative start with an edit list
_GIF_MAX_FPS = 50  # browsers slow down GIF frames shorter than 2/100 s


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` found out about a video file or a frame folder."""

    path: Path
    frame_count: int
    fps: Fraction | None  # None for a frame folder
    width: int  # as displayed: after any rotation the file asks for
    height: int
    has_audio: bool

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of every frame."""
        return self.width, self.height

    @property
    def duration(self) -> float | None:
        """Seconds of video (frame_count / fps), or None for a frame folder."""
        return None if self.fps is None else float(self.frame_count / self.fps)


def frame_name(index: int) -> str:
    """The file name of frame ``index`` (1-based) in an output folder: ``frame-00001.png``."""
    if index < 1:
        raise ValueError(f"frame numbers start at 1, got {index}")
    return f"frame-{index:05d}.png"


def _natural_key(name: str) -> tuple[list[str | int], str]:
    """Sort key that orders digit runs by value, so that frame2 comes before frame10."""
    parts = re.split(r"(\d+)", name.lower())
    # re.split with a group alternates text (even places) and digits (odd places), so items
    # at the same place always have the same type and compare cleanly.
    key: list[str | int] = [int(part) if i % 2 else part for i, part in enumerate(parts)]
    return key, name


def list_frames(folder: Path) -> list[Path]:
    """The frame files in ``folder`` in natural order; hidden files are skipped."""
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise NeuralartError(f"cannot read frame folder '{folder}': {_one_line(exc)}") from exc
    frames = [
        entry
        for entry in entries
        if entry.suffix.lower() in FRAME_SUFFIXES
        and not entry.name.startswith(".")
        and entry.is_file()
    ]
    return sorted(frames, key=lambda entry: _natural_key(entry.name))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _header_size(path: Path) -> tuple[int, int]:
    """An image file's (width, height) as :func:`load_image` returns it, from its header."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112)
    except Exception as exc:
        raise NeuralartError(f"frame '{path}' is not an image file Pillow can read") from exc
    if orientation in (5, 6, 7, 8):  # EXIF orientations that swap width and height
        width, height = height, width
    return width, height


def _mixed_sizes(
    folder: Path, odd: Path, size: tuple[int, int], first: Path, first_size: Any
) -> str:
    return (
        f"frame folder '{folder}' mixes frame sizes: '{odd.name}' is {size[0]}x{size[1]} "
        f"but '{first.name}' is {first_size[0]}x{first_size[1]}"
    )


def _probe_folder(folder: Path) -> VideoInfo:
    frames = list_frames(folder)
    if not frames:
        kinds = ", ".join(FRAME_SUFFIXES)
        raise NeuralartError(f"frame folder '{folder}' has no frames (no {kinds} files)")
    first_size = _header_size(frames[0])
    for frame in frames[1:]:
        size = _header_size(frame)
        if size != first_size:
            raise NeuralartError(_mixed_sizes(folder, frame, size, frames[0], first_size))
    width, height = first_size
    return VideoInfo(folder, len(frames), None, width, height, has_audio=False)


@contextlib.contextmanager
def _open_video(path: Path) -> Iterator[Any]:
    """Open a video file for reading with PyAV; FFmpeg's errors become NeuralartErrors."""
    av, _ = require_video()
    if not path.is_file():
        raise NeuralartError(f"video '{path}' is not a regular file")
    if path.stat().st_size == 0:
        raise NeuralartError(f"video '{path}' is an empty file")
    try:
        container = av.open(str(path), "r")
    except PermissionError as exc:
        raise NeuralartError(f"cannot read video '{path}': permission denied") from exc
    except (av.FFmpegError, OSError) as exc:
        raise NeuralartError(
            f"'{path}' is not a video file FFmpeg can read ({_one_line(exc)})"
        ) from exc
    try:
        if not container.streams.video:
            raise NeuralartError(f"'{path}' has no video stream")
        yield container
    except av.FFmpegError as exc:
        raise NeuralartError(f"video '{path}' is damaged: {_one_line(exc)}") from exc
    finally:
        container.close()


def _decoded(container: Any) -> Iterator[Any]:
    """The decoded frames of the first video stream."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    yield from container.decode(stream)


def _frame_to_image(frame: Any) -> Image.Image:
    """A decoded PyAV frame as an RGB image, turned the way the file says it is displayed.

    Frames with an alpha channel (some GIFs) are composited on white, like still images.
    """
    if frame.format.name in ("rgba", "bgra", "argb", "abgr", "yuva420p", "pal8"):
        rgba = Image.fromarray(frame.to_ndarray(format="rgba"), "RGBA")
        img = Image.new("RGB", rgba.size, (255, 255, 255))
        img.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    else:
        img = Image.fromarray(frame.to_ndarray(format="rgb24"), "RGB")
    # frame.rotation: degrees by which the display matrix turns the picture counterclockwise.
    turn = {90: Image.Transpose.ROTATE_90, -90: Image.Transpose.ROTATE_270}
    turn.update({270: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180})
    turn[-180] = Image.Transpose.ROTATE_180
    rotation = round(frame.rotation or 0)
    return img.transpose(turn[rotation]) if rotation in turn else img


def _displayed_size(frame: Any) -> tuple[int, int]:
    quarter_turn = round(frame.rotation or 0) in (90, -90, 270, -270)
    width, height = frame.width, frame.height
    return (height, width) if quarter_turn else (width, height)


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Frame count, frame rate, size and whether there is sound, of a video or a frame folder.

    A folder is read as a sequence of frames: its image files (``FRAME_SUFFIXES``) in natural
    order (frame2 before frame10); hidden files are skipped. Its ``fps`` is None.

    For a video file the frame count is the one the container records; when it records none
    (WebM, Matroska, GIF) the frames are counted by decoding the whole video. The frame rate
    is the stream's average rate. The size is the size of the decoded frames, with width and
    height swapped when the file asks for a quarter turn on display (phone videos).

    Raises:
        NeuralartError: the path does not exist; the file is not a video FFmpeg can read or
            has no frames; the folder has no frames or frames of different sizes.
    """
    p = Path(path)
    if not p.exists():
        raise NeuralartError(f"video '{p}' not found")
    if p.is_dir():
        return _probe_folder(p)
    with _open_video(p) as container:
        stream = container.streams.video[0]
        has_audio = bool(container.streams.audio)
        frames = _decoded(container)
        first = next(frames, None)
        if first is None:
            raise NeuralartError(f"video '{p}' has no frames")
        width, height = _displayed_size(first)
        count = stream.frames or 1 + sum(1 for _ in frames)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = Fraction(rate) if rate else None
    return VideoInfo(p, count, fps, width, height, has_audio)


def _check_long_edge(size: int | None) -> None:
    if size is not None and size <= 0:
        raise NeuralartError(f"frame size must be a positive number of pixels, got {size}")


def _resized(img: Image.Image, size: int | None) -> Image.Image:
    if size is None:
        return img
    target = long_edge_size(img.size, size)
    return img if img.size == target else img.resize(target, Image.Resampling.LANCZOS)


def read_frames(path: str | os.PathLike[str], size: int | None = None) -> Iterator[Image.Image]:
    """The frames of a video file or frame folder, in order, as RGB images.

    ``size`` is the long edge in pixels to scale every frame to (aspect ratio kept, short
    side rounded half up, Lanczos); None keeps the original size. The path is checked when
    this function is called; frames are decoded one at a time as the iterator is consumed.

    Raises:
        NeuralartError: as :func:`probe` for a path that is not a readable video or frame
            folder; while iterating, a frame that cannot be decoded or whose size differs
            from the first frame's.
    """
    p = Path(path)
    _check_long_edge(size)
    if not p.exists():
        raise NeuralartError(f"video '{p}' not found")
    if p.is_dir():
        files = list_frames(p)
        if not files:
            _probe_folder(p)  # raises the no-frames error
        return _folder_frames(p, files, size)
    with _open_video(p):  # fail now, not at the first next(), on a file that is no video
        pass
    return _video_frames(p, size)


def _folder_frames(folder: Path, files: list[Path], size: int | None) -> Iterator[Image.Image]:
    first_size: tuple[int, int] | None = None
    for file in files:
        img = load_image(file, role="frame")
        if first_size is None:
            first_size = img.size
        elif img.size != first_size:
            raise NeuralartError(_mixed_sizes(folder, file, img.size, files[0], first_size))
        yield _resized(img, size)


def _video_frames(path: Path, size: int | None) -> Iterator[Image.Image]:
    with _open_video(path) as container:
        first_size: tuple[int, int] | None = None
        count = 0
        for count, frame in enumerate(_decoded(container), start=1):
            img = _frame_to_image(frame)
            if first_size is None:
                first_size = img.size
            elif img.size != first_size:
                w, h = img.size
                raise NeuralartError(
                    f"video '{path}' changes size at frame {count}: {w}x{h} instead of "
                    f"{first_size[0]}x{first_size[1]}"
                )
            yield _resized(img, size)
        if count == 0:
            raise NeuralartError(f"video '{path}' has no frames")


def check_video_output(out_path: str | os.PathLike[str]) -> Path:
    """Check, before any work is done, that :func:`write_video` can write ``out_path``.

    The suffix must be one of :data:`VIDEO_SUFFIXES` and the folder must already exist and be
    writable. Returns the path as a :class:`Path`.

    Raises:
        NeuralartError: unsupported suffix, missing or unwritable folder, a folder in the way,
            PyAV/OpenCV not installed, or a PyAV build without the needed encoder.
    """
    p = Path(out_path)
    suffix = p.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        what = f"unsupported extension '{p.suffix}'" if p.suffix else "no file extension"
        choices = ", ".join(VIDEO_SUFFIXES)
        raise NeuralartError(f"video output '{p}' has {what}; use one of {choices}")
    if p.is_dir():
        raise NeuralartError(f"video output '{p}' is an existing folder; give a file name")
    parent = p.parent
    if not parent.exists():
        raise NeuralartError(f"cannot write video output '{p}': folder '{parent}' does not exist")
    if not parent.is_dir():
        raise NeuralartError(f"cannot write video output '{p}': '{parent}' is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise NeuralartError(f"cannot write video output '{p}': folder '{parent}' is not writable")
    av, _ = require_video()
    encoder = _VIDEO_ENCODERS[suffix]
    try:
        av.codec.Codec(encoder, "w")
    except Exception as exc:
        raise NeuralartError(
            f"this PyAV build has no {encoder} encoder, needed for {suffix} output"
        ) from exc
    return p


def _as_fps(fps: Fraction | float) -> Fraction:
    rate = Fraction(fps).limit_denominator(1_001_000)
    if not 0 < rate <= 1000:
        raise NeuralartError(f"frame rate must be above 0 and at most 1000 per second, got {fps}")
    return rate


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_video(
    frames: Iterable[Image.Image | np.ndarray],
    out_path: str | os.PathLike[str],
    fps: Fraction | float,
    audio_from: Path | None = None,
) -> Path:
    """Encode ``frames`` into the video file ``out_path``; return the path.

    The suffix picks the format: H.264 (libx264, constant quality CRF 18, yuv420p, BT.709)
    in .mp4, .mov and .mkv; VP9 (libvpx-vp9, CRF 32, yuv420p, BT.709) in .webm; an animated
    GIF that loops forever in .gif. Frames are RGB images or (H, W, 3) uint8 arrays and must
    all have the size of the first. H.264 in yuv420p needs an even width and height, so for
    those suffixes a frame with an odd width or height loses its last column or bottom row
    (cropped, never padded: no invented pixels). GIF frames are mapped onto a 256-colour
    palette with Floyd-Steinberg dithering; a frame keeps the previous frame's palette while
    that palette still suits it, so colours do not flicker, and gets its own otherwise. A
    GIF stores frame delays in hundredths of a second, so rates like 30 fps come out as an
    alternation of 3/100 s and 4/100 s delays.

    ``audio_from``, a video or audio file (usually the video the frames came from), gives
    the sound: its first audio stream is copied as it is when the container can hold that
    codec, and re-encoded otherwise (AAC for .mp4/.mov/.mkv, Opus for .webm). The sound
    is aligned so that the first frame here plays with the first video frame of
    ``audio_from``, and is cut where the video ends. A file without sound adds none; a GIF
    has no place for sound, which is dropped with a warning.

    The file is written atomically: everything goes to a hidden temporary file next to the
    target (``.STEM.XXXXXXXX.partial.SUFFIX``), which replaces the target only when complete.
    On any error, including an exception raised by the ``frames`` iterable, the temporary
    file is removed and an existing ``out_path`` is left as it was.

    Raises:
        NeuralartError: as :func:`check_video_output`; no frames; frames of different
            sizes; an unreadable ``audio_from``; FFmpeg or the disk failing while writing.
    """
    p = check_video_output(out_path)
    suffix = p.suffix.lower()
    rate = _as_fps(fps)
    if suffix == ".gif" and rate > _GIF_MAX_FPS:
        message = f"GIF '{p}' at {float(rate):g} fps: browsers play GIFs above 50 fps slower"
        warnings.warn(message, NeuralartWarning, stacklevel=2)
    av, _ = require_video()
    with contextlib.ExitStack() as stack:
        audio_in = None
        if audio_from is not None:
            source = Path(audio_from)
            if not source.exists():
                raise NeuralartError(f"audio source '{source}' not found")
            audio_in = stack.enter_context(_open_audio_source(av, source))
            if audio_in is not None and suffix == ".gif":
                message = f"GIF '{p}' cannot hold sound; the audio of '{source}' is dropped"
                warnings.warn(message, NeuralartWarning, stacklevel=2)
                audio_in = None
        pictures = iter(frames)
        first = next(pictures, None)
        if first is None:
            raise NeuralartError(f"no frames to write to '{p}'")
        try:
            fd, tmp_name = tempfile.mkstemp(
                dir=p.parent, prefix=f".{p.stem}.", suffix=f".partial{p.suffix}"
            )
            os.close(fd)
        except OSError as exc:
            raise NeuralartError(f"cannot write video output '{p}': {_one_line(exc)}") from exc
        try:
            _encode(av, first, pictures, tmp_name, suffix, rate, audio_in)
            os.chmod(tmp_name, 0o666 & ~_current_umask())
            os.replace(tmp_name, p)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            if isinstance(exc, (av.FFmpegError, OSError)):
                raise NeuralartError(f"cannot write video output '{p}': {_one_line(exc)}") from exc
            raise
    return p


@contextlib.contextmanager
def _open_audio_source(av: Any, source: Path) -> Iterator[Any]:
    """The opened ``source`` if it has an audio stream, else None."""
    if source.is_dir() or source.stat().st_size == 0:
        raise NeuralartError(f"audio source '{source}' is not a video or audio file")
    try:
        container = av.open(str(source), "r")
    except (av.FFmpegError, OSError) as exc:
        raise NeuralartError(
            f"audio source '{source}' is not a file FFmpeg can read ({_one_line(exc)})"
        ) from exc
    try:
        yield container if container.streams.audio else None
    finally:
        container.close()


def _as_image(picture: Image.Image | np.ndarray, index: int) -> Image.Image:
    if isinstance(picture, Image.Image):
        return picture if picture.mode == "RGB" else picture.convert("RGB")
    array = np.asarray(picture)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(
            f"frame {index}: expected an (H, W, 3) uint8 array, got {array.dtype} {array.shape}"
        )
    return Image.fromarray(array, "RGB")


def _encode(
    av: Any,
    first: Image.Image | np.ndarray,
    rest: Iterator[Image.Image | np.ndarray],
    tmp_name: str,
    suffix: str,
    rate: Fraction,
    audio_in: Any,
) -> None:
    """Encode all frames (and the sound of ``audio_in``, if any) into ``tmp_name``."""
    first_img = _as_image(first, 1)
    size = first_img.size
    width, height = size
    gif = suffix == ".gif"
    if not gif and suffix != ".webm":
        width, height = width - width % 2, height - height % 2
    if width < 2 or height < 2:
        raise NeuralartError(f"frames of {size[0]}x{size[1]} px are too small for a video")
    options = {"movflags": "+faststart"} if suffix in (".mp4", ".mov") else {}
    with av.open(tmp_name, "w", format=_CONTAINER_FORMATS[suffix], options=options) as out:
        stream = out.add_stream(_VIDEO_ENCODERS[suffix], rate=rate)
        stream.width, stream.height = width, height
        palette: Image.Image | None = None
        if gif:
            stream.pix_fmt = "pal8"
        else:
            stream.pix_fmt = "yuv420p"
            ctx = stream.codec_context
            ctx.colorspace, ctx.color_primaries, ctx.color_trc = 1, 1, 1  # BT.709
            ctx.color_range = 1  # limited ("TV") range
            if suffix == ".webm":
                stream.options = {"crf": "32", "b": "0", "row-mt": "1", "deadline": "good"}
                stream.options["cpu-used"] = "4"
            else:
                stream.options = {"crf": "18", "preset": "medium"}
        audio = _AudioCopy(av, audio_in, out, suffix) if audio_in is not None else None
        index = 0
        pictures = _chain_first(first_img, rest)
        for index, picture in enumerate(pictures, start=1):
            img = _as_image(picture, index)
            if img.size != size:
                raise NeuralartError(
                    f"frame {index} is {img.size[0]}x{img.size[1]} but the first frame is "
                    f"{size[0]}x{size[1]}; all frames of a video must have one size"
                )
            if img.size != (width, height):
                img = img.crop((0, 0, width, height))
            if gif:
                palette = _gif_palette(img, palette)
                frame = _pal8_frame(av, img, palette)
            else:
                frame = av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24")
                frame = frame.reformat(
                    format="yuv420p", dst_colorspace="itu709", dst_color_range="MPEG"
                )
            frame.pts = index - 1
            frame.time_base = 1 / rate
            out.mux(stream.encode(frame))
            if audio is not None:
                audio.copy_until(float(index / rate))
        out.mux(stream.encode(None))
        if audio is not None:
            audio.copy_until(float(index / rate))
            audio.flush()


def _chain_first(first: Image.Image, rest: Iterator[Image.Image | np.ndarray]) -> Iterator[Any]:
    yield first
    yield from rest


def _palette_error(img: Image.Image, palette: Image.Image) -> float:
    """Mean squared error of ``img`` mapped onto ``palette`` without dithering."""
    mapped = img.quantize(palette=palette, dither=Image.Dither.NONE).convert("RGB")
    diff = np.asarray(mapped, np.float32) - np.asarray(img, np.float32)
    return float(np.mean(diff**2))


def _gif_palette(img: Image.Image, previous: Image.Image | None) -> Image.Image:
    """The 256-colour palette (a "P" image) for the next GIF frame.

    The previous frame's palette is kept while it still suits the picture (its error is
    within 25 % of that of a palette made for this frame), so that colours stay put from
    frame to frame; a scene with new colours gets a new palette.
    """
    if previous is not None:
        small = img.reduce(4) if min(img.size) >= 64 else img  # fewer pixels are enough
        fresh = small.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        if _palette_error(small, previous) <= 1.25 * _palette_error(small, fresh) + 1.0:
            return previous
    return img.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def _pal8_frame(av: Any, img: Image.Image, palette: Image.Image) -> Any:
    """``img`` mapped onto ``palette`` (a "P" image) with dithering, as a pal8 frame."""
    indices = img.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
    rgb = np.zeros((256, 3), np.uint8)
    colours = np.frombuffer(bytes(palette.getpalette() or []), np.uint8).reshape(-1, 3)[:256]
    rgb[: len(colours)] = colours
    argb = np.concatenate([np.full((256, 1), 255, np.uint8), rgb], axis=1)
    return av.VideoFrame.from_ndarray((np.asarray(indices), argb), format="pal8")


class _AudioCopy:
    """Carries the first audio stream of an input container into an output container.

    Packets are copied when the output container can hold the codec, otherwise decoded and
    re-encoded; a re-encoded stream with more than two channels is mixed down to stereo.
    Time zero of the output is the first video frame of the input (or the audio
    start, for a file without video); :meth:`copy_until` is called after every video frame
    so that sound and pictures end up interleaved in the file.
    """

    def __init__(self, av: Any, source: Any, out: Any, suffix: str) -> None:
        self.av = av
        self.source_stream = source.streams.audio[0]
        codec = self.source_stream.codec_context.codec.canonical_name
        self.copy = codec in _AUDIO_COPYABLE[suffix]
        anchor = source.streams.video[0] if source.streams.video else self.source_stream
        start = anchor.start_time
        self.origin = float(start * anchor.time_base) if start is not None else 0.0
        self.out = out
        if self.copy:
            self.stream = out.add_stream_from_template(self.source_stream)
        else:
            encoder = _AUDIO_FALLBACK[suffix]
            in_ctx = self.source_stream.codec_context
            sample_rate = in_ctx.sample_rate
            allowed = av.codec.Codec(encoder, "w").audio_rates
            if allowed and sample_rate not in allowed:
                sample_rate = 48_000
            self.stream = out.add_stream(encoder, rate=sample_rate)
            self.stream.layout = in_ctx.layout.name if in_ctx.channels <= 2 else "stereo"
            self.stream.bit_rate = _AUDIO_BIT_RATE[encoder]
        self.packets = source.demux(self.source_stream)
        self.pending: Any = None
        # The last packet that ends before time zero goes out with the first one after
        # it: a decoder needs it to decode that one right (AAC's priming frame, which an
        # edit list hides, has a negative time stamp). Re-encoding, it only feeds the
        # decoder; copied, it keeps its negative time stamp, which MP4 and QuickTime
        # hide with an edit list, but Matroska would shift every stream to make it
        # non-negative, moving the pictures against the sound, so there it is left out.
        self.preroll: Any = None
        self.keep_preroll = not self.copy or suffix in _EDIT_LISTS
        self.done = False

    def copy_until(self, end: float) -> None:
        """Write the sound that starts before ``end`` seconds of output."""
        while not self.done:
            packet = self.pending if self.pending is not None else next(self.packets, None)
            self.pending = None
            if packet is None:
                self.done = True
                break
            stamp = packet.pts if packet.pts is not None else packet.dts
            if stamp is None:  # the demuxer's closing packet
                continue
            start = float(stamp * packet.time_base) - self.origin
            if start >= end:
                self.pending = packet
                break
            duration = float(packet.duration * packet.time_base) if packet.duration else 0.0
            if start + duration <= 0:  # before the first video frame: at most the pre-roll
                self.preroll = packet if self.keep_preroll else None
                continue
            if self.preroll is not None:
                self._write(self.preroll)
                self.preroll = None
            self._write(packet)

    def _write(self, packet: Any) -> None:
        if self.copy:
            self._remux(packet)
        else:
            self._reencode(packet)

    def _remux(self, packet: Any) -> None:
        shift = round(self.origin / packet.time_base)
        if packet.pts is not None:
            packet.pts -= shift
        if packet.dts is not None:
            packet.dts -= shift
        packet.stream = self.stream
        self.out.mux(packet)

    def _reencode(self, packet: Any) -> None:
        for frame in packet.decode():
            if frame.pts is None:
                continue
            start = float(frame.pts * frame.time_base) - self.origin
            if start < 0:
                continue
            frame.pts = round(start * frame.sample_rate)
            frame.time_base = Fraction(1, frame.sample_rate)
            self.out.mux(self.stream.encode(frame))

    def flush(self) -> None:
        """Finish: write what the encoder still holds (re-encoding only)."""
        if not self.copy:
            self.out.mux(self.stream.encode(None))
