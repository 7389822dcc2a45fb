"""The CPU block cache: torch's CPU allocator, keeping freed feature maps' pages for reuse.

Why: every iteration allocates and frees the same feature maps, most of them above
glibc's mmap threshold, so glibc maps each afresh and unmaps it on free, and every pass
pays page faults on hundreds of megabytes (BENCHMARKS.md, "CPU page faults"). Keeping
freed memory in glibc's heap removes the faults but fragments the heap across sizes
(peaks 8-100 % higher). ``native/cpu_cache.cpp`` serves requests of 1 MiB or more from
a heap of whole pages of its own, in one reservation of address space: the lowest free
range large enough takes a request (first fit), freed neighbours merge, and free pages
stay written, so a request served from them costs no page fault. The pages resident
(in use and free) stay within (1 + SLACK) times the most in use at once since the last
release: past that, the free pages at the top of the heap go back to the kernel first.
:func:`release` gives every free page back; a run calls it before each level (the sizes
change) and at its end.

An earlier version kept freed blocks for requests of their own size only; it left
chain-blurred at 512 px with about 170,000 page faults per iteration (half the blocks
were unmapped and mapped again to stay in budget), where the heap has none. SLACK was
chosen by measurement (BENCHMARKS.md, "CPU page faults: one heap of pages"): with 0 the
heap still refaults a few per cent of its pages per iteration.

It is a small C++ extension of torch, compiled once per torch version on a machine with
a C++ compiler and ninja: ``python -m neuralart.cpucache build`` (``make install`` does
it). Where it has not been built, or with ``NEURALART_CPU_CACHE=off``, torch's own
allocator serves the CPU as before: the pictures are the same either way, only the
seconds differ. ``python -m neuralart.cpucache status`` says which it is.

The same extension carries the histogram matching of rows that the sorted statistics
run on the CPU (``native/row_match.cpp``, :func:`native`), used whether the cache is on
or off; without it torch's stable sort gives the same numbers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).parent / "native" / "cpu_cache.cpp"
SOURCES = (SOURCE, SOURCE.with_name("row_match.cpp"))
NAME = "neuralart_cpu_cache"
MIN_BLOCK = 1 << 20  # smaller requests go to torch's allocator (glibc's heap serves them)
SLACK = 0.05  # resident pages <= (1 + SLACK) x the most in use at once since the last release

_module: ModuleType | None = None
_state = "not used"


def build_dir() -> Path:
    """Where the extension is built: one folder per torch version, Python and source."""
    import torch

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in SOURCES)).hexdigest()[:12]
    tag = f"torch-{torch.__version__}-{sys.implementation.cache_tag}-{digest}"
    return Path(base) / "neuralart" / "cpu-cache" / tag


def _library() -> Path:
    return build_dir() / f"{NAME}.so"


def build(verbose: bool = False) -> Path:
    """Compile the extension into :func:`build_dir` (about 30 s); its path."""
    from torch.utils.cpp_extension import load

    folder = build_dir()
    folder.mkdir(parents=True, exist_ok=True)
    # torch runs `ninja` from PATH; the ninja wheel puts it beside this interpreter.
    where = [str(Path(sys.executable).parent)]
    try:
        import ninja

        where.append(str(ninja.BIN_DIR))
    except (ImportError, AttributeError):
        pass
    os.environ["PATH"] = os.pathsep.join([*where, os.environ.get("PATH", "")])
    load(
        name=NAME,
        sources=[str(path) for path in SOURCES],
        build_directory=str(folder),
        extra_cflags=["-O3", "-fopenmp"],  # torch's parallel_for runs on OpenMP
        extra_ldflags=["-fopenmp"],
        verbose=verbose,
    )
    return _library()


_loaded: list[ModuleType | None] = []  # the extension once loaded (or None), memoised
_load_error = ""


def _load() -> ModuleType | None:
    """The built extension, loaded once per process; None where it is not built. Raises
    ImportError or OSError where the file does not load (built for another torch)."""
    global _load_error
    if _loaded:
        return _loaded[0]
    if _load_error:
        raise ImportError(_load_error)
    library = _library()
    if not library.is_file():
        return None
    spec = importlib.util.spec_from_file_location(NAME, library)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (ImportError, OSError) as exc:
        _load_error = str(exc) or type(exc).__name__
        raise
    _loaded.append(module)
    return module


def native() -> ModuleType | None:
    """The extension's functions where it is built and loads, the cache on or off (its
    ``match_rows``: see :func:`neuralart.stats.distribution.matched`); else None."""
    try:
        return _load()
    except (ImportError, OSError):
        return None


def switched_off() -> bool:
    return os.environ.get("NEURALART_CPU_CACHE", "").lower() in ("off", "0", "no", "false")


def expected() -> str:
    """What :func:`enable` would give in a new process: ``on`` (built and not switched
    off), ``off`` or ``not built``; loads nothing."""
    if switched_off():
        return "off"
    return "on" if _library().is_file() else "not built"


def enable() -> str:
    """Make the cache torch's CPU allocator where it is built and not switched off; the
    state: ``on``, ``off`` (NEURALART_CPU_CACHE=off), ``not built`` or ``failed: ...``."""
    global _module, _state
    if _module is not None:
        return _state
    if switched_off():
        _state = "off"
        return _state
    try:
        module = _load()
    except (ImportError, OSError) as exc:  # built for another torch, a broken file
        _state = f"failed: {exc}".splitlines()[0]
        return _state
    if module is None:
        _state = "not built"
        return _state
    try:
        module.install(MIN_BLOCK, SLACK)
    except RuntimeError as exc:  # no address space to reserve (a low ulimit -v)
        _state = f"failed: {exc}".splitlines()[0]
        return _state
    _module = module
    _state = "on" if module.installed() else "failed: another CPU allocator has priority"
    return _state


def state() -> str:
    """``on``, ``off``, ``not built``, ``failed: ...``, or ``not used`` (a GPU run)."""
    return _state


def release() -> None:
    """Free every cached block (a no-op without the cache)."""
    if _module is not None:
        _module.release()


STATS = ("cached", "hits", "misses", "in_use", "most_in_use", "released", "heap")


def stats() -> dict[str, int]:
    """``cached``: bytes of free pages kept resident; ``hits`` and ``misses``: requests
    served from resident pages alone and not; ``in_use``; ``most_in_use`` since the last
    release; ``released``: bytes given back to the kernel to keep the budget; ``heap``:
    the heap's extent in bytes (free and in use, resident or not)."""
    values = _module.stats() if _module is not None else [0] * len(STATS)
    return dict(zip(STATS, values, strict=True))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["status"]:
        print(f"the CPU block cache: {enable()}")
        return 0
    if args != ["build"]:
        print("usage: python -m neuralart.cpucache build|status", file=sys.stderr)
        return 2
    try:
        path = build()
    except Exception as exc:  # no compiler, no ninja: the tool runs without the cache
        line = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        print(
            f"neuralart: the CPU block cache was not built ({line}); "
            "neuralart runs without it, at torch's usual speed on the CPU",
            file=sys.stderr,
        )
        return 1
    print(f"built the CPU block cache: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
