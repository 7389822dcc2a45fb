"""What the command line prints: one-line errors and warnings, and the progress bar.

Together with the other modules of ``neuralart.cli``, the only code that prints.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

import typer

from neuralart.errors import NeuralartError, NeuralartWarning

if TYPE_CHECKING:
    from neuralart.optimize import StepEvent


def error(message: str) -> None:
    """One line on stderr, red on a terminal."""
    if sys.stderr.isatty():
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    else:
        typer.echo(f"error: {message}", err=True)


def warn(message: str) -> None:
    if sys.stderr.isatty():
        typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)
    else:
        typer.echo(f"warning: {message}", err=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """NeuralartError -> one line and exit 1; Ctrl-C -> exit 130."""
    try:
        yield
    except NeuralartError as exc:
        error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        error("interrupted")
        raise typer.Exit(130) from None
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        text = str(exc)
        if not isinstance(exc, MemoryError) and not any(m in text for m in _OUT_OF_MEMORY):
            raise
        error(
            "out of memory: try a smaller --size, coarse to fine (--levels 2 or 3), "
            "fewer or shallower style layers, or --device cpu"
        )
        raise typer.Exit(1) from None


# How PyTorch's allocators say that memory ran out (CUDA, MPS, CPU).
_OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "MPS backend out of memory")


class Progress:
    """A rich progress bar on a terminal; sparse plain lines otherwise; nothing if quiet.

    ``begin`` starts a new bar (one per run); the instance is the optimiser's callback.
    """

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.bar: Any = None
        self.task: Any = None
        self.label = "optimising"
        self.desc = self.label
        self.last_print = 0.0
        self.tile_started = 0.0  # when the current iteration's first tile began

    def __enter__(self) -> Progress:
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
        self.desc = desc
        if self.bar is not None:
            self.bar.update(
                self.task,
                completed=event.completed,
                total=event.total,
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

    def tile(self, done: int, total: int) -> None:
        """A tile of a tiled iteration is done: shown once an iteration takes a while."""
        if self.quiet:
            return
        now = time.monotonic()
        if done == 1:
            self.tile_started = now
        if now - self.tile_started < TILE_NOTICE_SECONDS:
            return
        if self.bar is not None:
            text = f"{self.desc} tile {done}/{total}" if done < total else self.desc
            self.bar.update(self.task, description=text)
        elif now - self.last_print >= 10.0:
            self.last_print = now
            typer.echo(f"{self.desc}: tile {done}/{total} of this iteration", err=True)


# An iteration's tiles are shown once it has taken this long.
TILE_NOTICE_SECONDS = 2.0


# --------------------------------------------------------------------------- transfer


_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the neuralart package


def _in_package(filename: str) -> bool:
    try:
        return Path(filename).resolve().is_relative_to(_PACKAGE_DIR)
    except (OSError, ValueError):
        return False


_WARNINGS_MODULES = ("warnings", "_py_warnings")


def _emitter(frame: FrameType | None) -> FrameType | None:
    """The frame that called ``warnings.warn``: the first one outside the warnings module
    (whatever ``stacklevel`` says the warning is about)."""
    while frame is not None and frame.f_globals.get("__name__") in _WARNINGS_MODULES:
        frame = frame.f_back
    return frame


@contextmanager
def collected_warnings() -> Iterator[list[str]]:
    """Collect the tool's own warnings while the block runs, into the list it yields
    (each text once, in order).

    The tool's own: every NeuralartWarning, and any warning that neuralart's code itself
    emits. Those of other libraries (torch's deprecation notes, ...) stay hidden, even when
    their ``stacklevel`` points at the line of neuralart that called them.
    """
    caught: list[str] = []

    def collect(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        emitter = _emitter(sys._getframe(1))
        # Without a Python caller (a warning raised from C code), where the warning points.
        source = emitter.f_code.co_filename if emitter is not None else filename
        if (issubclass(category, NeuralartWarning) or _in_package(source)) and str(
            message
        ) not in caught:
            caught.append(str(message))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = collect
        yield caught


@contextmanager
def reported_warnings(quiet: bool) -> Iterator[None]:
    """The tool's own warnings (see :func:`collected_warnings`) of the block, each text
    printed once afterwards, after any progress bar is gone."""
    with collected_warnings() as caught:
        try:
            yield
        finally:
            if not quiet:
                for text in caught:
                    warn(text)
